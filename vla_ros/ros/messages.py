"""ROS messages <-> core values: joint states by name, camera images, stamps, and the inter-node action topics.

Everything here works on message *fields* (duck-typed), so it is exercised without a running graph.

Inter-node topics (names are defaults; every one is remappable):
  /vla_ros/ee_command     sensor_msgs/JointState  policy_node -> ik_node: the EE command (core.ik.EECommand) of this
                          control tick for every arm, one "joint" per value, named `<arm>/<field>` (EE_FIELDS:
                          translation, rotation quaternion x y z w, gripper opening in [0, 1] or NaN);
                          header.frame_id = "<kind>:<frame>" (delta:base | delta:ee | pose:base); header.stamp =
                          the executor tick time the action is meant for.
  /vla_ros/joint_command  sensor_msgs/JointState  ik_node / policy_node -> safety_node: joint position targets,
                          model joint names, header.stamp = the tick time (stale targets are refused by safety).
JointState is used for both because it is stamped, named (so joints are matched by name, never position) and
shows up in every ROS plotting tool; a custom message would need a compiled interface package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from vla_ros.core.errors import VlaRosError
from vla_ros.core.images import ENCODINGS, ImageError, decode_compressed, decode_raw, encode_raw, to_rgb
from vla_ros.core.robot import CameraSpec, JointStateSource, RobotModel

EE_COMMAND_TOPIC = "/vla_ros/ee_command"
JOINT_COMMAND_TOPIC = "/vla_ros/joint_command"
# EE command fields per arm: translation (m), rotation quaternion (x, y, z, w), gripper opening in [0, 1]
# (1 = open; NaN = hold the gripper target).
EE_FIELDS = ("x", "y", "z", "qx", "qy", "qz", "qw", "gripper")
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")


class JointStateError(VlaRosError):
    """A joint_states message that cannot be used (missing joint, NaN, inconsistent lengths)."""


# --- time -------------------------------------------------------------------------------------------------------

def stamp_to_sec(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def sec_to_stamp(t: float, stamp) -> None:
    """Write `t` seconds into a builtin_interfaces/Time (in place: avoids an import and an allocation)."""
    ns = int(round(t * 1e9))
    stamp.sec, stamp.nanosec = ns // 1_000_000_000, ns % 1_000_000_000


# --- joint states -------------------------------------------------------------------------------------------------

def source_joints(robot: RobotModel) -> list[tuple[JointStateSource, tuple[str, ...]]]:
    """For each joint_states source, the model joints it must provide: a joint belongs to the source with the
    longest prefix its name starts with (so a "" source next to "left/" and "right/" ones gets the rest)."""
    owned: dict[int, list[str]] = {i: [] for i in range(len(robot.joint_state_sources))}
    for name in robot.joint_names:
        matches = [(len(s.prefix), i) for i, s in enumerate(robot.joint_state_sources) if name.startswith(s.prefix)]
        if matches:
            owned[max(matches)[1]].append(name)
    return [(s, tuple(owned[i])) for i, s in enumerate(robot.joint_state_sources)]


@dataclass
class JointStateView:
    """Latest measured state of every commanded joint, assembled from all joint_states sources by name."""

    positions: np.ndarray  # (nq,) robot.joint_names order
    velocities: np.ndarray  # (nq,), zeros where a driver does not publish velocity
    received: np.ndarray  # (nq,) receipt time (node clock, s) of each joint's latest value; -inf = never
    stamp: float  # header stamp of the newest message used


class JointStateCache:
    """Maps JointState messages to model joints by name (prefix added per source) and keeps the latest values.

    A message that lacks a joint its source must provide is refused whole (JointStateError naming the joint), so
    the cache never mixes a fresh and a stale reading of one arm; the joints then go stale and the nodes hold.
    """

    def __init__(self, robot: RobotModel):
        self.robot = robot
        self.sources = source_joints(robot)
        self._index = {name: i for i, name in enumerate(robot.joint_names)}
        self.positions = np.full(robot.nq, np.nan)
        self.velocities = np.zeros(robot.nq)
        self.received = np.full(robot.nq, -np.inf)
        self.stamp = -np.inf
        self._layouts: dict[tuple, tuple] = {}  # (source, message names) -> (rows, targets): drivers resend them

    def _layout(self, source_index: int, names: tuple) -> tuple[np.ndarray, np.ndarray]:
        """Rows of a message with these names that hold the source's joints, and those joints' model indices."""
        source, required = self.sources[source_index]
        lookup = {source.prefix + n: k for k, n in enumerate(names)}
        missing = [j for j in required if j not in lookup]
        if missing:
            raise JointStateError(
                f"{source.topic}: joint {missing[0][len(source.prefix):]!r} missing from the message "
                f"(expected {', '.join(j[len(source.prefix):] for j in required)}); holding"
            )
        rows = np.fromiter((lookup[j] for j in required), dtype=int, count=len(required))
        targets = np.fromiter((self._index[j] for j in required), dtype=int, count=len(required))
        return rows, targets

    def update(self, source_index: int, msg, now: float) -> None:
        source, required = self.sources[source_index]
        names = tuple(msg.name)
        positions = np.asarray(msg.position, dtype=float)
        if len(positions) != len(names):
            raise JointStateError(
                f"{source.topic}: {len(names)} names but {len(positions)} positions; expected one position per name"
            )
        velocities = np.asarray(msg.velocity, dtype=float)
        if len(velocities) not in (0, len(names)):
            raise JointStateError(f"{source.topic}: {len(names)} names but {len(velocities)} velocities")
        layout = self._layouts.get((source_index, names))
        if layout is None:
            layout = self._layout(source_index, names)
            if len(self._layouts) >= 16:
                self._layouts.clear()
            self._layouts[(source_index, names)] = layout
        rows, target = layout
        values = positions[rows]
        if not np.all(np.isfinite(values)):
            bad = required[int(np.flatnonzero(~np.isfinite(values))[0])]
            raise JointStateError(f"{source.topic}: joint {bad[len(source.prefix):]!r} position is not finite")
        self.positions[target] = values
        self.velocities[target] = np.nan_to_num(velocities[rows]) if len(velocities) else 0.0
        self.received[target] = now
        self.stamp = max(self.stamp, stamp_to_sec(msg.header.stamp))

    def fresh(self, now: float, timeout: float) -> bool:
        """Every joint measured within `timeout` seconds of `now`."""
        return bool(np.all(now - self.received <= timeout))

    def stale_joint(self, now: float, timeout: float) -> str | None:
        old = np.flatnonzero(~(now - self.received <= timeout))
        return self.robot.joint_names[int(old[0])] if old.size else None

    def view(self) -> JointStateView:
        return JointStateView(self.positions.copy(), self.velocities.copy(), self.received.copy(), self.stamp)


def fill_joint_state(msg, names: Sequence[str], positions: Sequence[float], t: float, velocities=None):
    """Fill a sensor_msgs/JointState (names, positions, optional velocities, header stamp = t) and return it."""
    sec_to_stamp(t, msg.header.stamp)
    msg.name = list(names)
    msg.position = [float(v) for v in positions]
    msg.velocity = [] if velocities is None else [float(v) for v in velocities]
    return msg


# --- images ---------------------------------------------------------------------------------------------------------

def image_from_msg(msg, camera: CameraSpec) -> np.ndarray:
    """sensor_msgs/Image -> RGB uint8 (H, W, 3) for colour encodings, (H, W) array for depth encodings.

    Refuses (ImageError, naming the topic) an unsupported encoding, inconsistent step/data, or a resolution
    different from the camera's config: a silently resized or mis-strided frame is worse than no frame.
    """
    if (msg.width, msg.height) != (camera.width, camera.height):
        raise ImageError(
            f"{camera.topic}: image is {msg.width}x{msg.height}, camera {camera.name!r} is configured as "
            f"{camera.width}x{camera.height}"
        )
    pixels = decode_raw(msg.encoding, msg.height, msg.width, msg.step, bool(msg.is_bigendian), msg.data, camera.topic)
    return pixels if msg.encoding in DEPTH_ENCODINGS else to_rgb(msg.encoding, pixels)


def image_from_compressed(msg, camera: CameraSpec) -> np.ndarray:
    rgb = decode_compressed(msg.format, msg.data, camera.topic)
    if rgb.shape[:2] != (camera.height, camera.width):
        raise ImageError(
            f"{camera.topic}: image is {rgb.shape[1]}x{rgb.shape[0]}, camera {camera.name!r} is configured as "
            f"{camera.width}x{camera.height}"
        )
    return rgb


def fill_image(msg, encoding: str, pixels: np.ndarray, t: float, frame_id: str = ""):
    """Fill a sensor_msgs/Image from an array (little-endian) and return it."""
    msg.height, msg.width, msg.step, msg.data = encode_raw(encoding, pixels)
    msg.encoding, msg.is_bigendian = encoding, 0
    msg.header.frame_id = frame_id
    sec_to_stamp(t, msg.header.stamp)
    return msg


# --- EE commands ------------------------------------------------------------------------------------------------------

def fill_ee_command(msg, commands, t: float):
    """{arm: core.ik.EECommand} -> the EE command JointState (see the module docstring) and return it.

    header.frame_id carries the command semantics, "<kind>:<frame>" ("delta:base", "delta:ee", "pose:base"): the
    IK integrates deltas onto its own target, so the node must know which of the three it got.
    """
    import pinocchio as pin

    kinds = {(c.kind, c.frame) for c in commands.values()}
    if len(kinds) != 1:
        raise ValueError(f"EE commands of one tick must share kind and frame, got {sorted(kinds)}")
    kind, frame = kinds.pop()
    msg.header.frame_id = f"{kind}:{frame}"
    sec_to_stamp(t, msg.header.stamp)
    names, values = [], []
    for arm, command in commands.items():
        quat = pin.Quaternion(command.rotation).coeffs()  # (x, y, z, w)
        grip = float("nan") if command.gripper is None else command.gripper
        names += [f"{arm}/{field}" for field in EE_FIELDS]
        values += [*command.translation.tolist(), *quat.tolist(), grip]
    msg.name, msg.position, msg.velocity = names, values, []
    return msg


def ee_commands_from_msg(msg, arm_names, topic: str = EE_COMMAND_TOPIC) -> dict:
    """The EE command JointState -> {arm: core.ik.EECommand}; JointStateError naming the topic if malformed."""
    import pinocchio as pin

    from vla_ros.core.ik import EECommand

    kind, _, frame = msg.header.frame_id.partition(":")
    if (kind, frame) not in (("delta", "base"), ("delta", "ee"), ("pose", "base")):
        raise JointStateError(f"{topic}: header.frame_id {msg.header.frame_id!r}; expected delta:base, delta:ee or pose:base")
    values = np.asarray(msg.position, dtype=float)
    if len(values) != len(msg.name):
        raise JointStateError(f"{topic}: {len(msg.name)} names but {len(values)} positions")
    lookup = {n: k for k, n in enumerate(msg.name)}
    arms = sorted({n.rsplit("/", 1)[0] for n in msg.name})
    commands = {}
    for arm in arms:
        if arm not in arm_names:
            raise JointStateError(f"{topic}: arm {arm!r} is not an arm of the robot ({', '.join(arm_names)})")
        try:
            row = values[[lookup[f"{arm}/{field}"] for field in EE_FIELDS]]
        except KeyError as exc:
            raise JointStateError(f"{topic}: field {exc.args[0]!r} missing; expected {arm}/{{{','.join(EE_FIELDS)}}}") from None
        if not np.all(np.isfinite(row[:7])) or not np.linalg.norm(row[3:7]) > 1e-6:
            raise JointStateError(f"{topic}: arm {arm!r}: non-finite value or zero quaternion in {row[:7].tolist()}")
        quat = row[3:7] / np.linalg.norm(row[3:7])
        grip = None if np.isnan(row[7]) else float(np.clip(row[7], 0.0, 1.0))
        commands[arm] = EECommand(kind, row[:3], pin.Quaternion(quat).toRotationMatrix(), frame, grip)
    return commands


__all__ = [
    "DEPTH_ENCODINGS", "EE_COMMAND_TOPIC", "EE_FIELDS", "ENCODINGS", "ImageError", "JOINT_COMMAND_TOPIC",
    "JointStateCache", "JointStateError", "JointStateView", "ee_commands_from_msg", "fill_ee_command", "fill_image",
    "fill_joint_state", "image_from_compressed", "image_from_msg", "sec_to_stamp", "source_joints", "stamp_to_sec",
]
