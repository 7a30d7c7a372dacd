"""safety_node's own counts and start-up log: hold ticks count only late targets (the timer firing once targets had
been arriving); before the first target its timer ticks are idle ticks; "not anchored" before the drivers' first
joint state is info during startup_grace and an error after it."""

import time

import numpy as np
import pytest
from sensor_msgs.msg import JointState

from vla_ros.ros import params
from vla_ros.ros.messages import fill_joint_state
from vla_ros.ros.safety_node import SafetyNode


def _node(robot, context, grace: float, safety_config: str = "") -> tuple[SafetyNode, list]:
    node = SafetyNode(robot=robot, context=context, parameter_overrides=params.as_overrides(
        {"robot": robot.name, "controller_interface_override": "float64_multi_array", "startup_grace": grace,
         "safety_config": safety_config}))
    lines = []
    node._log = lambda level, key, message: lines.append((level, key))
    return node, lines


def test_idle_then_hold_ticks_and_not_anchored_is_info_at_start(franka, ros_context, tmp_path):
    # watchdogs long enough that a loaded machine's stall between the calls below is not a graded stop (an error)
    config = tmp_path / "safety.yaml"
    config.write_text("watchdog: {joint_state_hold_after: 2.0, joint_state_stop_after: 5.0, command_stop_after: 5.0}\n")
    node, lines = _node(franka, ros_context, grace=60.0, safety_config=str(config))
    try:
        node._watchdog()  # no joint state, no target yet
        assert node.counts["idle_ticks"] == 1 and node.counts["hold_ticks"] == 0
        assert lines == [("info", "not_ready")]
        names = list(franka.joint_names)
        node._on_joint_state(names, np.array(franka.home), None, node.get_clock().now().nanoseconds * 1e-9,
                             "/joint_states")
        target = fill_joint_state(JointState(), names, franka.home, node.get_clock().now().nanoseconds * 1e-9)
        node._on_target(target)
        assert node.counts["targets"] == 1 and node.counts["commands"] == 1
        time.sleep(1.2 * node.filter.controller_delay)  # the next target is late
        node._on_joint_state(names, np.array(franka.home), None, node.get_clock().now().nanoseconds * 1e-9,
                             "/joint_states")
        before = node.get_clock().now().nanoseconds * 1e-9
        node._watchdog()
        assert node.counts["hold_ticks"] == 1 and node.counts["idle_ticks"] == 1
        assert len(node.hold_times) == 1 and before <= node.hold_times[0] <= before + 0.5  # when, for the report
        assert not [line for line in lines if line[0] == "error"]
    finally:
        node.destroy_node()


def test_not_anchored_after_the_grace_is_an_error(franka, ros_context):
    node, lines = _node(franka, ros_context, grace=0.0)
    try:
        node._watchdog()
        assert lines == [("error", "not_ready")] and node.counts["idle_ticks"] == 1
    finally:
        node.destroy_node()


class _Logger:
    def __init__(self):
        self.warnings = []

    def warning(self, message):
        self.warnings.append(message)


def test_a_joint_state_rate_too_slow_for_the_watchdog_is_reported_once(franka, ros_context):
    node, _ = _node(franka, ros_context, grace=60.0)
    logger = _Logger()
    node.get_logger = lambda: logger
    try:
        names = list(franka.joint_names)
        for k in range(80):  # franka_ros2's default joint_state_rate: 30 Hz
            node._on_joint_state(names, np.array(franka.home), None, 100.0 + k / 30.0, "/joint_states")
        assert len(logger.warnings) == 1
        assert logger.warnings[0].startswith("/joint_states: joint states arrive every 33 ms (30 Hz)")
        assert node.state_rate.periods == {"/joint_states": pytest.approx(1 / 30)}
    finally:
        node.destroy_node()
