"""Deserialized bag messages -> core values: images, measured joint state and recorded commands, mapped by name.

Messages are read by field name (rosbags dataclasses and rclpy messages look alike), joints are matched by name with
the robot config's joint-state source / controller prefixes, never by position. A message that cannot be used raises
`UnusableMessage` carrying a short `reason`; replay counts those by reason instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vla_ros.core.errors import VlaRosError
from vla_ros.core.images import decode_compressed, decode_raw, to_rgb
from vla_ros.core.robot import ControllerSpec, RobotModel

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
JOINT_STATE_TYPE = "sensor_msgs/msg/JointState"
STRING_TYPE = "std_msgs/msg/String"
ACTION_TYPE = "std_msgs/msg/Float64MultiArray"
# controller interface -> message types it can be recorded as (an action interface has no topic to record)
COMMAND_TYPES = {
    "joint_trajectory": ("trajectory_msgs/msg/JointTrajectory",),
    "float64_multi_array": ("std_msgs/msg/Float64MultiArray",),
    "interbotix_joint_group": ("interbotix_xs_msgs/msg/JointGroupCommand",),
    "interbotix_joint_single": ("interbotix_xs_msgs/msg/JointSingleCommand",),
    "gripper_command_action": (),
}
_DEPTH_ENCODINGS = ("mono16", "16UC1", "32FC1")


class UnusableMessage(VlaRosError):
    """A message that deserialized but cannot be used; `reason` is the key it is counted under."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def header_stamp(message) -> float | None:
    """header.stamp in seconds, or None when unset (0), as drivers that do not stamp leave it."""
    stamp = message.header.stamp
    seconds = int(stamp.sec) + int(stamp.nanosec) * 1e-9
    return seconds if seconds > 0 else None


def image_rgb(message, msgtype: str, source: str) -> np.ndarray:
    """sensor_msgs/Image (colour or mono8) or CompressedImage -> RGB uint8 (H, W, 3). ImageError when unusable.

    An rgb8 frame is a read-only view of the message's bytes (replay's bag data), not a copy: a policy that only
    reads its input (all do: they resize into new arrays) pays nothing for a 0.9 MB frame it ignores."""
    if msgtype == "sensor_msgs/msg/CompressedImage":
        return decode_compressed(message.format, message.data, source)
    if message.encoding in _DEPTH_ENCODINGS:
        raise UnusableMessage("depth_image", f"{source}: {message.encoding} is a depth image, not a camera image")
    pixels = decode_raw(message.encoding, int(message.height), int(message.width), int(message.step),
                        bool(message.is_bigendian), message.data, source, copy=False)
    return to_rgb(message.encoding, pixels)


def action_vector(message, dim: int, topic: str) -> np.ndarray:
    """A recorded action (std_msgs/Float64MultiArray, one action per message) with exactly `dim` finite values."""
    values = np.asarray(message.data, dtype=np.float64)
    if values.shape != (dim,) or not np.all(np.isfinite(values)):
        raise UnusableMessage("action_wrong_length_or_not_finite",
                              f"topic {topic}: expected {dim} finite action values, got {values.size}")
    return values


@dataclass(frozen=True)
class JointReading:
    """Values for some of the robot's joints: `index` into q, and the values in the same order."""

    index: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray | None = None


class JointStateReader:
    """sensor_msgs/JointState from the robot's joint-state sources -> readings by model joint name."""

    def __init__(self, robot: RobotModel):
        self.robot = robot
        self.prefixes = {source.topic: source.prefix for source in robot.joint_state_sources}
        self._index = {name: i for i, name in enumerate(robot.joint_names)}
        self.ignored_names: set[str] = set()  # message joint names that are not commanded joints (mimic, extra)
        self._cache: dict[tuple[str, tuple[str, ...]], tuple[np.ndarray, np.ndarray]] = {}

    def read(self, topic: str, message) -> JointReading:
        names = tuple(message.name)
        positions = np.asarray(message.position, dtype=np.float64)
        if len(positions) != len(names):
            raise UnusableMessage("joint_state_length_mismatch",
                                  f"topic {topic}: {len(names)} joint names but {len(positions)} positions")
        key = (topic, names)
        if key not in self._cache:  # a source sends the same names every time: map them once
            prefix = self.prefixes[topic]
            columns, index = [], []
            for column, name in enumerate(names):
                model_name = prefix + name
                if model_name in self._index:
                    columns.append(column)
                    index.append(self._index[model_name])
                else:
                    self.ignored_names.add(f"{topic}:{name}")
            self._cache[key] = (np.array(columns, dtype=int), np.array(index, dtype=int))
        columns, index = self._cache[key]
        if index.size == 0:
            raise UnusableMessage("joint_state_no_robot_joint",
                                  f"topic {topic}: none of the names {list(names)[:4]} is a joint of robot "
                                  f"{self.robot.name} (prefix {self.prefixes[topic]!r})")
        values = positions[columns]
        if not np.all(np.isfinite(values)):
            raise UnusableMessage("joint_state_not_finite", f"topic {topic}: non-finite joint position")
        velocities = np.asarray(message.velocity, dtype=np.float64)
        return JointReading(index, values, velocities[columns] if len(velocities) == len(names) else None)


class CommandReader:
    """Recorded controller commands (what the real chain or a teleoperator sent) -> joint targets by model name."""

    def __init__(self, robot: RobotModel, controllers: tuple[ControllerSpec, ...] | None = None):
        self.robot = robot
        self.controllers = {c.topic: c for c in (robot.controllers if controllers is None else controllers)}
        self._index = {name: i for i, name in enumerate(robot.joint_names)}

    def read(self, topic: str, message) -> JointReading:
        controller = self.controllers[topic]
        if controller.interface == "joint_trajectory":
            names = [controller.prefix + n for n in message.joint_names]
            points = [p for p in message.points if len(p.positions)]
            if not points:
                raise UnusableMessage("command_empty_trajectory", f"topic {topic}: trajectory without positions")
            values = np.asarray(points[0].positions, dtype=np.float64)
            if len(values) != len(names):
                raise UnusableMessage("command_length_mismatch",
                                      f"topic {topic}: {len(names)} joint names but {len(values)} positions")
        elif controller.interface == "float64_multi_array":
            names = list(controller.joints)
            values = np.asarray(message.data, dtype=np.float64)
        else:  # interbotix group / single: `name` selects the group, values in the controller's joint order
            if message.name != controller.command_name:
                raise UnusableMessage("command_other_group",
                                      f"topic {topic}: command for {message.name!r}, not {controller.command_name!r}")
            names = list(controller.joints)
            values = np.atleast_1d(np.asarray(message.cmd, dtype=np.float64))
        if len(values) != len(names):
            raise UnusableMessage("command_length_mismatch",
                                  f"topic {topic}: {len(values)} values for controller {controller.name}'s "
                                  f"{len(names)} joints")
        unknown = [n for n in names if n not in self._index]
        if unknown:
            raise UnusableMessage("command_unknown_joint",
                                  f"topic {topic}: joint {unknown[0]!r} is not a joint of robot {self.robot.name}")
        if not np.all(np.isfinite(values)):
            raise UnusableMessage("command_not_finite", f"topic {topic}: non-finite command value")
        if controller.command_range is not None:  # a gripper commanded in its own units (e.g. Interbotix PWM)
            values = np.array([controller.joint_value(v) for v in values])
        return JointReading(np.array([self._index[n] for n in names], dtype=int), values)
