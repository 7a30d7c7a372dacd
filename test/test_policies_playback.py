"""Playback policy: recorded actions come back unchanged and on their recorded times."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vla_ros.core.errors import ConfigError
from vla_ros.core.executor import ChunkExecutor, ExecutorConfig
from vla_ros.core.policies import PlaybackExhaustedError, make_policy
from vla_ros.core.policies.playback import PlaybackPolicy
from vla_ros.core.types import ActionSpace, Observation

SPACE = ActionSpace(kind="ee_delta")  # 7 columns


def recording(n=40, dt=0.02, t0=100.0, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 7)), t0 + dt * np.arange(n)


def obs(stamp: float) -> Observation:
    return Observation({}, {}, "", stamp)


def test_chunks_are_the_recorded_actions_on_their_recorded_times():
    actions, times = recording()
    policy = PlaybackPolicy(actions, times, SPACE, horizon=8)
    chunk = policy.infer(obs(times[5]))
    np.testing.assert_array_equal(chunk.actions, actions[5:13])
    assert chunk.stamp == times[5] and chunk.dt == pytest.approx(0.02)
    np.testing.assert_allclose(chunk.times(), times[5:13], atol=1e-9)
    assert chunk.info["index"] == 5 and chunk.info["times"] == times[5:13].tolist()
    # an observation between two recorded actions gets the one in force, stamped no later than the observation
    between = policy.infer(obs(times[5] + 0.015))
    assert between.info["index"] == 5 and between.stamp == times[5]
    # and before the recording starts, the recording from its first action
    assert policy.infer(obs(0.0)).info["index"] == 0


@given(st.integers(1, 12), st.integers(0, 3))
def test_replaying_tick_by_tick_reproduces_the_recording_exactly(horizon, seed):
    actions, times = recording(seed=seed)
    policy = PlaybackPolicy(actions, times, SPACE, horizon=horizon)
    replayed = np.array([policy.infer(obs(t)).actions[0] for t in times])
    np.testing.assert_array_equal(replayed, actions)


def test_a_50_hz_control_loop_never_gets_a_chunk_stamped_in_its_future():
    """10 Hz recorded actions, an async executor at 50 Hz asking for a chunk at every new 30 Hz frame."""
    actions, times = recording(n=30, dt=0.1)
    policy = PlaybackPolicy(actions, times, SPACE, horizon=10)
    executor = ChunkExecutor(ExecutorConfig(mode="async", control_dt=0.02), policy.metadata)
    for n in range(125):
        now = times[0] + 0.02 * n
        result = executor.tick(now)
        frame = times[0] + math.floor(n * 0.02 * 30 + 1e-9) / 30  # the newest camera frame
        if result.request and frame > result.request_after:
            answer = policy.infer(obs(frame))
            assert answer.stamp <= frame and answer.stamp in times
            assert executor.submit(answer, now)
    stats = executor.stats()
    assert stats.rejected_chunks == {}
    assert stats.accepted_chunks == 25 and stats.repeated_chunks > 0  # one chunk per recorded action of the 2.5 s


def test_the_end_of_the_recording():
    actions, times = recording(n=10)
    policy = PlaybackPolicy(actions, times, SPACE, horizon=4)
    tail = policy.infer(obs(times[8]))
    np.testing.assert_array_equal(tail.actions, actions[8:])
    with pytest.raises(PlaybackExhaustedError, match=r"recording ends at 100\.180 s, observation stamp is 100\.300 s"):
        policy.infer(obs(times[-1] + 0.12))


def test_uneven_recordings_need_single_step_chunks():
    actions, times = recording(n=10)
    times = times + np.random.default_rng(3).uniform(0, 0.005, 10) * (np.arange(10) % 2)
    with pytest.raises(ConfigError, match="chunks of 4 actions need even spacing"):
        PlaybackPolicy(actions, times, SPACE, horizon=4)
    policy = PlaybackPolicy(actions, times, SPACE, horizon=1)
    np.testing.assert_array_equal(policy.infer(obs(times[3])).actions, actions[3:4])
    assert policy.infer(obs(times[3])).stamp == times[3]


@pytest.mark.parametrize("actions, times, message", [
    (np.zeros((5, 6)), np.arange(5.0), r"actions: shape \(5, 6\), expected \(N > 0, 7\)"),
    (np.zeros((5, 7)), np.arange(4.0), r"times: shape \(4,\), expected \(5,\)"),
    (np.zeros((3, 7)), np.array([0.0, 1.0, 1.0]), r"times: must increase strictly; times\[2\] = 1.0 follows 1.0"),
    (np.full((2, 7), np.nan), np.arange(2.0), "must be finite"),
])
def test_bad_recordings(actions, times, message):
    with pytest.raises(ConfigError, match=message):
        PlaybackPolicy(actions, times, SPACE)


def test_from_yaml_with_an_npz_recording_or_inline_lists(tmp_path):
    actions, times = recording(n=6)
    np.savez(tmp_path / "rec.npz", actions=actions, times=times)
    space = {"kind": "ee_delta"}
    from_file = make_policy({"backend": "playback", "recording": "rec.npz", "horizon": 3, "action_space": space},
                            source=tmp_path / "playback.yaml")
    np.testing.assert_array_equal(from_file.infer(obs(times[1])).actions, actions[1:4])
    inline = make_policy({"backend": "playback", "actions": actions.tolist(), "times": times.tolist(),
                          "horizon": 3, "action_space": space})
    np.testing.assert_array_equal(inline.infer(obs(times[1])).actions, actions[1:4])
    with pytest.raises(ConfigError, match="recording: give either recording"):
        make_policy({"backend": "playback", "action_space": space})
    with pytest.raises(ConfigError, match="missing.npz: recording file not found"):
        make_policy({"backend": "playback", "recording": "missing.npz", "action_space": space},
                    source=tmp_path / "playback.yaml")
