"""Entry point of a node run as its own process (the console scripts and the launch file):
`<node> --ros-args --params-file config/nodes.yaml -p robot:=ur5 ...`. Kept apart from bringup.py (which builds the
whole graph from the nodes) so that the node modules do not import the module that imports them.
"""

from __future__ import annotations

import signal
import sys
import threading

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from vla_ros.core.errors import VlaRosError
from vla_ros.ros import params
from vla_ros.ros.base import freeze_startup_objects, thaw_startup_objects

STOP_POLL = 0.1  # s: the longest a signal waits for the spin loop to see it


def run_single_node(node_class, argv: list[str]) -> int:
    """Run one node class in this process until SIGINT / SIGTERM; exit code 2 (one line on stderr) for a user error.

    A signal only sets a flag, which the spin loop reads between two waits (at most STOP_POLL s later); the executor
    then stops, the node is destroyed (writing its files) and the context shut down, in that order. With rclpy's own
    handler the signal raised KeyboardInterrupt wherever the interpreter was, including inside pybind's argument
    conversion of `take_message`, which reports it as "Unable to convert call argument '0' to Python object": the
    node died on a normal stop (the demo's recorder in CI; 1 of 25 stops of a flooded recorder under load, 5 of 50
    with a handler that raised KeyboardInterrupt itself; a SIGSEGV once in 7 local test_demo runs).
    ros/joint_state_publisher issue 117 reports the same error on shutdown under load."""
    params.use_fastdds_profile()
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        node = node_class()
    except VlaRosError as exc:
        print(f"{node_class.__name__}: error: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()  # see bringup.spin_each for why not MultiThreadedExecutor
    executor.add_node(node)
    freeze_startup_objects()
    try:
        while not stop.is_set():
            executor.spin_once(timeout_sec=STOP_POLL)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        thaw_startup_objects()
    return 0
