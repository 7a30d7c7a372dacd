"""Controller adapters: a joint-position target (q, model joint order) -> the robot driver's own command message.

One adapter per `controllers:` entry of the robot config. The same adapter also reads those messages back
(`targets`) so the sim node obeys exactly the topics and types the real driver would.

Interfaces:
  joint_trajectory        trajectory_msgs/JointTrajectory, one point, time_from_start = `horizon` (ros2_control
                          JTC, UR scaled JTC, franka arm controller); header.stamp left zero = "start on receipt".
  float64_multi_array     std_msgs/Float64MultiArray, positions in the controller's joint order
                          (forward_position_controller).
  interbotix_joint_group  interbotix_xs_msgs/JointGroupCommand {name = command_name, cmd = positions}.
  interbotix_joint_single interbotix_xs_msgs/JointSingleCommand {name = command_name, cmd}; for a gripper with
                          `command_range`, cmd is the opening mapped onto [closed, open] command units.
  gripper_command_action  control_msgs/action/GripperCommand goal {position = joint value, max_effort}.

interbotix_xs_msgs and control_msgs are not on PyPI: they are imported lazily, and a missing package is a one-line
ControllerInterfaceError. `override="float64_multi_array"` (CLI --controller-interface) replaces those three
package-bound interfaces -- never joint_trajectory / float64_multi_array -- with std_msgs/Float64MultiArray on the
configured topic (a gripper action: on `<action name>/command`), values in command units, so WidowX, ALOHA and the
franka gripper run end-to-end on a pip-only install and in the sim.
"""

from __future__ import annotations

import importlib
from typing import Callable, Mapping

import numpy as np

from vla_ros.core.errors import VlaRosError
from vla_ros.core.robot import ControllerSpec, RobotModel

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
            f"importable; source a ROS workspace that has it, or run with --controller-interface float64_multi_array "
            f"(parameter controller_interface_override)"
        ) from None


class ControllerAdapter:
    """Builds (and parses) the command message of one controller from a full q vector."""

    def __init__(self, robot: RobotModel, spec: ControllerSpec, override: str = "", msg_type=None):
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
            self.msg_type = msg_type if msg_type is not None else _load_type(spec, self.interface)
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
    def message(self, q: np.ndarray, horizon: float):
        """The command message for targets q; `horizon` (s) = JTC time_from_start (one control period)."""
        values = self.values(q)
        msg = self.msg_type() if not self.is_action else self.msg_type.Goal()
        if self.interface == "joint_trajectory":
            from trajectory_msgs.msg import JointTrajectoryPoint

            msg.joint_names = list(self.names)
            point = JointTrajectoryPoint()
            point.positions = values.tolist()
            ns = int(round(horizon * 1e9))
            point.time_from_start.sec, point.time_from_start.nanosec = ns // 1_000_000_000, ns % 1_000_000_000
            msg.points = [point]
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

    def targets(self, msg) -> dict[str, float]:
        """A command message -> {model joint name: target joint value} (what the driver would track)."""
        if self.interface == "joint_trajectory":
            if not msg.points:
                return {}
            lookup = {n: k for k, n in enumerate(msg.joint_names)}
            positions = msg.points[-1].positions
            out = {}
            for model_name, name in zip(self.spec.joints, self.names):
                if name in lookup and lookup[name] < len(positions):
                    out[model_name] = float(positions[lookup[name]])
            return out
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


def make_adapters(robot: RobotModel, override: str = "", msg_types: Mapping[str, type] | None = None) -> list[ControllerAdapter]:
    """Adapters for every controller of the robot; raises ControllerInterfaceError for a missing package.

    `msg_types` (interface -> class) injects message classes, e.g. a stand-in for interbotix_xs_msgs in tests."""
    msg_types = msg_types or {}
    adapters = []
    for spec in robot.controllers:
        interface = override if (override and spec.interface in PACKAGE_BOUND) else spec.interface
        adapters.append(ControllerAdapter(robot, spec, override, msg_types.get(interface)))
    return adapters


class ControllerPort:
    """An adapter bound to a node: a publisher, or for gripper_command_action an action client that sends a new goal
    only when the target moved by more than `deadband` (goals at the control rate would pre-empt each other)."""

    def __init__(self, node, adapter: ControllerAdapter, qos, horizon: float, max_effort: float = 20.0,
                 deadband: float = 1e-3):
        self.adapter, self.horizon = adapter, horizon
        self.max_effort, self.deadband = max_effort, deadband
        self._last_goal: float | None = None
        if adapter.is_action:
            from rclpy.action import ActionClient

            self._client = ActionClient(node, adapter.msg_type, adapter.topic)
            self.publisher = None
        else:
            self.publisher = node.create_publisher(adapter.msg_type, adapter.topic, qos)

    def send(self, q: np.ndarray) -> None:
        msg = self.adapter.message(q, self.horizon)
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


def subscribe_controller(node, adapter: ControllerAdapter, qos, callback: Callable[[dict[str, float]], None],
                         callback_group=None):
    """Subscribe to a controller's command topic (sim node side): callback({model joint: target})."""
    if adapter.is_action:
        raise ControllerInterfaceError(
            f"controller {adapter.spec.name!r}: the sim cannot serve the {adapter.spec.interface} action "
            f"{adapter.spec.topic}; run with --controller-interface float64_multi_array"
        )
    return node.create_subscription(adapter.msg_type, adapter.topic, lambda msg: callback(adapter.targets(msg)), qos,
                                    callback_group=callback_group)
