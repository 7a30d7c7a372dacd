"""Replay's bag layer: both storages, rosbags- and rclpy-serialized messages, remaps, bad bags as one-line errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from bag_helpers import (TYPES, BagWriter, compressed_image_msg, image_msg, joint_group_msg, joint_state_msg,
                         pattern_image, string_msg, trajectory_msg, write_bag)
from rosbags.serde import SerdeError
from rosbags.typesys import Stores, get_typestore

from vla_ros.core.replay.bag import Bag, BagError, BagMessage, MessageDecodeError, parse_remaps, raw_header_stamp
from vla_ros.core.replay.messages import header_stamp, image_rgb

STORAGES = ("sqlite3", "mcap")
FLAVORS = ("rosbags", "rclpy")


def _messages(flavor: str):
    frame = pattern_image(4, 6, seed=1)
    return [
        ("/cam", 1.0, image_msg(1.0, frame, flavor=flavor)),
        ("/cam/compressed", 1.0, compressed_image_msg(1.0, frame, flavor=flavor)),
        ("/joint_states", 1.01, joint_state_msg(1.005, ["a", "b"], [0.5, -0.25], flavor=flavor)),
        ("/joint_states", 1.02, joint_state_msg(1.015, ["a", "b"], [0.75, -0.5], flavor=flavor)),
        ("/cmd", 1.03, trajectory_msg(["a", "b"], [0.1, 0.2], 0.02, flavor=flavor)),
        ("/instruction", 1.04, string_msg("stack the cups", flavor=flavor)),
    ]


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("flavor", FLAVORS)
def test_reads_every_message_in_log_time_order_with_exact_values(tmp_path, storage, flavor):
    path = write_bag(tmp_path / "bag", storage, _messages(flavor))
    with Bag(path) as bag:
        assert bag.storage == storage
        assert bag.topics["/joint_states"].count == 2
        assert bag.topics["/cam"].msgtype == "sensor_msgs/msg/Image"
        assert bag.duration == pytest.approx(0.04, abs=1e-6)
        messages = list(bag.messages(bag.topics))
        assert [m.log_time for m in messages] == sorted(m.log_time for m in messages)
        decoded = {m.topic: bag.decode(m) for m in messages}  # the last message of each topic
    assert list(decoded["/joint_states"].name) == ["a", "b"]
    np.testing.assert_array_equal(decoded["/joint_states"].position, [0.75, -0.5])
    assert header_stamp(decoded["/joint_states"]) == pytest.approx(1.015, abs=1e-9)
    np.testing.assert_array_equal(decoded["/cmd"].points[0].positions, [0.1, 0.2])
    assert header_stamp(decoded["/cmd"]) is None  # a zero stamp means "unset"
    assert decoded["/instruction"].data == "stack the cups"
    frame = pattern_image(4, 6, seed=1)
    np.testing.assert_array_equal(image_rgb(decoded["/cam"], "sensor_msgs/msg/Image", "cam"), frame)
    np.testing.assert_array_equal(
        image_rgb(decoded["/cam/compressed"], "sensor_msgs/msg/CompressedImage", "cam"), frame)  # png: lossless


def test_rclpy_serialized_messages_need_the_tolerant_decoder(tmp_path):
    """Fast CDR leaves bytes after sequences of doubles: rosbags' strict decoder refuses them, replay must not."""
    path = write_bag(tmp_path / "bag", "sqlite3", _messages("rclpy"))
    strict = get_typestore(Stores.ROS2_JAZZY)
    with Bag(path) as bag:
        message = next(m for m in bag.messages(["/cmd"]))
        with pytest.raises(SerdeError):
            strict.deserialize_cdr(bytes(message.raw), message.msgtype)
        np.testing.assert_array_equal(bag.decode(message).points[0].positions, [0.1, 0.2])
        assert bag.messages_with_trailing_bytes == 1


