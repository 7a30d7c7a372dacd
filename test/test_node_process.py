"""NodeProcess: a node as its own process (the demo's sim and recorder) starts on this process's ROS domain, stops
cleanly on SIGINT, and a child that fails is reported in one line naming it."""

import os

import numpy as np
import pytest
import yaml

from vla_ros.core.demo_recording import Recording
from vla_ros.core.errors import VlaRosError
from vla_ros.ros.node_process import NodeProcess


def test_child_joins_the_domain_and_stops_cleanly_on_sigint(ros_context, ros_domain_id, monkeypatch, tmp_path):
    from rclpy.node import Node

    monkeypatch.setenv("ROS_DOMAIN_ID", str(ros_domain_id))  # the child inherits this process's environment
    observer = Node("node_process_observer", context=ros_context)
    path = tmp_path / "recording.npz"
    try:
        nicer = min(19, os.getpriority(os.PRIO_PROCESS, 0) + 3)
        with NodeProcess("vla_ros.ros.recorder", {"robot": "widowx", "recording": str(path)}, niceness=nicer,
                         node_name="demo_recorder") as child:
            child.wait_until(lambda: "demo_recorder" in observer.get_node_names(), 60.0, "node on the graph")
            assert os.getpriority(os.PRIO_PROCESS, child.process.pid) == nicer
            with pytest.raises(VlaRosError, match=r"^demo_recorder \(pid \d+\): no answer within 0.2 s$"):
                child.wait_until(lambda: False, 0.2, "answer")
            assert child.stop() == 0  # SIGINT: rclpy's clean shutdown, and the recorder writes its file
            assert child.stop() == 0  # stopping again is harmless
    finally:
        observer.destroy_node()
    recording = Recording.load(path)
    assert recording.command_q.shape == (0, 7) and recording.arm_command_times.shape == (0,)


def test_a_child_that_exits_is_reported_in_one_line(tmp_path):
    with NodeProcess("vla_ros.ros.recorder", {"robot": str(tmp_path / "missing.yaml")},
                     node_name="demo_recorder") as child:
        with pytest.raises(VlaRosError, match=r"^demo_recorder \(pid \d+\) exited with code 2; its log is above$"):
            child.wait_until(lambda: False, 60.0, "answer")


def test_parameters_win_over_the_nodes_own_section_of_the_params_file(ros_context, ros_domain_id, monkeypatch):
    # config/nodes.yaml gives sim_node its own target_xyz ([0.0]: sampled from the seed); a `-p` override would lose
    # to that section, so the demo's sim ignored the target (and --seed) it was given
    from rclpy.node import Node
    from rclpy.parameter_client import AsyncParameterClient
    from rclpy.executors import SingleThreadedExecutor

    from vla_ros.ros import params

    monkeypatch.setenv("ROS_DOMAIN_ID", str(ros_domain_id))
    observer = Node("node_process_observer", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(observer)
    child = NodeProcess("vla_ros.ros.sim_node", {"robot": "ur5", "target_xyz": [0.4, -0.1, 0.2],
                                                 "controller_interface_override": "float64_multi_array"},
                        params.nodes_params_file())
    try:
        with child:
            assert yaml.safe_load(child.overrides.read_text())["sim_node"]["ros__parameters"]["target_xyz"] == [
                0.4, -0.1, 0.2]
            client = AsyncParameterClient(observer, "sim_node")
            child.wait_until(lambda: client.services_are_ready(), 60.0, "parameter services")
            future = client.get_parameters(["target_xyz", "robot"])
            executor.spin_until_future_complete(future, timeout_sec=10.0)
            values = [v.double_array_value.tolist() or v.string_value for v in future.result().values]
            assert values == [[0.4, -0.1, 0.2], "ur5"]
            assert child.stop() == 0
    finally:
        executor.shutdown()
        observer.destroy_node()
    assert not child.overrides.exists()


def test_recording_round_trip(tmp_path):
    from vla_ros.core.demo_recording import Snapshot

    pixels = np.random.default_rng(0).integers(0, 255, (4, 6, 3), dtype=np.uint8)
    original = Recording(np.array([1.0, 2.0]), np.array([[0.1, np.nan], [0.2, np.nan]]), np.array([1.5]),
                         np.array([[0.3, 0.4]]), np.array([1.0, 2.0]),
                         [Snapshot(1.25, pixels, {"left": np.ones((3, 3)), "right_arm": np.zeros((2, 3))}),
                          Snapshot(2.5, pixels, {})])
    original.save(tmp_path / "r.npz")
    loaded = Recording.load(tmp_path / "r.npz")
    np.testing.assert_array_equal(loaded.command_q, original.command_q)
    np.testing.assert_array_equal(loaded.measured_q, original.measured_q)
    np.testing.assert_array_equal(loaded.arm_command_times, [1.0, 2.0])
    assert [s.stamp for s in loaded.snapshots] == [1.25, 2.5]
    np.testing.assert_array_equal(loaded.snapshots[0].pixels, pixels)
    assert set(loaded.snapshots[0].paths) == {"left", "right_arm"} and loaded.snapshots[1].paths == {}
    assert not list(tmp_path.glob("*.partial"))



def test_sigterm_is_a_clean_stop_too(ros_context, ros_domain_id, monkeypatch, tmp_path):
    # what the kernel sends when the parent dies (PR_SET_PDEATHSIG) and launch's escalation: the node is destroyed
    # (its file written) and the context shut down after the executor has stopped, exit code 0
    import signal

    from rclpy.node import Node

    monkeypatch.setenv("ROS_DOMAIN_ID", str(ros_domain_id))
    observer = Node("node_process_observer", context=ros_context)
    path = tmp_path / "recording.npz"
    try:
        with NodeProcess("vla_ros.ros.recorder", {"robot": "ur5", "recording": str(path)},
                         node_name="demo_recorder") as child:
            child.wait_until(lambda: "demo_recorder" in observer.get_node_names(), 60.0, "node on the graph")
            child.process.send_signal(signal.SIGTERM)
            assert child.process.wait(10.0) == 0
    finally:
        observer.destroy_node()
    assert Recording.load(path).command_q.shape == (0, 6)
