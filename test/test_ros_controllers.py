"""Controller adapters: joint targets -> each robot's real command message, and back (what the sim obeys)."""

from dataclasses import dataclass, field

import numpy as np
import pytest
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from vla_ros.core.robot import load_robot
from vla_ros.ros.controllers import ControllerInterfaceError, make_adapters

ROBOTS = ("franka", "widowx", "ur5", "aloha")


@dataclass
class StandInGroup:  # duck-typed interbotix_xs_msgs/JointGroupCommand {string name; float32[] cmd}
    name: str = ""
    cmd: list = field(default_factory=list)


@dataclass
class StandInSingle:  # duck-typed interbotix_xs_msgs/JointSingleCommand {string name; float32 cmd}
    name: str = ""
    cmd: float = 0.0


STAND_INS = {"interbotix_joint_group": StandInGroup, "interbotix_joint_single": StandInSingle}


@pytest.fixture(scope="module")
def robots():
    return {name: load_robot(name) for name in ROBOTS}


def _random_q(robot, seed=0):
    return np.random.default_rng(seed).uniform(robot.limits.lower, robot.limits.upper)


@pytest.mark.parametrize("name", ROBOTS)
def test_override_round_trip_in_controller_joint_order(robots, name):
    robot = robots[name]
    q = _random_q(robot)
    for adapter in make_adapters(robot, "float64_multi_array"):
        msg = adapter.message(q, 0.02)
        spec = adapter.spec
        if spec.interface == "joint_trajectory":
            assert isinstance(msg, JointTrajectory)
            assert msg.joint_names == [j.removeprefix(spec.prefix) for j in spec.joints]
            assert msg.points[0].positions.tolist() == pytest.approx(q[robot.indices(spec.joints)].tolist())
            assert msg.points[0].time_from_start.nanosec == 20_000_000
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
def test_missing_package_is_one_clear_line(robots, name, package):
    with pytest.raises(ControllerInterfaceError) as info:
        make_adapters(robots[name])
    message = str(info.value)
    spec = next(c for c in robots[name].controllers if c.interface not in ("joint_trajectory", "float64_multi_array"))
    assert "\n" not in message
    assert spec.name in message and spec.topic in message and package in message
    assert "--controller-interface float64_multi_array" in message


def test_unknown_override_is_refused(robots):
    with pytest.raises(ControllerInterfaceError, match="controller_interface_override"):
        make_adapters(robots["ur5"], "joint_group_velocity")


@pytest.mark.parametrize("name", ["widowx", "aloha"])
def test_interbotix_field_mapping_with_stand_in_messages(robots, name):
    robot = robots[name]
    q = _random_q(robot, 1)
    for adapter in make_adapters(robot, msg_types=STAND_INS):
        spec = adapter.spec
        msg = adapter.message(q, 0.02)
        assert msg.name == spec.command_name
        if spec.interface == "interbotix_joint_group":
            assert isinstance(msg, StandInGroup)
            assert msg.cmd == pytest.approx(q[robot.indices(spec.joints)].tolist())
        else:
            assert isinstance(msg, StandInSingle)
            gripper = next(a.gripper for a in robot.arms if a.gripper and a.gripper.joint == spec.joints[0])
            opened, closed = spec.command_range
            expected = closed + gripper.opening(q[gripper.index]) * (opened - closed)
            assert msg.cmd == pytest.approx(expected)
        assert list(adapter.targets(msg).values()) == pytest.approx(q[robot.indices(spec.joints)].tolist(), abs=1e-9)
        # a command for another group / single joint name is not this controller's
        msg.name = "not_" + spec.command_name
        assert adapter.targets(msg) == {}


def test_gripper_open_and_closed_map_to_command_range_ends(robots):
    robot = robots["widowx"]
    arm = robot.arms[0]
    adapter = next(a for a in make_adapters(robot, msg_types=STAND_INS) if a.spec.name == "gripper")
    q = robot.home.copy()
    q[arm.gripper.index] = arm.gripper.open
    assert adapter.message(q, 0.02).cmd == pytest.approx(adapter.spec.command_range[0])
    q[arm.gripper.index] = arm.gripper.closed
    assert adapter.message(q, 0.02).cmd == pytest.approx(adapter.spec.command_range[1])