@pytest.mark.parametrize("flavor", FLAVORS)
def test_header_stamps_read_from_the_raw_bytes_match_full_deserialization(tmp_path, flavor):
    """Replay reads camera stamps without deserializing the frame; the value must be the deserialized one exactly."""
    frame = pattern_image(4, 6, seed=2)
    stamps = [0.0, 1.25, 1700000000.123456789, 2147483647.25]  # unset, plain, epoch-like, the last int32 second
    messages = []
    for k, stamp in enumerate(stamps):
        log_time = 10.0 + k
        messages += [("/cam", log_time, image_msg(stamp, frame, frame_id="a_longer_frame_id", flavor=flavor)),
                     ("/cam/compressed", log_time, compressed_image_msg(stamp, frame, flavor=flavor)),
                     ("/joint_states", log_time, joint_state_msg(stamp, ["a"], [0.5], flavor=flavor))]
    path = write_bag(tmp_path / "bag", "mcap", messages)
    with Bag(path) as bag:
        read = list(bag.messages(bag.topics))
        assert len(read) == 3 * len(stamps)
        for message in read:
            assert raw_header_stamp(message) == header_stamp(bag.decode(message))
        assert raw_header_stamp(read[0]) is None  # stamp 0: unset
        # big-endian CDR (rosbags can write it; ROS 2 writes little-endian) and payloads too short for a stamp
        for message in read[-3:]:
            big = TYPES.serialize_cdr(bag.decode(message), message.msgtype, little_endian=False)
            big_message = BagMessage(message.topic, message.msgtype, message.log_time_ns, big)
            assert big[1] == 0 and raw_header_stamp(big_message) == header_stamp(bag.decode(big_message))
            with pytest.raises(MessageDecodeError, match="truncated"):
                raw_header_stamp(BagMessage(message.topic, message.msgtype, message.log_time_ns, message.raw[:11]))
        with pytest.raises(MessageDecodeError, match="not CDR"):
            raw_header_stamp(BagMessage("/cam", "sensor_msgs/msg/Image", 0, b"\x07\x07" + bytes(message.raw[2:])))


def test_deserializers_are_shared_between_bags_with_the_same_definitions(tmp_path):
    """rosbags generates a deserializer per type and typestore (milliseconds each); bags whose definitions match
    Jazzy's use one process-wide set, a bag with its own definition of a type keeps its own."""
    path = write_bag(tmp_path / "bag", "mcap", _messages("rosbags"))
    decoders = []
    for _ in range(2):
        with Bag(path) as bag:
            for message in bag.messages(bag.topics):
                bag.decode(message)
            decoders.append(dict(bag._decoders))
    assert decoders[0]["sensor_msgs/msg/Image"][0] is decoders[1]["sensor_msgs/msg/Image"][0]
    with BagWriter(tmp_path / "custom", "sqlite3") as writer:  # Interbotix types are not part of Jazzy
        writer.write("/group", 1.0, joint_group_msg("arm", [0.5, -0.25]))
    with Bag(tmp_path / "custom") as bag:
        message = next(bag.messages(["/group"]))
        assert bag.decode(message).name == "arm"
        assert bag._decoders["interbotix_xs_msgs/msg/JointGroupCommand"][1] is bag._typestore


def test_remaps_rename_bag_topics(tmp_path):
    path = write_bag(tmp_path / "bag", "mcap", _messages("rosbags"))
    with Bag(path, parse_remaps(["/cam:=/camera/image_raw"])) as bag:
        assert "/camera/image_raw" in bag.topics and "/cam" not in bag.topics
        assert {m.topic for m in bag.messages(["/camera/image_raw"])} == {"/camera/image_raw"}
        assert bag.topics["/camera/image_raw"].recorded_name == "/cam"


@pytest.mark.parametrize("items, problem", [
    (["/cam=/x"], "expected FROM:=TO"),
    (["cam:=/x"], "absolute topic names"),
    (["/a:=/x", "/a:=/y"], "remapped twice"),
])
def test_bad_remaps_are_one_line_errors(items, problem):
    with pytest.raises(BagError, match=problem):
        parse_remaps(items)


def test_remap_of_a_topic_the_bag_lacks_is_an_error(tmp_path):
    path = write_bag(tmp_path / "bag", "mcap", _messages("rosbags"))
    with pytest.raises(BagError, match="/nope"):
        Bag(path, {"/nope": "/cam2"})


def test_missing_topic_and_wrong_type_name_the_topic(tmp_path):
    path = write_bag(tmp_path / "bag", "mcap", _messages("rosbags"))
    with Bag(path) as bag:
        with pytest.raises(BagError, match=r"no topic /camera/image_raw .*--remap"):
            bag.topic("/camera/image_raw", ("sensor_msgs/msg/Image",), "camera primary")
        with pytest.raises(BagError, match=r"/cmd .* has type trajectory_msgs/msg/JointTrajectory, expected"):
            bag.topic("/cmd", ("sensor_msgs/msg/JointState",), "joint states")


def test_a_single_storage_file_opens_like_the_directory(tmp_path):
    path = write_bag(tmp_path / "bag", "mcap", _messages("rosbags"))
    (file,) = path.glob("*.mcap")
    with Bag(file) as bag:
        assert bag.storage == "mcap" and bag.topics["/joint_states"].count == 2


def _one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text
    return text


def test_missing_bag(tmp_path):
    with pytest.raises(BagError, match="no such file") as exc:
        Bag(tmp_path / "absent")
    _one_line(exc)


def test_directory_without_metadata(tmp_path):
    with pytest.raises(BagError, match="no metadata.yaml"):
        Bag(tmp_path)


