"""Write small rosbag2 bags for tests (and demos): both storages, messages serialized by rosbags or by rclpy.

`rosbags` and ROS 2 (rclpy / rmw_fastrtps) produce different bytes for the same message in corner cases (Fast CDR
leaves trailing bytes after sequences of doubles), so tests write some messages each way. Message builders take
`flavor="rosbags"` (rosbags dataclasses) or `flavor="rclpy"` (real ROS 2 message objects); `BagWriter.write`
serializes either kind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from vla_ros.core.images import encode_raw

STORAGE_PLUGINS = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}

# interbotix_xs_msgs is not part of ROS 2 Jazzy; bags from Interbotix arms embed these definitions.
INTERBOTIX_MSGS = {
    "interbotix_xs_msgs/msg/JointGroupCommand": "string name\nfloat32[] cmd\n",
    "interbotix_xs_msgs/msg/JointSingleCommand": "string name\nfloat32 cmd\n",
}


def typestore():
    """ROS 2 Jazzy types plus the Interbotix command messages."""
    store = get_typestore(Stores.ROS2_JAZZY)
    for name, text in INTERBOTIX_MSGS.items():
        store.register(get_types_from_msg(text, name))
    return store


TYPES = typestore()


def _time(t: float, flavor: str):
    ns = int(round(t * 1e9))
    if flavor == "rclpy":
        from builtin_interfaces.msg import Time

        return Time(sec=ns // 10**9, nanosec=ns % 10**9)
    return TYPES.types["builtin_interfaces/msg/Time"](ns // 10**9, ns % 10**9)


def _header(t: float, frame_id: str, flavor: str):
    if flavor == "rclpy":
        from std_msgs.msg import Header

        return Header(stamp=_time(t, flavor), frame_id=frame_id)
    return TYPES.types["std_msgs/msg/Header"](_time(t, flavor), frame_id)


def image_msg(stamp: float, pixels: np.ndarray, encoding: str = "rgb8", frame_id: str = "camera",
              flavor: str = "rosbags"):
    height, width, step, data = encode_raw(encoding, pixels)
    if flavor == "rclpy":
        from sensor_msgs.msg import Image

        return Image(header=_header(stamp, frame_id, flavor), height=height, width=width, encoding=encoding,
                     is_bigendian=0, step=step, data=data)
    return TYPES.types["sensor_msgs/msg/Image"](_header(stamp, frame_id, flavor), height, width, encoding, 0, step,
                                                np.frombuffer(data, dtype=np.uint8))


def compressed_image_msg(stamp: float, pixels_rgb: np.ndarray, fmt: str = "png", flavor: str = "rosbags"):
    import cv2

    ok, encoded = cv2.imencode(f".{fmt}", np.ascontiguousarray(pixels_rgb[..., ::-1]))
    assert ok
    if flavor == "rclpy":
        from sensor_msgs.msg import CompressedImage

        return CompressedImage(header=_header(stamp, "camera", flavor), format=fmt, data=encoded.tobytes())
    return TYPES.types["sensor_msgs/msg/CompressedImage"](_header(stamp, "camera", flavor), fmt, encoded.ravel())


def joint_state_msg(stamp: float, names: Sequence[str], positions: Sequence[float],
                    velocities: Sequence[float] = (), flavor: str = "rosbags"):
    if flavor == "rclpy":
        from sensor_msgs.msg import JointState

        return JointState(header=_header(stamp, "", flavor), name=list(names), position=[float(p) for p in positions],
                          velocity=[float(v) for v in velocities])
    return TYPES.types["sensor_msgs/msg/JointState"](
        _header(stamp, "", flavor), list(names), np.asarray(positions, dtype=np.float64),
        np.asarray(velocities, dtype=np.float64), np.zeros(0))


def trajectory_msg(names: Sequence[str], positions: Sequence[float], time_from_start: float,
                   flavor: str = "rosbags"):
    """A one-point JointTrajectory with header stamp 0 ("start now"), as a streaming controller adapter sends."""
    ns = int(round(time_from_start * 1e9))
    if flavor == "rclpy":
        from builtin_interfaces.msg import Duration
        from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

        point = JointTrajectoryPoint(positions=[float(p) for p in positions],
                                     time_from_start=Duration(sec=ns // 10**9, nanosec=ns % 10**9))
        return JointTrajectory(header=_header(0.0, "", flavor), joint_names=list(names), points=[point])
    point = TYPES.types["trajectory_msgs/msg/JointTrajectoryPoint"](
        np.asarray(positions, dtype=np.float64), np.zeros(0), np.zeros(0), np.zeros(0),
        TYPES.types["builtin_interfaces/msg/Duration"](ns // 10**9, ns % 10**9))
    return TYPES.types["trajectory_msgs/msg/JointTrajectory"](_header(0.0, "", flavor), list(names), [point])


def float_array_msg(values: Sequence[float], flavor: str = "rosbags"):
    if flavor == "rclpy":
        from std_msgs.msg import Float64MultiArray

        return Float64MultiArray(data=[float(v) for v in values])
    layout = TYPES.types["std_msgs/msg/MultiArrayLayout"]([], 0)
    return TYPES.types["std_msgs/msg/Float64MultiArray"](layout, np.asarray(values, dtype=np.float64))


def string_msg(text: str, flavor: str = "rosbags"):
    if flavor == "rclpy":
        from std_msgs.msg import String

        return String(data=text)
    return TYPES.types["std_msgs/msg/String"](text)


def joint_group_msg(name: str, values: Sequence[float]):
    return TYPES.types["interbotix_xs_msgs/msg/JointGroupCommand"](name, np.asarray(values, dtype=np.float32))


def joint_single_msg(name: str, value: float):
    return TYPES.types["interbotix_xs_msgs/msg/JointSingleCommand"](name, float(value))


def _latched_qos():
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    never = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, never, never,
               QosLiveliness.AUTOMATIC, never, False)


def _rclpy_msgtype(message) -> str:
    package = type(message).__module__.split(".")[0]
    return f"{package}/msg/{type(message).__name__}"


class BagWriter:
    """A rosbag2 bag being written; `write` takes rosbags dataclasses or rclpy messages. Use as a context manager."""

    def __init__(self, path: Path, storage: str = "sqlite3"):
        self.path = Path(path)
        self._writer = Writer(self.path, version=9, storage_plugin=STORAGE_PLUGINS[storage])
        self._connections: dict[str, object] = {}

    def __enter__(self) -> "BagWriter":
        self._writer.open()
        return self

    def __exit__(self, *exc_info) -> None:
        self._writer.close()

    def connection(self, topic: str, msgtype: str, latched: bool = False):
        """The topic's connection, created on first use; `latched`: offered QoS transient local (an instruction)."""
        if topic not in self._connections:
            qos = [_latched_qos()] if latched else []
            self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=TYPES,
                                                                   offered_qos_profiles=qos)
        return self._connections[topic]

    def write(self, topic: str, log_time: float, message) -> None:
        """Serialize `message` (rclpy objects with rclpy.serialization, dataclasses with rosbags) and record it."""
        if hasattr(message, "__msgtype__"):
            msgtype = message.__msgtype__
            data = TYPES.serialize_cdr(message, msgtype)
        else:
            from rclpy.serialization import serialize_message

            msgtype = _rclpy_msgtype(message)
            data = serialize_message(message)
        self.write_raw(topic, msgtype, log_time, data)

    def write_raw(self, topic: str, msgtype: str, log_time: float, data: bytes | memoryview) -> None:
        self._writer.write(self.connection(topic, msgtype), int(round(log_time * 1e9)), data)


