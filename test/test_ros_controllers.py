"""Controller adapters: joint targets -> each robot's real command message, and back (what the sim obeys); the
interface packages `make venv` builds (interfaces/) carry the vendors' type hashes."""

import json
from pathlib import Path

import numpy as np
import pytest
from control_msgs.action import GripperCommand
from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from ros_helpers import hide_controller_packages, wait_for
from vla_ros.core.robot import load_robot
from vla_ros.core.safety.controller_trajectory import ControllerTrajectory
from vla_ros.ros import qos
from vla_ros.ros.controllers import ControllerInput, ControllerInterfaceError, make_adapters

ROBOTS = ("franka", "widowx", "ur5", "aloha")

# RIHS01 type hashes of the vendors' own definitions (Interbotix/interbotix_ros_core jazzy branch
# interbotix_xs_msgs/msg/*.msg, ros-controls/control_msgs jazzy branch control_msgs/{msg,action}/GripperCommand.*),
# computed with the Jazzy rosidl generators from those files. A type hash covers package, type and field names and
# types: an equal hash means the driver and this stack match each other on the wire.
VENDOR_TYPE_HASHES = {
    "interbotix_xs_msgs/msg/JointGroupCommand":
        "RIHS01_c43821d89bd439eeca1db1f2b48778277e465bde9daad1b0839077bcfbdb3e3b",
    "interbotix_xs_msgs/msg/JointSingleCommand":
        "RIHS01_ed9575e22584aa1f25c9e13a546641d38066caa37454ced810f165d66d842e4d",
    "control_msgs/msg/GripperCommand": "RIHS01_57eb8f326c9889ca8bb34ead82cc94cc09bf6bc5c3b6c09546dca3a00b589890",
    "control_msgs/action/GripperCommand": "RIHS01_e17c0e644eccf14bea84a0a93e0977182872c2eb7873ca6694900059b46dbc84",
    "control_msgs/action/GripperCommand_Goal":
        "RIHS01_607d9f41eb241e1922e90f02125e87ae6bfb78f7f64a71dc92630263d01f8b6d",
    "control_msgs/action/GripperCommand_Result":
        "RIHS01_bf512d5aa6a0e4fe4d8be22b2ec4a1973c3d250fa1f65e47450322c25c45c0a0",
    "control_msgs/action/GripperCommand_FeedbackMessage":
        "RIHS01_392ff03fcd872f9dc2405cbeb2897fcf011ad9998458b6aa85c603b8a49e431d",
    "control_msgs/action/GripperCommand_SendGoal":
        "RIHS01_6bf8cc4ce80cd499e7dd3258c03c50c3fa6672b469ff8355339ef1df77fcd212",
    "control_msgs/action/GripperCommand_GetResult":
        "RIHS01_7e60a7606063d4a2728d21badac099e68b734a196ac3ab42d1d4c668eb0bb3cd",
}


@pytest.fixture(scope="module")
def robots():
    return {name: load_robot(name) for name in ROBOTS}


def _random_q(robot, seed=0):
    return np.random.default_rng(seed).uniform(robot.limits.lower, robot.limits.upper)


def _trajectory(q: np.ndarray) -> ControllerTrajectory:
    """A safety-filter controller trajectory stamped 12.5 s: the command 40 ms ahead, moving, then at rest at q."""
    n = len(q)
    velocities = np.vstack([np.linspace(0.1, 0.5, n), np.zeros(n)])
    return ControllerTrajectory(12.5, np.array([0.04, 0.06]), np.vstack([q - 0.005, q]), velocities,
                                np.vstack([np.full(n, -2.0), np.zeros(n)]))