def test_unknown_storage_is_named(tmp_path):
    path = write_bag(tmp_path / "bag", "sqlite3", _messages("rosbags"))
    metadata = path / "metadata.yaml"
    metadata.write_text(metadata.read_text().replace("storage_identifier: sqlite3", "storage_identifier: hdf5"))
    with pytest.raises(BagError, match="unknown storage 'hdf5'"):
        Bag(path)


def test_unknown_file_type(tmp_path):
    (tmp_path / "recording.bag2").write_bytes(b"x")
    with pytest.raises(BagError, match="unknown storage file type '.bag2'"):
        Bag(tmp_path / "recording.bag2")


@pytest.mark.parametrize("storage", STORAGES)
def test_corrupt_storage_file_is_a_one_line_error(tmp_path, storage):
    path = write_bag(tmp_path / "bag", storage, _messages("rosbags"))
    (file,) = [p for p in path.iterdir() if p.name != "metadata.yaml"]
    data = file.read_bytes()
    file.write_bytes(b"\x00garbage" * 64 + data[len(data) // 2:])  # header and first half destroyed
    with pytest.raises(BagError, match=f"bag {path}") as exc:
        with Bag(path) as bag:
            list(bag.messages(bag.topics))
    _one_line(exc)


@pytest.mark.parametrize("storage", STORAGES)
def test_truncated_bag_is_a_one_line_error(tmp_path, storage):
    path = write_bag(tmp_path / "bag", storage, _messages("rosbags"))
    (file,) = [p for p in path.iterdir() if p.name != "metadata.yaml"]
    data = file.read_bytes()
    file.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(BagError) as exc:
        with Bag(path) as bag:
            list(bag.messages(bag.topics))
    _one_line(exc)


def test_missing_storage_file_is_a_one_line_error(tmp_path):
    path = write_bag(tmp_path / "bag", "mcap", _messages("rosbags"))
    shutil.copy(path / "metadata.yaml", tmp_path / "metadata.yaml")
    for file in path.glob("*.mcap"):
        file.unlink()
    with pytest.raises(BagError, match="cannot open mcap bag"):
        Bag(path)


@pytest.mark.parametrize("payload, problem", [
    (b"\x07\x07\x00\x00abcd", "not CDR"),
    (b"\x00\x01\x00\x00\xff\xff\xff\x7f", "does not deserialize"),  # a string / sequence length past the end
    (b"\x00\x01", "not CDR"),
])
def test_undecodable_payloads_raise_message_decode_error(tmp_path, payload, problem):
    with BagWriter(tmp_path / "bag", "mcap") as writer:
        writer.write_raw("/joint_states", "sensor_msgs/msg/JointState", 1.0, payload)
    with Bag(tmp_path / "bag") as bag:
        (message,) = bag.messages(["/joint_states"])
        with pytest.raises(MessageDecodeError, match=problem):
            bag.decode(message)


def test_corruption_inside_an_mcap_chunk_is_a_one_line_error(tmp_path):
    messages = [("/js", 1 + i * 0.01, joint_state_msg(1 + i * 0.01, ["a"], [float(i)])) for i in range(200)]
    path = write_bag(tmp_path / "bag", "mcap", messages)
    (file,) = path.glob("*.mcap")
    data = bytearray(file.read_bytes())
    data[len(data) // 3: len(data) // 3 + 400] = b"\xab" * 400  # header, footer and index intact
    file.write_bytes(bytes(data))
    with pytest.raises(BagError, match="corrupt mcap data") as exc:
        with Bag(path) as bag:
            list(bag.messages(bag.topics))
    _one_line(exc)


def test_a_bag_without_embedded_definitions_decodes_with_the_jazzy_types(tmp_path):
    """Older recorders (Humble sqlite3 bags) store no message definitions; replay falls back to ROS 2 Jazzy's."""
    import sqlite3

    path = write_bag(tmp_path / "bag", "sqlite3", _messages("rclpy"))
    (database,) = path.glob("*.db3")
    with sqlite3.connect(database) as connection:
        connection.execute("DELETE FROM message_definitions")
    with Bag(path) as bag:
        message = next(iter(bag.messages(["/joint_states"])))
        np.testing.assert_array_equal(bag.decode(message).position, [0.5, -0.25])
        assert bag.can_decode("sensor_msgs/msg/Image")


def test_types_missing_from_a_bag_with_other_definitions_come_from_jazzy(tmp_path):
    import sqlite3

    path = write_bag(tmp_path / "bag", "sqlite3", _messages("rosbags"))
    (database,) = path.glob("*.db3")
    with sqlite3.connect(database) as connection:
        connection.execute("DELETE FROM message_definitions WHERE topic_type = 'sensor_msgs/msg/JointState'")
    with Bag(path) as bag:
        message = next(iter(bag.messages(["/joint_states"])))
        np.testing.assert_array_equal(bag.decode(message).position, [0.5, -0.25])
