"""The direct bag reader (mmap / zero-copy mcap, stdlib sqlite3) against rosbags' AnyReader, which replay used before
it: the same topics, times, messages in the same order, decoded values, and replays identical to the last bit."""

from __future__ import annotations

import numpy as np
import pytest
from bag_helpers import (BagWriter, float_array_msg, image_msg, joint_group_msg, joint_state_msg, pattern_image,
                         scenario_messages, string_msg, trajectory_msg, write_bag)

from vla_ros.core.executor import ExecutorConfig
from vla_ros.core.policies.playback import PlaybackPolicy
from vla_ros.core.replay.bag import Bag
from vla_ros.core.replay.messages import image_rgb
from vla_ros.core.replay.run import ReplayOptions, read_actions, run_replay
from vla_ros.core.types import ActionSpace

START = 100.0
ACTIONS_TOPIC = "/vla_ros/actions"


def _bag(path, storage: str, flavor: str):
    """Every kind of topic replay reads, a latched instruction, Interbotix types the bag defines itself, and several
    messages sharing one log time (their order must survive)."""
    frame = pattern_image(4, 6, seed=3)
    with BagWriter(path, storage) as writer:
        writer.connection("/instruction", "std_msgs/msg/String", latched=True)
        writer.write("/instruction", 1.0, string_msg("stack the cups", flavor=flavor))
        for k in range(30):
            t = 1.0 + 0.01 * (k // 3)  # three messages per log time
            writer.write("/cam", t, image_msg(t, frame, flavor=flavor))
            writer.write("/joint_states", t, joint_state_msg(t, ["a", "b"], [0.1 * k, -0.1 * k], flavor=flavor))
            writer.write("/cmd", t, trajectory_msg(["a", "b"], [0.01 * k, 0.02], 0.02, flavor=flavor))
            writer.write("/group", t, joint_group_msg("arm", [0.5, -0.25 * k]))
    return path


def _contents(bag: Bag) -> dict:
    messages = list(bag.messages(bag.topics))
    return {
        "topics": bag.topics, "times": (bag.start_time, bag.end_time, bag.duration, bag.message_count),
        "decodable": {t.msgtype: bag.can_decode(t.msgtype) for t in bag.topics.values()},
        "messages": [(m.topic, m.msgtype, m.log_time_ns, bytes(m.raw)) for m in messages],
        "decoded": [repr(bag.decode(m)) for m in messages],
        "trailing": bag.messages_with_trailing_bytes,
    }


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
@pytest.mark.parametrize("flavor", ["rosbags", "rclpy"])
def test_the_direct_reader_reads_what_rosbags_reads(tmp_path, storage, flavor):
    path = _bag(tmp_path / "bag", storage, flavor)
    with Bag(path) as direct, Bag(path, reader="rosbags") as rosbags:
        assert (direct.reader, rosbags.reader) == ("direct", "rosbags")
        expected = _contents(rosbags)
        assert _contents(direct) == expected
    assert expected["topics"]["/instruction"].latched and not expected["topics"]["/cam"].latched
    assert len(expected["messages"]) == 121 and expected["decodable"]["interbotix_xs_msgs/msg/JointGroupCommand"]


@pytest.mark.parametrize("compression", ["ZSTD", "LZ4"])
def test_compressed_mcap_chunks(tmp_path, compression):
    """rosbag2's mcap writer compresses chunks (zstd by default): the same bag rewritten with compressed chunks."""
    from mcap.reader import make_reader
    from mcap.writer import CompressionType, Writer

    path = _bag(tmp_path / "bag", "mcap", "rclpy")
    (file,) = path.glob("*.mcap")
    with file.open("rb") as handle:
        reader = make_reader(handle)
        summary = reader.get_summary()
        messages = [(channel.id, message) for _, channel, message in reader.iter_messages(log_time_order=False)]
    with file.open("wb") as handle:
        writer = Writer(handle, chunk_size=4096, compression=getattr(CompressionType, compression))
        writer.start(profile="ros2")
        schemas = {i: writer.register_schema(s.name, s.encoding, s.data) for i, s in summary.schemas.items()}
        channels = {i: writer.register_channel(c.topic, c.message_encoding, schemas[c.schema_id], c.metadata)
                    for i, c in summary.channels.items()}
        for channel, message in messages:
            writer.add_message(channels[channel], message.log_time, message.data, message.publish_time,
                               message.sequence)
        writer.finish()
    with file.open("rb") as handle:
        chunks = make_reader(handle).get_summary().chunk_indexes
    assert len(chunks) > 3 and {c.compression for c in chunks} == {compression.lower()}
    with Bag(path) as direct, Bag(path, reader="rosbags") as rosbags:
        assert direct.reader == "direct"
        assert _contents(direct) == _contents(rosbags)


def test_a_single_storage_file_is_read_by_rosbags(tmp_path):
    path = _bag(tmp_path / "bag", "mcap", "rosbags")
    (file,) = path.glob("*.mcap")
    with Bag(file) as bag:
        assert bag.reader == "rosbags" and bag.topics["/cam"].count == 30


def test_a_frame_is_a_read_only_view_that_outlives_the_bag(tmp_path):
    path = _bag(tmp_path / "bag", "mcap", "rosbags")
    with Bag(path) as bag:
        message = next(bag.messages(["/cam"]))
        pixels = image_rgb(bag.decode(message), message.msgtype, "cam")
        assert not pixels.flags.writeable  # the policy cannot write into the bag
    np.testing.assert_array_equal(pixels, pattern_image(4, 6, seed=3))  # still valid after close


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_replays_are_identical_with_either_reader(tmp_path, franka, storage):
    """Replay results do not depend on the reader: the chain sees the same messages in the same order."""
    messages = scenario_messages(franka, duration=1.5, start=START)
    times = START + np.arange(20) * 0.1
    messages += [(ACTIONS_TOPIC, t, float_array_msg([0.003 * np.sin(3 * t), 0, 0.001, 0, 0, 0.01, float(t > 100.8)]))
                 for t in times]
    controller = franka.controllers[0]
    messages += [(controller.topic, START + k * 0.02,
                  trajectory_msg(controller.joints, franka.arm("arm").home + 0.01 * np.sin(k / 10), 0.02))
                 for k in range(76)]
    path = write_bag(tmp_path / "bag", storage, messages)
    space = ActionSpace("ee_delta")
    records = []
    for reader in ("direct", "rosbags"):
        with Bag(path, reader=reader) as bag:
            action_times, actions, _ = read_actions(bag, ACTIONS_TOPIC, space.dim)
            policy = PlaybackPolicy(actions, action_times, space, horizon=10)
            config = ExecutorConfig(control_dt=1.0 / franka.control_rate_hz)
            records.append(run_replay(bag, franka, policy, config,
                                      ReplayOptions(latency=0.05, jitter=0.02, actions_topic=ACTIONS_TOPIC)))
    direct, rosbags = records
    for field in ("times", "commanded", "measured", "actions"):
        np.testing.assert_array_equal(getattr(direct, field), getattr(rosbags, field))
    for field in ("holds", "safety_states", "interventions", "ik_flags", "executor_stats", "skipped", "notes"):
        assert getattr(direct, field) == getattr(rosbags, field)
    assert [(i.requested_at, i.observation_stamp, i.simulated_latency) for i in direct.inferences] == \
        [(i.requested_at, i.observation_stamp, i.simulated_latency) for i in rosbags.inferences]
    assert {j: (t.tolist(), v.tolist()) for j, (t, v) in direct.recorded.items()} == \
        {j: (t.tolist(), v.tolist()) for j, (t, v) in rosbags.recorded.items()}
    assert np.isfinite(direct.commanded).any() and direct.executor_stats["accepted_chunks"] > 0