@pytest.mark.parametrize("name", ROBOTS)
def test_override_round_trip_in_controller_joint_order(robots, name):
    robot = robots[name]
    q = _random_q(robot)
    trajectory = _trajectory(q)
    for adapter in make_adapters(robot, "float64_multi_array"):
        msg = adapter.message(q, trajectory)
        spec = adapter.spec
        index = robot.indices(spec.joints)
        if spec.interface == "joint_trajectory":
            assert isinstance(msg, JointTrajectory)
            assert msg.joint_names == [j.removeprefix(spec.prefix) for j in spec.joints]
            assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (12, 500_000_000)  # the command's time
            assert [p.time_from_start.nanosec for p in msg.points] == [40_000_000, 60_000_000]
            for point, p, v, a in zip(msg.points, trajectory.positions, trajectory.velocities, trajectory.accelerations):
                assert point.positions.tolist() == pytest.approx(p[index].tolist())
                assert point.velocities.tolist() == pytest.approx(v[index].tolist())
                assert point.accelerations.tolist() == pytest.approx(a[index].tolist())
            assert not any(msg.points[-1].velocities)  # ends at rest, as a JointTrajectoryController requires
            on_receipt = adapter.message(q, trajectory, start_on_receipt=True)
            assert (on_receipt.header.stamp.sec, on_receipt.header.stamp.nanosec) == (0, 0)
            times, positions, velocities, accelerations, start = adapter.trajectory(msg)
            assert times == pytest.approx([0.04, 0.06]) and start == pytest.approx(12.5)
            np.testing.assert_allclose(accelerations, trajectory.accelerations[:, index])
            np.testing.assert_allclose(velocities, trajectory.velocities[:, index])
        else:
            assert isinstance(msg, Float64MultiArray)
            assert len(msg.data) == len(spec.joints)
            if spec.command_range is None:  # arm joints: radians in the controller's order
                assert list(msg.data) == pytest.approx(q[robot.indices(spec.joints)].tolist())
            else:  # gripper: the opening mapped onto the command range
                lo, hi = sorted(spec.command_range)
                assert lo <= msg.data[0] <= hi
        back = adapter.targets(msg)
        assert list(back) == list(spec.joints)
        assert list(back.values()) == pytest.approx(q[robot.indices(spec.joints)].tolist(), abs=1e-9)


def test_overridden_franka_gripper_action_publishes_on_command_subtopic(robots):
    adapters = {a.spec.name: a for a in make_adapters(robots["franka"], "float64_multi_array")}
    assert adapters["arm"].interface == "joint_trajectory"  # the override never touches ros2_control interfaces
    assert adapters["gripper"].interface == "float64_multi_array"
    assert adapters["gripper"].topic == robots["franka"].controllers[1].topic + "/command"


@pytest.mark.parametrize("name, package", [("widowx", "interbotix_xs_msgs"), ("aloha", "interbotix_xs_msgs"),
                                           ("franka", "control_msgs")])
def test_missing_package_is_one_clear_line(robots, monkeypatch, name, package):
    hide_controller_packages(monkeypatch)
    with pytest.raises(ControllerInterfaceError) as info:
        make_adapters(robots[name])
    message = str(info.value)
    spec = next(c for c in robots[name].controllers if c.interface not in ("joint_trajectory", "float64_multi_array"))
    assert "\n" not in message
    assert spec.name in message and spec.topic in message and package in message
    assert "--controller-interface float64_multi_array" in message and "make venv" in message


def test_unknown_override_is_refused(robots):
    with pytest.raises(ControllerInterfaceError, match="controller_interface_override"):
        make_adapters(robots["ur5"], "joint_group_velocity")


