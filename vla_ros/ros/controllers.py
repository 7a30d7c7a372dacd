"""Controller adapters: a joint-position target (q, model joint order) -> the robot driver's own command message.

One adapter per `controllers:` entry of the robot config. The same adapter also reads those messages back
(`targets`) so the sim node obeys exactly the topics and types the real driver would.

Interfaces:
  joint_trajectory        trajectory_msgs/JointTrajectory (ros2_control JTC, UR scaled JTC, franka arm controller): the
                          safety filter's own trajectory, run `controller_delay` late: its last commands, the new one
                          and the stop after it, as points with positions, velocities and accelerations
                          (core.safety.controller_trajectory); header.stamp = the command's stamp (or zero = "start
                          on receipt" with `start_on_receipt`, for a controller whose clock is not the graph's).
  float64_multi_array     std_msgs/Float64MultiArray, positions in the controller's joint order
                          (forward_position_controller).
  interbotix_joint_group  interbotix_xs_msgs/JointGroupCommand {name = command_name, cmd = positions}.
  interbotix_joint_single interbotix_xs_msgs/JointSingleCommand {name = command_name, cmd}; for a gripper with
                          `command_range`, cmd is the opening mapped onto [closed, open] command units.
  gripper_command_action  control_msgs/action/GripperCommand goal {position = joint value, max_effort}.

interbotix_xs_msgs and control_msgs are not on PyPI: `make venv` builds the parts used here into .venv from
interfaces/ (same field names and types as the vendors' packages, so the same type hashes on the wire), a ROS install
has the vendors' own. They are imported lazily, and a missing package is a one-line ControllerInterfaceError.
`override="float64_multi_array"` (CLI --controller-interface) replaces those three package-bound interfaces -- never
joint_trajectory / float64_multi_array -- with std_msgs/Float64MultiArray on the configured topic (a gripper action:
on `<action name>/command`), values in command units, for drivers or installs without those packages.
"""

from __future__ import annotations

import importlib
from array import array

import numpy as np

from vla_ros.core.errors import VlaRosError
from vla_ros.core.robot import ControllerSpec, RobotModel
from vla_ros.core.safety.controller_trajectory import ControllerTrajectory
from vla_ros.core.sim.trajectory_controller import TrajectoryController

PACKAGE_BOUND = {
    # interface -> (module, class name, package to install)
    "interbotix_joint_group": ("interbotix_xs_msgs.msg", "JointGroupCommand", "interbotix_xs_msgs"),
    "interbotix_joint_single": ("interbotix_xs_msgs.msg", "JointSingleCommand", "interbotix_xs_msgs"),
    "gripper_command_action": ("control_msgs.action", "GripperCommand", "control_msgs"),
}
OVERRIDES = ("float64_multi_array",)


class ControllerInterfaceError(VlaRosError):
    """A controller interface whose message package is missing, or an invalid override."""


def _load_type(spec: ControllerSpec, interface: str):
    module_name, class_name, package = PACKAGE_BOUND[interface]
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except ImportError:
        raise ControllerInterfaceError(
            f"controller {spec.name!r} ({interface} on {spec.topic}) needs the ROS package {package}, which is not "
            f"importable; `make venv` builds it into .venv, a ROS install provides it, or run with "
            f"--controller-interface float64_multi_array (parameter controller_interface_override)"
        ) from None


