"""Controller adapters: joint targets -> each robot's real command message, and back (what the sim obeys)."""

from dataclasses import dataclass, field

import numpy as np
import pytest
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from vla_ros.core.robot import load_robot
from vla_ros.core.safety.controller_trajectory import ControllerTrajectory
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
                assert len(point.accelerations) == 0  # cubic interpolation is exact between the filter's points
            assert not any(msg.points[-1].velocities)  # ends at rest, as a JointTrajectoryController requires
            on_receipt = adapter.message(q, trajectory, start_on_receipt=True)
            assert (on_receipt.header.stamp.sec, on_receipt.header.stamp.nanosec) == (0, 0)
            times, positions, velocities, accelerations, start = adapter.trajectory(msg)
            assert times == pytest.approx([0.04, 0.06]) and start == pytest.approx(12.5) and accelerations is None
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
        msg = adapter.message(q)
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
    assert adapter.message(q).cmd == pytest.approx(adapter.spec.command_range[0])
    q[arm.gripper.index] = arm.gripper.closed
    assert adapter.message(q).cmd == pytest.approx(adapter.spec.command_range[1])