@pytest.mark.parametrize("name", ["widowx", "aloha"])
def test_interbotix_field_mapping_with_real_messages(robots, name):
    robot = robots[name]
    q = _random_q(robot, 1)
    for adapter in make_adapters(robot):
        spec = adapter.spec
        msg = adapter.message(q)
        assert msg.name == spec.command_name
        if spec.interface == "interbotix_joint_group":
            assert isinstance(msg, JointGroupCommand)
            assert list(msg.cmd) == pytest.approx(q[robot.indices(spec.joints)].tolist(), abs=1e-6)  # float32
        else:
            assert isinstance(msg, JointSingleCommand)
            gripper = next(a.gripper for a in robot.arms if a.gripper and a.gripper.joint == spec.joints[0])
            opened, closed = spec.command_range
            expected = closed + gripper.opening(q[gripper.index]) * (opened - closed)
            assert msg.cmd == pytest.approx(expected, rel=1e-6)
        assert list(adapter.targets(msg).values()) == pytest.approx(q[robot.indices(spec.joints)].tolist(), abs=1e-6)
        # a command for another group / single joint name is not this controller's
        msg.name = "not_" + spec.command_name
        assert adapter.targets(msg) == {}


def test_franka_gripper_goal_is_the_finger_joint_value(robots):
    robot = robots["franka"]
    adapter = next(a for a in make_adapters(robot) if a.spec.name == "gripper")
    assert adapter.is_action and adapter.msg_type is GripperCommand and adapter.topic == adapter.spec.topic
    q = robot.home.copy()
    q[robot.indices(adapter.spec.joints)] = 0.013
    goal = adapter.message(q)
    assert isinstance(goal, GripperCommand.Goal)
    assert goal.command.position == pytest.approx(0.013)  # half the width: franka_gripper's convention
    assert adapter.targets(goal) == {"panda_finger_joint1": pytest.approx(0.013)}


def test_gripper_open_and_closed_map_to_command_range_ends(robots):
    robot = robots["widowx"]
    arm = robot.arms[0]
    adapter = next(a for a in make_adapters(robot) if a.spec.name == "gripper")
    q = robot.home.copy()
    q[arm.gripper.index] = arm.gripper.open
    assert adapter.message(q).cmd == pytest.approx(adapter.spec.command_range[0])
    q[arm.gripper.index] = arm.gripper.closed
    assert adapter.message(q).cmd == pytest.approx(adapter.spec.command_range[1])


def _installed_type_hashes() -> dict[str, str]:
    """type name -> hash, from the type descriptions installed beside the built packages (<prefix>/share/<pkg>)."""
    import control_msgs
    import interbotix_xs_msgs

    hashes = {}
    for package in (interbotix_xs_msgs, control_msgs):
        share = Path(package.__file__).parents[4] / "share" / package.__name__
        for path in sorted(share.glob("*/*.json")):
            hashes.update({h["type_name"]: h["hash_string"] for h in json.loads(path.read_text())["type_hashes"]})
    return hashes


def test_built_interfaces_have_the_vendor_type_hashes():
    installed = _installed_type_hashes()
    assert {name: installed.get(name) for name in VENDOR_TYPE_HASHES} == VENDOR_TYPE_HASHES


def test_type_hashes_on_the_wire_match_the_vendor_packages(ros_context):
    """What discovery advertises to a real driver: topic types and their hashes (the gripper action's feedback)."""
    from rclpy.node import Node

    node = Node("type_hash_probe", context=ros_context)
    try:
        node.create_publisher(JointGroupCommand, "/probe/joint_group", qos.COMMAND)
        node.create_publisher(JointSingleCommand, "/probe/joint_single", qos.COMMAND)
        franka_gripper = next(a for a in make_adapters(load_robot("franka")) if a.is_action)
        ControllerInput(node, franka_gripper, qos.COMMAND, np.zeros(1))
        topics = {"/probe/joint_group": "interbotix_xs_msgs/msg/JointGroupCommand",
                  "/probe/joint_single": "interbotix_xs_msgs/msg/JointSingleCommand",
                  franka_gripper.topic + "/_action/feedback": "control_msgs/action/GripperCommand_FeedbackMessage"}
        for topic, type_name in topics.items():
            assert wait_for(lambda: node.get_publishers_info_by_topic(topic), 2.0), topic
            info = node.get_publishers_info_by_topic(topic)[0]
            assert (info.topic_type, str(info.topic_type_hash)) == (type_name, VENDOR_TYPE_HASHES[type_name])
    finally:
        node.destroy_node()