class ControllerAdapter:
    """Builds (and parses) the command message of one controller from a full q vector."""

    def __init__(self, robot: RobotModel, spec: ControllerSpec, override: str = ""):
        if override and override not in OVERRIDES:
            raise ControllerInterfaceError(
                f"controller_interface_override: expected one of {', '.join(OVERRIDES)} or empty, got {override!r}"
            )
        self.spec = spec
        self.interface = override if (override and spec.interface in PACKAGE_BOUND) else spec.interface
        self.is_action = self.interface == "gripper_command_action"
        overridden_action = spec.interface == "gripper_command_action" and self.interface != spec.interface
        self.topic = spec.topic.rstrip("/") + "/command" if overridden_action else spec.topic
        self.index = robot.indices(spec.joints)
        self.names = [j[len(spec.prefix):] if spec.prefix and j.startswith(spec.prefix) else j for j in spec.joints]
        if self.interface == "joint_trajectory":
            from trajectory_msgs.msg import JointTrajectory

            self.msg_type = JointTrajectory
        elif self.interface == "float64_multi_array":
            from std_msgs.msg import Float64MultiArray

            self.msg_type = Float64MultiArray
        else:
            self.msg_type = _load_type(spec, self.interface)
        if self.interface == "interbotix_joint_single" and len(spec.joints) != 1:
            raise ControllerInterfaceError(f"controller {spec.name!r}: interbotix_joint_single needs exactly one joint")

    # --- q -> command units ------------------------------------------------------------------------------------
    def values(self, q: np.ndarray) -> np.ndarray:
        """The controller's command values for joint targets q (model order), in command units."""
        values = np.asarray(q, dtype=float)[self.index]
        if self.spec.command_range is not None:
            values = np.array([self.spec.command_value(values[0])])
        return values

    def joint_values(self, command: np.ndarray) -> np.ndarray:
        """Inverse of `values`: command units -> joint values, in self.spec.joints order."""
        command = np.asarray(command, dtype=float)
        if self.spec.command_range is not None:
            return np.array([self.spec.joint_value(command[0])])
        return command

    # --- messages -------------------------------------------------------------------------------------------------
    def message(self, q: np.ndarray, trajectory: ControllerTrajectory | None = None, start_on_receipt: bool = False,
                reuse: list | None = None):
        """The command message for the command q (model joint order). joint_trajectory sends `trajectory` (the safety
        filter's controller_trajectory(), model joint order) for this controller's joints; with `reuse` (a list the
        caller keeps) its points are objects of that list, refilled: 4x cheaper than new ones, for a publisher that
        is done with the previous message (rclpy serialises on publish)."""
        values = self.values(q)
        msg = self.msg_type() if not self.is_action else self.msg_type.Goal()
        if self.interface == "joint_trajectory":
            from trajectory_msgs.msg import JointTrajectoryPoint

            from vla_ros.ros.messages import sec_to_stamp

            msg.joint_names = list(self.names)
            if not start_on_receipt:
                sec_to_stamp(trajectory.stamp, msg.header.stamp)
            index = self.index
            nanoseconds = np.round(trajectory.times * 1e9).astype(np.int64).tolist()
            # array.array('d') is the message fields' own type: assigned without a per-element check.
            points = reuse if reuse is not None else []
            while len(points) < len(nanoseconds):
                points.append(JointTrajectoryPoint())
            for point, ns, p, v, a in zip(points, nanoseconds, trajectory.positions[:, index].tolist(),
                                          trajectory.velocities[:, index].tolist(),
                                          trajectory.accelerations[:, index].tolist()):
                point.positions, point.velocities, point.accelerations = array("d", p), array("d", v), array("d", a)
                point.time_from_start.sec, point.time_from_start.nanosec = ns // 1_000_000_000, ns % 1_000_000_000
            msg.points = points[:len(nanoseconds)]
        elif self.interface == "float64_multi_array":
            msg.data = values.tolist()
        elif self.interface == "interbotix_joint_group":
            msg.name = self.spec.command_name
            msg.cmd = values.tolist()
        elif self.interface == "interbotix_joint_single":
            msg.name = self.spec.command_name
            msg.cmd = float(values[0])
        else:  # gripper_command_action goal: position in joint units (franka: half the width = finger_joint1)
            msg.command.position = float(np.asarray(q, dtype=float)[self.index[0]])
        return msg

    def trajectory(self, msg) -> tuple | None:
        """A joint_trajectory message -> (times, positions, velocities | None, accelerations | None, start | None) in
        self.spec.joints order (start None: on receipt), or None when it lacks one of this controller's joints."""
        lookup = {n: k for k, n in enumerate(msg.joint_names)}
        if not msg.points or any(name not in lookup for name in self.names):
            return None
        columns = [lookup[name] for name in self.names]

        def field(name: str):
            rows = [getattr(point, name) for point in msg.points]
            return None if any(len(r) == 0 for r in rows) else np.asarray(rows, dtype=float)[:, columns]

        times = [point.time_from_start.sec + 1e-9 * point.time_from_start.nanosec for point in msg.points]
        stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
        return times, field("positions"), field("velocities"), field("accelerations"), (stamp or None)

    def targets(self, msg) -> dict[str, float]:
        """A command message -> {model joint name: target joint value} (the set-point the driver holds in the end: for
        a joint_trajectory its last point)."""
        if self.interface == "joint_trajectory":
            received = self.trajectory(msg)
            return {} if received is None else dict(zip(self.spec.joints, received[1][-1].tolist()))
        if self.interface == "float64_multi_array":
            command = np.asarray(msg.data, dtype=float)
        elif self.interface == "interbotix_joint_group":
            if msg.name != self.spec.command_name:
                return {}
            command = np.asarray(msg.cmd, dtype=float)
        elif self.interface == "interbotix_joint_single":
            if msg.name != self.spec.command_name:
                return {}
            command = np.array([float(msg.cmd)])
        else:
            return {self.spec.joints[0]: float(msg.command.position)}
        if len(command) != len(self.spec.joints):
            return {}
        return dict(zip(self.spec.joints, self.joint_values(command).tolist()))


