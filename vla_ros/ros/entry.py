"""Entry point of a node run as its own process (the console scripts and the launch file):
`<node> --ros-args --params-file config/nodes.yaml -p robot:=ur5 ...`. Kept apart from bringup.py (which builds the
whole graph from the nodes) so that the node modules do not import the module that imports them.
"""

from __future__ import annotations

import sys
import time

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

from vla_ros.core.errors import VlaRosError
from vla_ros.ros import params
from vla_ros.ros.base import freeze_startup_objects, thaw_startup_objects


def run_single_node(node_class, argv: list[str]) -> int:
    """Run one node class in this process until Ctrl-C; exit code 2 (one line on stderr) for a user error."""
    params.use_fastdds_profile()
    rclpy.init(args=argv)
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
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if not _shutting_down():
            raise
        # SIGINT / SIGTERM shut the context down under a running callback (its publish failed) or while the executor
        # took a message (rclpy raised "Unable to convert call argument", as under load in ros/joint_state_publisher
        # issue 117): a normal stop
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        thaw_startup_objects()
    return 0


def _shutting_down(timeout: float = 1.0) -> bool:
    """Whether the context is shut down or about to be: the signal handler's shutdown can still be under way when
    the executor fails on a handle it finalises, so wait a little before calling the failure a real error."""
    deadline = time.monotonic() + timeout
    while rclpy.ok():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
