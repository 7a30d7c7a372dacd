"""Replay through the chain: exact reproduction of recorded commands, latency effects, and bad input handling.

The recording is made by the chain itself: a bag of camera frames and joint states is replayed with a playback
policy, and the chain's commands (plus the policy's action stream) are written into a second bag, some messages
serialized by rosbags and some by rclpy. Replaying that bag with the playback policy fed from its action topic must
reproduce the recorded commands exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
from bag_helpers import (BagWriter, float_array_msg, image_msg, joint_group_msg, joint_single_msg, joint_state_msg,
                         pattern_image, scenario_messages, string_msg, trajectory_msg, write_bag)

from vla_ros.core.executor import ExecutorConfig
from vla_ros.core.policies.playback import PlaybackPolicy
from vla_ros.core.replay.bag import Bag, BagError, parse_remaps
from vla_ros.core.replay.metrics import compute_metrics
from vla_ros.core.replay.run import ReplayOptions, read_actions, run_replay
from vla_ros.core.robot import load_robot
from vla_ros.core.types import ActionSpace, GripperConvention

START_NS = 100_000_000_000  # bag time 100 s
ACTIONS_TOPIC = "/vla_ros/actions"
EE_SPACE = ActionSpace("ee_delta")


def _ee_actions(duration: float) -> tuple[np.ndarray, np.ndarray]:
    """A 10 Hz ee_delta stream; times from integer nanoseconds, as a bag stores them."""
    steps = int(duration * 10) + 10
    times = (START_NS + np.arange(steps) * 100_000_000) * 1e-9
    actions = np.zeros((steps, 7))
    actions[:, 0] = 0.004 * np.sin(3 * times)
    actions[:, 2] = 0.002
    actions[:, 6] = (np.arange(steps) > steps // 2).astype(float)
    return times, actions


def _config(robot, mode: str = "async") -> ExecutorConfig:
    return ExecutorConfig(mode=mode, control_dt=1.0 / robot.control_rate_hz)


def _replay(path, robot, policy, options=ReplayOptions(), mode="async", remaps=None):
    with Bag(path, remaps) as bag:
        record = run_replay(bag, robot, policy, _config(robot, mode), options)
    return record, compute_metrics(record)


def _record_chain(tmp_path, robot, storage: str, latency: float = 0.0, duration: float = 2.0):
    """(bag with recorded commands and actions, the number of recorded commands)."""
    base = scenario_messages(robot, duration=duration, start=START_NS * 1e-9)
    write_bag(tmp_path / "inputs", "mcap", base)
    times, actions = _ee_actions(duration)
    record, _ = _replay(tmp_path / "inputs", robot, PlaybackPolicy(actions, times, EE_SPACE, horizon=10),
                        ReplayOptions(latency=latency))
    controller = robot.controllers[0]
    index = robot.indices(controller.joints)
    extra = [(ACTIONS_TOPIC, float(t), float_array_msg(a, flavor="rclpy" if i % 2 else "rosbags"))
             for i, (t, a) in enumerate(zip(times, actions))]
    sent = np.flatnonzero(np.all(np.isfinite(record.commanded), axis=1))
    extra += [(controller.topic, float(record.times[k]), trajectory_msg(controller.joints, record.commanded[k, index],
                                                                        0.02, flavor="rclpy" if k % 3 else "rosbags"))
              for k in sent]
    return write_bag(tmp_path / f"recorded_{storage}", storage, base + extra), len(sent)


def _playback_from(path, robot):
    with Bag(path) as bag:
        times, actions, skipped = read_actions(bag, ACTIONS_TOPIC, EE_SPACE.dim)
    assert not skipped
    return PlaybackPolicy(actions, times, EE_SPACE, horizon=10)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_playback_reproduces_the_recorded_commands_exactly(tmp_path, franka, storage):
    path, sent = _record_chain(tmp_path, franka, storage)
    record, metrics = _replay(path, franka, _playback_from(path, franka), ReplayOptions(actions_topic=ACTIONS_TOPIC))
    arm = franka.arm("arm")
    assert metrics["comparison"]["available"]
    assert set(metrics["joint_rmse"]) == set(arm.joints)
    assert all(v == 0.0 for v in metrics["joint_rmse"].values())
    assert all(v == 0.0 for v in metrics["joint_max_error"].values())
    assert all(n == sent for n in metrics["comparison"]["samples"].values())
    ee = metrics["ee_error"]["arm"]
    assert ee["position_max_m"] == 0.0 and ee["orientation_max_rad"] < 1e-12
    assert "action interface" in metrics["comparison"]["uncompared_joints"]["panda_finger_joint1"]
    assert metrics["skipped"] == {}
    assert record.notes["messages_with_trailing_bytes"] > 0  # rclpy-serialized messages went through
    # The constant z column of the recorded ee_delta stream, compared as a rate, is what the chain executed.
    assert metrics["action_error"]["column_max_error"][2] < 1e-9
    assert metrics["policy_latency"]["inferences"] > 0 and metrics["executor"]["accepted_chunks"] > 0


def test_more_injected_latency_gives_larger_errors_and_more_holds(tmp_path, franka):
    path, _ = _record_chain(tmp_path, franka, "mcap", latency=0.0)
    policy = _playback_from(path, franka)
    results = [_replay(path, franka, policy, ReplayOptions(latency=latency))[1] for latency in (0.0, 0.1, 0.3)]
    errors = [np.mean(list(m["joint_rmse"].values())) for m in results]
    holds = [sum(m["holds"].values()) for m in results]
    ages = [m["policy_latency"]["observation_age_at_delivery_ms"]["mean"] for m in results]
    assert errors[0] == 0.0 < errors[1] < errors[2]
    assert holds[0] < holds[1] < holds[2]
    assert ages[0] < ages[1] < ages[2]


def test_jitter_is_reproducible_with_its_seed(tmp_path, franka):
    path = write_bag(tmp_path / "bag", "mcap", scenario_messages(franka, duration=1.5, start=START_NS * 1e-9))
    times, actions = _ee_actions(1.5)
    policy = PlaybackPolicy(actions, times, EE_SPACE, horizon=5)

    def commanded(seed):
        record, _ = _replay(path, franka, policy, ReplayOptions(latency=0.05, jitter=0.04, seed=seed))
        return record.commanded, [i.simulated_latency for i in record.inferences]

    first, again, other = commanded(1), commanded(1), commanded(2)
    np.testing.assert_array_equal(first[0], again[0])
    assert first[1] == again[1]
    assert first[1] != other[1]
    assert min(first[1]) >= 0.01 - 1e-12 and max(first[1]) <= 0.09 + 1e-12


def test_a_bag_without_recorded_commands_reports_no_comparison(tmp_path, franka):
    path = write_bag(tmp_path / "bag", "sqlite3", scenario_messages(franka, duration=1.0, start=START_NS * 1e-9))
    times, actions = _ee_actions(1.0)
    _, metrics = _replay(path, franka, PlaybackPolicy(actions, times, EE_SPACE, horizon=10))
    assert metrics["comparison"]["available"] is False
    assert metrics["joint_rmse"] is None and metrics["joint_max_error"] is None and metrics["ee_error"] is None
    assert franka.controllers[0].topic in metrics["comparison"]["reason"]
    assert metrics["commanded_ticks"] > 0  # the chain itself ran


def test_missing_camera_topic_is_named_and_a_remap_fixes_it(tmp_path, franka):
    camera = franka.cameras[0].topic
    messages = [("/usb_cam/image_raw" if topic == camera else topic, t, m)
                for topic, t, m in scenario_messages(franka, duration=1.0, start=START_NS * 1e-9)]
    path = write_bag(tmp_path / "bag", "mcap", messages)
    times, actions = _ee_actions(1.0)
    policy = PlaybackPolicy(actions, times, EE_SPACE, horizon=10)
    with pytest.raises(BagError, match=f"no topic {camera} .*camera primary.*--remap"):
        _replay(path, franka, policy)
    _, metrics = _replay(path, franka, policy, remaps=parse_remaps([f"/usb_cam/image_raw:={camera}"]))
    assert metrics["policy_latency"]["inferences"] > 0


def test_compressed_camera_topic_is_used_when_the_raw_one_is_absent(tmp_path, franka):
    from bag_helpers import compressed_image_msg

    camera = franka.cameras[0].topic
    messages = [(f"{camera}/compressed", t, compressed_image_msg(t, pattern_image(8, 8, seed=int(t * 30))))
                if topic == camera else (topic, t, m)
                for topic, t, m in scenario_messages(franka, duration=1.0, start=START_NS * 1e-9)]
    path = write_bag(tmp_path / "bag", "sqlite3", messages)
    times, actions = _ee_actions(1.0)
    record, metrics = _replay(path, franka, PlaybackPolicy(actions, times, EE_SPACE, horizon=10))
    assert record.notes["cameras"] == {"primary": f"{camera}/compressed"}
    assert metrics["policy_latency"]["inferences"] > 0 and metrics["skipped"] == {}


def test_joint_names_that_match_no_robot_joint_are_a_clear_error(tmp_path, franka):
    messages = []
    for topic, t, m in scenario_messages(franka, duration=0.5, start=START_NS * 1e-9):
        if topic == "/joint_states":
            m = joint_state_msg(t, [f"fr3_joint{i}" for i in range(1, 8)], np.zeros(7))
        messages.append((topic, t, m))
    path = write_bag(tmp_path / "bag", "mcap", messages)
    times, actions = _ee_actions(0.5)
    with pytest.raises(BagError, match=r"joint 'panda_joint1' of robot franka never appears.*fr3_joint1") as exc:
        _replay(path, franka, PlaybackPolicy(actions, times, EE_SPACE, horizon=5))
    assert "\n" not in str(exc.value)


def test_corrupt_messages_and_backward_stamps_are_counted_and_skipped(tmp_path, franka):
    start = START_NS * 1e-9
    camera = franka.cameras[0].topic
    garbage = b"\x00\x01\x00\x00\xff\xff\xff\x7f"  # a name count far past the end of the payload
    corrupted = {round(start + k * 0.1 + 0.02, 6) for k in range(20)}  # the newest joint state before 20 ticks
    messages = []
    for topic, t, message in scenario_messages(franka, duration=2.0, start=start, rclpy_every=0):
        if topic == "/joint_states" and round(t, 6) in corrupted:
            message = garbage
        elif topic == "/joint_states" and round(t, 6) == round(start + 1.04, 6):
            message = joint_state_msg(t - 0.5, franka.joint_names, franka.home)  # stamp goes back 0.5 s
        elif topic == camera and t > start + 1.0:
            message = image_msg(t - 0.5, pattern_image(8, 8, seed=1))  # older than the frames already used
        messages.append((topic, t, message))
    with BagWriter(tmp_path / "bag", "sqlite3") as writer:
        for topic, t, message in messages:
            if isinstance(message, bytes):
                writer.write_raw(topic, "sensor_msgs/msg/JointState", t, message)
            else:
                writer.write(topic, t, message)
    times, actions = _ee_actions(2.0)
    record, metrics = _replay(tmp_path / "bag", franka, PlaybackPolicy(actions, times, EE_SPACE, horizon=5))
    assert metrics["skipped"]["undecodable_message"] == 20
    assert metrics["skipped"]["joint_state_stamp_out_of_order"] == 1
    assert metrics["skipped"]["image_stamp_out_of_order"] >= 1
    assert np.all(np.isfinite(record.commanded[5:]))  # the chain kept running on the good messages


def test_instruction_changes_reach_the_policy(tmp_path, franka):
    start = START_NS * 1e-9
    messages = scenario_messages(franka, duration=1.5, start=start, instruction="open the drawer")
    messages.append(("/vla_ros/instruction", start + 0.8, string_msg("close the drawer")))
    path = write_bag(tmp_path / "bag", "mcap", messages)
    times, actions = _ee_actions(1.5)
    seen = []

    class Recording(PlaybackPolicy):
        def infer(self, observation):
            seen.append(observation.instruction)
            return super().infer(observation)

    record, _ = _replay(path, franka, Recording(actions, times, EE_SPACE, horizon=5))
    assert seen[0] == "open the drawer" and seen[-1] == "close the drawer"
    assert record.notes["instruction_source"] == "/vla_ros/instruction"


def test_aloha_joint_pos_replay_through_interbotix_commands(tmp_path):
    """Two arms, prefixed joint-state sources, four cameras, float32 Interbotix commands (so ~1e-7, not 0)."""
    robot = load_robot("aloha")
    start = START_NS * 1e-9
    base = scenario_messages(robot, duration=1.0, start=start, image_size=(4, 4))
    write_bag(tmp_path / "inputs", "mcap", base)
    space = ActionSpace("joint_pos", arms=("left", "right"), gripper=GripperConvention(), joints_per_arm=(6, 6))
    times = (START_NS + np.arange(60) * 20_000_000) * 1e-9
    actions = np.tile(np.concatenate([robot.home[robot.arm("left").index], [1.0],
                                      robot.home[robot.arm("right").index], [0.5]]), (60, 1))
    actions[:, 0] += 0.2 * np.sin(2 * (times - start))
    policy = PlaybackPolicy(actions, times, space, horizon=25)
    record, _ = _replay(tmp_path / "inputs", robot, policy, mode="sync")
    extra = []
    for k in np.flatnonzero(np.all(np.isfinite(record.commanded), axis=1)):
        t, q = float(record.times[k]), record.commanded[k]
        for controller in robot.controllers:
            index = robot.indices(controller.joints)
            if controller.interface == "interbotix_joint_group":
                extra.append((controller.topic, t, joint_group_msg(controller.command_name, q[index])))
            else:
                gripper = next(a.gripper for a in robot.arms if a.gripper and a.gripper.joint == controller.joints[0])
                command_open, command_closed = controller.command_range
                value = command_closed + gripper.opening(q[index[0]]) * (command_open - command_closed)
                extra.append((controller.topic, t, joint_single_msg(controller.command_name, value)))
    path = write_bag(tmp_path / "recorded", "sqlite3", base + extra)
    _, metrics = _replay(path, robot, policy, mode="sync")
    assert set(metrics["joint_rmse"]) == set(robot.joint_names)
    assert max(metrics["joint_max_error"].values()) < 1e-6
    assert set(metrics["ee_error"]) == {"left", "right"}
    assert all(g["agreement"] == 1.0 for g in metrics["gripper_agreement"].values())


def test_gaps_in_camera_and_joint_states_hold_like_the_live_nodes(tmp_path, franka):
    start = START_NS * 1e-9
    camera = franka.cameras[0].topic
    messages = [(topic, t, m) for topic, t, m in scenario_messages(franka, duration=3.0, start=start)
                if not (topic == camera and start + 1.0 < t < start + 2.5)  # camera silent for 1.5 s
                and not (topic == "/joint_states" and start + 0.5 < t < start + 0.8)]  # joint states silent 0.3 s
    path = write_bag(tmp_path / "bag", "mcap", messages)
    times, actions = _ee_actions(3.0)
    record, metrics = _replay(path, franka, PlaybackPolicy(actions, times, EE_SPACE, horizon=5))
    assert metrics["holds"]["joint_states_stale"] >= 5
    assert "state_stale" in metrics["interventions"]  # the safety filter's own watchdog
    requests = np.array([i.requested_at for i in record.inferences]) - start
    assert not np.any((requests > 1.0 + 0.5 + 0.02) & (requests < 2.5))  # no observation from a frame > 0.5 s old
    assert np.any(requests > 2.5)  # and inference resumes with the camera


def test_playback_of_10_hz_actions_at_50_hz_control_has_no_chunk_stamped_in_the_future(tmp_path, franka):
    """The playback policy answers with the action in force at the observation, stamped with its recorded time: never
    ahead of the control clock (the next recorded action would be up to 100 ms ahead: `future_stamp`)."""
    path = write_bag(tmp_path / "bag", "mcap", scenario_messages(franka, duration=2.0, start=START_NS * 1e-9))
    times, actions = _ee_actions(2.0)  # 10 Hz
    assert franka.control_rate_hz == 50.0
    record, metrics = _replay(path, franka, PlaybackPolicy(actions, times, EE_SPACE, horizon=10))
    executor = metrics["executor"]
    assert executor["rejected_chunks"] == {}
    assert executor["accepted_chunks"] >= 19  # a chunk for every recorded action of the 2 s
    assert executor["repeated_chunks"] > 0  # observations between two recorded actions get the same chunk again
    assert all(i.error is None for i in record.inferences)


def test_camera_frames_are_decoded_only_when_an_observation_uses_them(tmp_path, franka):
    start = START_NS * 1e-9
    camera = franka.cameras[0].topic
    garbage = b"\x00\x01\x00\x00\xff"  # CDR header, then too short for even a stamp
    with BagWriter(tmp_path / "bag", "mcap") as writer:
        for topic, t, message in sorted(scenario_messages(franka, duration=2.0, start=start), key=lambda m: m[1]):
            if topic == camera and round(t - start, 6) == 1.2:
                writer.write_raw(topic, "sensor_msgs/msg/Image", t, garbage)  # the newest frame at the 1.22 s tick
                continue
            writer.write(topic, t, message)
            if topic == camera and round(t - start, 6) == 0.5:  # superseded 3 ms later, before any tick sees it
                writer.write_raw(topic, "sensor_msgs/msg/Image", t + 0.001, garbage)
                writer.write(topic, t + 0.004, image_msg(t + 0.004, pattern_image(8, 8, seed=99)))
    times, actions = _ee_actions(2.0)
    policy = PlaybackPolicy(actions, times, EE_SPACE, horizon=10)
    record, metrics = _replay(tmp_path / "bag", franka, policy)
    frames = record.notes["camera_frames"][camera]
    assert frames["received"] == 63  # 61 frames at 30 Hz (one of them garbage), a garbage frame and its successor
    assert metrics["skipped"] == {"undecodable_message": 1}  # only the garbage frame a request looked at
    assert frames["decoded"] <= frames["stamp_read"] < frames["received"]
    # sync asks for a chunk once per executed chunk: only the frames those observations used are decoded
    record, metrics = _replay(tmp_path / "bag", franka, policy, mode="sync")
    frames = record.notes["camera_frames"][camera]
    assert frames["decoded"] == len(record.inferences) < frames["received"] // 4