def pattern_image(height: int, width: int, seed: int) -> np.ndarray:
    """A deterministic RGB test pattern (each frame distinct)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def write_bag(path: Path, storage: str, messages) -> Path:
    """Write `messages` [(topic, log_time, message)] (any order) into a new bag; rclpy and rosbags messages mix."""
    with BagWriter(path, storage) as writer:
        for topic, log_time, message in sorted(messages, key=lambda m: m[1]):
            writer.write(topic, log_time, message)
    return Path(path)


def scenario_messages(robot, duration: float = 2.0, start: float = 100.0, image_size: tuple[int, int] = (8, 8),
                      camera_hz: float = 30.0, joint_state_hz: float = 100.0, instruction: str | None = "pick up",
                      rclpy_every: int = 3, amplitude: float = 0.05) -> list:
    """Camera frames, joint states (arm joints: a slow sinusoid about home; grippers open) and an instruction, as
    a robot would record them.

    Every `rclpy_every`-th message is a real rclpy message (serialized by rclpy when written), the rest rosbags
    dataclasses. Capture stamps equal the log times.
    """
    messages, count = [], 0

    def flavor() -> str:
        nonlocal count
        count += 1
        return "rclpy" if rclpy_every and count % rclpy_every == 0 else "rosbags"

    if instruction is not None:
        messages.append(("/vla_ros/instruction", start, string_msg(instruction, flavor())))
    for camera in robot.cameras:
        for i in range(int(duration * camera_hz) + 1):
            t = start + i / camera_hz
            messages.append((camera.topic, t, image_msg(t, pattern_image(*image_size, seed=i), flavor=flavor())))
    arm_joints = np.zeros(robot.nq, dtype=bool)
    for arm in robot.arms:
        arm_joints[arm.index] = True
    for source in robot.joint_state_sources:
        names = [n for n in robot.joint_names if n.startswith(source.prefix)]
        for i in range(int(duration * joint_state_hz) + 1):
            t = start + i / joint_state_hz
            q = robot.home + arm_joints * amplitude * np.sin(0.5 * (t - start))
            positions = [q[robot.joint_names.index(n)] for n in names]
            messages.append((source.topic, t, joint_state_msg(t, [n[len(source.prefix):] for n in names], positions,
                                                              flavor=flavor())))
    return messages