def make_adapters(robot: RobotModel, override: str = "") -> list[ControllerAdapter]:
    """Adapters for every controller of the robot; raises ControllerInterfaceError for a missing package."""
    return [ControllerAdapter(robot, spec, override) for spec in robot.controllers]


class ControllerPort:
    """An adapter bound to a node: a publisher, or for gripper_command_action an action client that sends a new goal
    only when the target moved by more than `deadband` (goals at the control rate would pre-empt each other)."""

    def __init__(self, node, adapter: ControllerAdapter, qos, max_effort: float = 20.0, deadband: float = 1e-3,
                 start_on_receipt: bool = False):
        self.adapter, self.start_on_receipt = adapter, start_on_receipt
        self.max_effort, self.deadband = max_effort, deadband
        self._points: list = []  # trajectory points refilled for every message (see ControllerAdapter.message)
        self._last_goal: float | None = None
        if adapter.is_action:
            from rclpy.action import ActionClient

            self._client = ActionClient(node, adapter.msg_type, adapter.topic)
            self.publisher = None
        else:
            self.publisher = node.create_publisher(adapter.msg_type, adapter.topic, qos)

    def send(self, q: np.ndarray, trajectory: ControllerTrajectory | None = None) -> None:
        msg = self.adapter.message(q, trajectory, self.start_on_receipt, self._points)
        if self.publisher is not None:
            self.publisher.publish(msg)
            return
        position = msg.command.position
        if self._last_goal is not None and abs(position - self._last_goal) <= self.deadband:
            return
        if self._client.server_is_ready():
            msg.command.max_effort = self.max_effort
            self._client.send_goal_async(msg)
            self._last_goal = position

    def destroy(self, node) -> None:
        if self.publisher is not None:
            node.destroy_publisher(self.publisher)
        else:
            self._client.destroy()


class ControllerInput:
    """The driver's side of one controller (the sim, test robots; the demo's recorder for topics): the set-points it is
    asked to follow, by model joint name. A joint_trajectory is followed as ros2_control's JTC does
    (core.sim.trajectory_controller): `setpoints(now)` samples it; other interfaces hold their last command.
    `on_message(input, msg, now)` is called for every message it accepts and may return False to refuse it.

    An action (gripper_command_action) is served: each goal is answered at once, before anything moves (a real
    gripper answers when the motion ends; the safety node's client never waits for results): aborted when refused,
    else succeeded with result.position = the goal position now being tracked and reached_goal false."""

    def __init__(self, node, adapter: ControllerAdapter, qos, initial: np.ndarray, on_message=None,
                 callback_group=None):
        from vla_ros.ros.base import now_sec

        self.adapter, self.node, self._now = adapter, node, now_sec
        self.joints = list(adapter.spec.joints)
        self.follower = TrajectoryController(initial) if adapter.interface == "joint_trajectory" else None
        self._held: dict[str, float] = {}
        self.messages = self.refused = 0
        self._on_message = on_message
        if adapter.is_action:
            from rclpy.action import ActionServer

            self.server = ActionServer(node, adapter.msg_type, adapter.topic, self._execute,
                                       callback_group=callback_group)
        else:
            self.subscription = node.create_subscription(adapter.msg_type, adapter.topic, self._receive, qos,
                                                         callback_group=callback_group)

    def _execute(self, goal_handle):
        if self._receive(goal_handle.request):
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return self.adapter.msg_type.Result(position=goal_handle.request.command.position)

    def _receive(self, msg) -> bool:
        now = self._now(self.node)
        if self.follower is not None:
            received = self.adapter.trajectory(msg)
            if received is None or received[1] is None:
                self.refused += 1
                return False
            times, positions, velocities, accelerations, start = received
            self.follower.receive(now, times, positions, velocities, accelerations, start)
        else:
            targets = self.adapter.targets(msg)
            if not targets:  # addressed to another group, or malformed
                self.refused += 1
                return False
            self._held = targets
        self.messages += 1
        if self._on_message is not None and self._on_message(self, msg, now) is False:
            self.refused += 1
            return False
        return True

    def setpoints(self, now: float) -> dict[str, float]:
        """{model joint: set-point at `now`} ({} before the first message)."""
        if self.follower is None:
            return self._held
        if not self.messages:
            return {}
        return dict(zip(self.joints, self.follower.sample(now)[0].tolist()))
