"""Faults the graph must survive on real rclpy (franka): a policy that raises, returns NaN or hangs; images with an
unsupported encoding or the wrong size; a joint_states message missing a joint; a controller package that is not
installed. Each: hold, a clear (rate-limited) error, diagnostics, node alive and recovering."""

import subprocess
import sys
import time

import numpy as np
import pytest

from ros_helpers import CONTROLLER_MODULES, ROOT, RobotIO, ScriptedPolicy, hide_controller_packages, wait_for
from vla_ros.core.robot import load_robot
from vla_ros.ros.bringup import start_graph
from vla_ros.ros.controllers import ControllerInterfaceError


def _moving(io, since, tol=1e-7):
    values = io.positions("arm", since)
    return len(values) > 1 and float(np.abs(np.diff(values, axis=0)).max()) > tol


def _max_step(io, since):
    values = io.positions("arm", since)
    return float(np.abs(np.diff(values, axis=0)).max()) if len(values) > 1 else 0.0


@pytest.fixture
def franka_graph(ros_context):
    robot = load_robot("franka")
    policy = ScriptedPolicy(robot)
    io = RobotIO(ros_context, robot, "float64_multi_array")
    graph = start_graph("franka", "scripted", controller_interface="float64_multi_array", context=ros_context,
                        policy_object=policy, overrides={"inference_timeout": 0.5})
    assert wait_for(lambda: len(io.commands["arm"]) >= 20 and _moving(io, time.monotonic() - 0.3), 20.0)
    yield graph, io, policy
    policy.release()
    io.close()
    graph.shutdown()


def _recovers(graph, io, policy):
    policy.mode = "ok"
    since = time.monotonic()
    assert wait_for(lambda: graph.policy.last_hold == "" and _moving(io, since), 5.0), graph.policy.last_hold


def test_policy_raise_nan_hang_hold_and_report(franka_graph):
    graph, io, policy = franka_graph
    stats = graph.policy.chunks.stats

    policy.mode = "raise"
    assert wait_for(lambda: stats().inference_errors >= 2 and graph.policy.last_hold == "underflow", 5.0)
    diag = lambda: io.diagnostics.get("vla_ros/policy_node", {})  # noqa: E731
    # ERROR while holding on a failing policy, the error text and the holding state on /diagnostics
    assert wait_for(lambda: diag().get("_level") == 2 and "scripted failure" in diag().get("last_error", ""), 3.0)
    assert diag()["state"] == "underflow" and int(diag()["inference_errors"]) >= 2
    time.sleep(0.3)  # the arm settles on the last target (IK and safety converge, no new motion)
    since = time.monotonic()
    time.sleep(0.3)
    assert _max_step(io, since) < 1e-5, "holding: the commands must not move"
    _recovers(graph, io, policy)

    policy.mode = "nan"
    assert wait_for(lambda: stats().rejected_chunks.get("non_finite", 0) >= 2 and graph.policy.last_hold == "underflow", 5.0)
    _recovers(graph, io, policy)

    policy.mode = "hang"
    assert wait_for(lambda: graph.policy.worker.stats()["timeouts"] >= 1 and graph.policy.last_hold == "underflow", 5.0)
    policy.release()
    _recovers(graph, io, policy)
    assert graph.policy.chunks.stats().ticks > 0 and graph.safety.counts["commands"] > 0


def test_bad_images_one_rate_limited_error_no_crash(franka_graph, capfd):
    graph, io, policy = franka_graph
    capfd.readouterr()
    io.image_encoding = "yuv422"
    assert wait_for(lambda: graph.policy.image_errors >= 10, 5.0)
    assert "unsupported encoding 'yuv422'" in graph.policy.last_image_error
    assert "/camera/camera/color/image_raw" in graph.policy.last_image_error
    assert wait_for(lambda: graph.policy.last_hold == "underflow", 5.0), "no fresh frame: the executor runs dry"
    io.image_encoding = "rgb8"
    good = io.image
    io.image = np.zeros((240, 320, 3), np.uint8)
    assert wait_for(lambda: "image is 320x240" in graph.policy.last_image_error, 5.0)
    logged = capfd.readouterr().err
    # 15 Hz of bad frames for seconds, but each distinct error logged at most once per 5 s
    assert logged.count("unsupported encoding") == 1, logged
    assert logged.count("image is 320x240") <= 1
    io.image = good
    _recovers(graph, io, policy)


def test_joint_state_missing_a_joint_holds_with_clear_error(franka_graph, capfd):
    graph, io, policy = franka_graph
    capfd.readouterr()
    io.drop_joint = "panda_joint3"
    assert wait_for(lambda: graph.policy.last_hold == "joint_states_stale", 3.0)
    since = time.monotonic()
    time.sleep(0.5)
    assert not _moving(io, since + 0.2), "hold while a joint is missing"
    assert graph.safety.state in ("stopping", "stopped")
    logged = capfd.readouterr().err
    assert "/joint_states: joint 'panda_joint3' missing from the message" in logged
    assert logged.count("'panda_joint3' missing") <= 3  # one per node, rate-limited
    io.drop_joint = None
    _recovers(graph, io, policy)


def test_interbotix_without_package_is_a_clear_error(ros_context, monkeypatch):
    hide_controller_packages(monkeypatch)
    with pytest.raises(ControllerInterfaceError, match=r"interbotix_xs_msgs.*--controller-interface float64_multi_array"):
        start_graph("widowx", "baseline", context=ros_context)


def test_node_process_exits_2_with_one_line(ros_domain_id):
    """safety_node as its own process on an install without interbotix_xs_msgs."""
    run_without_packages = (f"import sys; sys.modules.update(dict.fromkeys({CONTROLLER_MODULES!r})); "
                            f"from vla_ros.ros.safety_node import main; sys.exit(main())")
    env_cmd = [sys.executable, "-c", run_without_packages, "--ros-args", "-p", "robot:=aloha"]
    import os

    env = dict(os.environ, ROS_DOMAIN_ID=str(ros_domain_id))
    result = subprocess.run(env_cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "left_arm" in lines[0] and "interbotix_xs_msgs" in lines[0], result.stderr
