"""ChunkExecutor: the three modes on hand-checkable chunks, latency compensation, hand-over smoothness, holds,
bad chunks, resampling of per-step quantities, rotations, configuration errors and a property test."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_ros.core.config import Section, load_yaml
from vla_ros.core.errors import ConfigError
from vla_ros.core.executor import ActionAlgebra, ChunkExecutor, ExecutorConfig, blend_weight, percentile_95
from vla_ros.core.rotations import from_matrix, to_matrix
from vla_ros.core.types import ActionChunk, ActionSpace, GripperConvention, PolicyMetadata


def joints(n: int = 1, kind: str = "joint_pos", gripper: bool = False) -> ActionSpace:
    return ActionSpace(kind=kind, joints_per_arm=(n,), gripper=GripperConvention() if gripper else None)


def meta(space: ActionSpace, horizon: int, rate_hz: float, **kwargs) -> PolicyMetadata:
    return PolicyMetadata("test", space, horizon=horizon, rate_hz=rate_hz, **kwargs)


def chunk(values, stamp: float, space: ActionSpace, dt: float) -> ActionChunk:
    actions = np.asarray(values, dtype=float)
    return ActionChunk(actions.reshape(len(actions), -1), space, dt, stamp)


def quat_about_z(angle: float) -> np.ndarray:
    return from_matrix("quat", to_matrix("rpy", [0.0, 0.0, angle]))


def run(executor: ChunkExecutor, times) -> list:
    return [executor.tick(t) for t in times]


# --- sync -------------------------------------------------------------------------------------------------------
def test_sync_executes_k_steps_then_waits_for_the_next_chunk():
    space = joints(2)
    ex = ChunkExecutor(ExecutorConfig(mode="sync", control_dt=0.1, execute_steps=3), meta(space, 4, 10))
    first = ex.tick(0.0)
    assert first.hold == "startup" and first.request and first.action is None
    assert ex.submit(chunk([[0, 0], [1, 10], [2, 20], [3, 30]], 0.0, space, 0.1), now=0.05)
    out = run(ex, [0.1, 0.2, 0.3, 0.4])
    assert np.array([r.action for r in out[:3]]) == pytest.approx(np.array([[0, 0], [1, 10], [2, 20]]))
    assert not any(r.request for r in out[:3])
    waiting = out[3]
    assert waiting.hold == "awaiting_chunk" and waiting.request and waiting.request_after == 0.0
    assert waiting.action == pytest.approx(np.array([2, 20]))  # holds the last target
    # the observation for the next chunk is captured while the robot waits: its first action runs first
    assert ex.submit(chunk([[5, 50], [6, 60], [7, 70], [8, 80]], 0.4, space, 0.1), now=0.45)
    out = run(ex, [0.5, 0.6, 0.7, 0.8])
    assert np.array([r.action for r in out[:3]]) == pytest.approx(np.array([[5, 50], [6, 60], [7, 70]]))
    assert out[3].hold == "awaiting_chunk"
    stats = ex.stats()
    assert stats.holds == {"startup": 1, "awaiting_chunk": 2} and stats.underflows == 0
    assert stats.accepted_chunks == 2 and stats.latency_last == pytest.approx(0.05)


def test_sync_resumes_where_the_robot_stopped_when_the_observation_predates_the_stop():
    space = joints(1)
    ex = ChunkExecutor(ExecutorConfig(mode="sync", control_dt=0.1, execute_steps=3), meta(space, 4, 10))
    ex.tick(0.0)
    ex.submit(chunk([0, 1, 2, 3], 0.0, space, 0.1), now=0.0)
    run(ex, [0.1, 0.2, 0.3, 0.4])  # runs 0.1 .. 0.3, waits from 0.4
    # captured at 0.35, while the robot was still moving for 50 ms: the robot is half a step further on
    ex.submit(chunk([10, 20, 30, 40], 0.35, space, 0.1), now=0.45)
    out = run(ex, [0.5, 0.6])
    assert out[0].action[0] == pytest.approx(15.0)
    assert out[1].action[0] == pytest.approx(25.0)


# --- ensemble ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("coeff", [0.5, -0.5])
def test_ensemble_weights_follow_act_oldest_first(coeff):
    space = joints(1)
    ex = ChunkExecutor(ExecutorConfig(mode="ensemble", control_dt=0.1, ensemble_coeff=coeff), meta(space, 3, 10))
    assert ex.tick(0.0).request
    ex.submit(chunk([1, 2, 3], 0.0, space, 0.1), now=0.0)
    assert ex.tick(0.1).action[0] == pytest.approx(1.0)
    ex.submit(chunk([10, 20, 30], 0.2, space, 0.1), now=0.2)
    out = run(ex, [0.2, 0.3, 0.4, 0.5])
    w = math.exp(-coeff)  # weight of the newer chunk; the older one has weight 1
    assert out[0].action[0] == pytest.approx((2 + 10 * w) / (1 + w))
    assert out[1].action[0] == pytest.approx((3 + 20 * w) / (1 + w))
    assert out[2].action[0] == pytest.approx(30.0)  # the older chunk has run out
    assert out[3].hold == "underflow" and out[3].action[0] == pytest.approx(30.0)
    assert all(r.request for r in out)  # ensembling queries every tick
    # a positive coefficient favours the older chunk, a negative one the newer
    assert (out[0].action[0] < 6.0) == (coeff > 0)


# --- async ------------------------------------------------------------------------------------------------------
def async_executor(space, horizon=10, rate=50.0, **config):
    config.setdefault("control_dt", 1 / rate)
    return ChunkExecutor(ExecutorConfig(mode="async", **config), meta(space, horizon, rate,
                                                                      supports_prefix=config.get("blend") == "prefix"))


def test_async_drops_exactly_the_actions_already_in_the_past():
    space = joints(1)
    ex = async_executor(space, blend_steps=0)
    ex.tick(0.0)
    ex.submit(chunk(np.arange(10), 0.0, space, 0.02), now=0.0)
    out = run(ex, [0.02, 0.04, 0.06, 0.08])
    assert [r.action[0] for r in out] == pytest.approx([0, 1, 2, 3])
    # observation captured at 0.04 (the robot was at action 1), answered 60 ms later
    ex.submit(chunk(100 + np.arange(10), 0.04, space, 0.02), now=0.10)
    out = run(ex, [0.10, 0.12])
    assert [r.action[0] for r in out] == pytest.approx([103, 104])  # 100, 101, 102 are in the past
    assert ex.stats().latency_last == pytest.approx(0.06)


def test_async_requests_below_the_threshold_and_adapts_it_to_latency():
    space = joints(1)
    ex = async_executor(space, horizon=50, blend_steps=10, queue_threshold=0.5)
    ex.tick(0.0)
    ex.submit(chunk(np.zeros(50), 0.0, space, 0.02), now=0.0)
    requests = [r.request for r in run(ex, [0.02 * i for i in range(1, 40)])]
    # latency 0 observed: max(0.5 * 50, 0 + 10 + 1) = 25 steps. The tick commanding slot k has 50 - k slots left
    # counting its own, so slot 26 (the 27th tick) is the first with fewer than 25.
    assert ex.request_threshold_steps() == 25
    assert requests.index(True) == 26
    ex.submit(chunk(np.zeros(50), 0.5, space, 0.02), now=0.8)  # 300 ms old on arrival
    assert ex.request_threshold_steps() == 15 + 10 + 1


def test_prefix_mode_commits_the_prefix_then_switches_without_blend():
    space = joints(1)
    ex = async_executor(space, horizon=20, blend="prefix")
    ex.tick(0.0)
    ex.submit(chunk(np.arange(20), 0.0, space, 0.02), now=0.04)  # latency 40 ms -> 2 steps
    run(ex, [0.02 * i for i in range(1, 6)])  # executes actions 0..4 at 0.02 .. 0.10
    prefix = ex.prefix(0.10)
    assert prefix.stamp == 0.10 and prefix.dt == 0.02
    assert prefix.actions[:, 0] == pytest.approx([4, 5, 6])  # latency steps + 1, from the running plan
    # the backend did not honour the prefix exactly; the committed actions run regardless, then the new chunk
    ex.submit(chunk(np.r_[-1, -1, -1, 100 + np.arange(17)], 0.10, space, 0.02), now=0.12)
    out = run(ex, [0.12, 0.14, 0.16, 0.18])
    assert [r.action[0] for r in out] == pytest.approx([5, 6, 100, 101])
    assert ex.stats().prefix_overruns == 0


def test_prefix_chunk_arriving_after_its_prefix_is_crossfaded_and_counted():
    space = joints(1)
    ex = async_executor(space, horizon=20, blend="prefix", blend_steps=4, blend_jerk_budget=0.0)
    ex.tick(0.0)
    ex.submit(chunk(np.arange(20), 0.0, space, 0.02), now=0.02)  # latency 20 ms -> prefix of 2 steps
    run(ex, [0.02 * i for i in range(1, 6)])
    assert len(ex.prefix(0.10).actions) == 2
    ex.submit(chunk(np.arange(4, 24) + 1.0, 0.10, space, 0.02), now=0.18)  # 80 ms: the prefix ran out at 0.14
    first = ex.tick(0.18)
    assert first.action[0] == pytest.approx(8.0)  # the old plan: the ramp starts at the old side
    assert ex.stats().prefix_overruns == 1


def test_prefix_blend_needs_a_policy_that_supports_it():
    with pytest.raises(ConfigError, match="blend.*prefix"):
        ChunkExecutor(ExecutorConfig(mode="async", blend="prefix"), meta(joints(1), 10, 50))


def smooth_run(blend_steps: int, budget: float = 1.0):
    """Async over a smooth trajectory; every chunk carries its own offset (model disagreement).

    The synthetic policy answers from where the robot is along the trajectory (its progress, which stands still
    while the executor holds), like a policy that sees the robot.
    """
    space = joints(1)
    dt, horizon = 0.02, 50
    ex = async_executor(space, horizon=horizon, blend_steps=blend_steps, blend_jerk_budget=budget,
                        adapt_threshold=False)
    truth = lambda t: 0.5 * np.sin(1.5 * t)  # noqa: E731
    offsets = [0.0, 0.004, -0.003, 0.005, -0.004, 0.002, -0.005, 0.003, 0.0, -0.002]
    commands, pending, k, progress = [], None, 0, 0.0
    for n in range(400):
        now = n * dt
        if pending is not None and pending[0] <= now:
            ex.submit(pending[1], now)
            pending = None
        result = ex.tick(now)
        if result.request and pending is None:
            actions = truth(progress + dt * np.arange(horizon)) + offsets[k % len(offsets)]
            pending, k = (now + 0.1, chunk(actions, now, space, dt)), k + 1
        if result.running:
            commands.append(result.action[0])
            progress += dt
    in_chunk_step = np.max(np.abs(np.diff(truth(dt * np.arange(400)))))
    return np.max(np.abs(np.diff(commands))), in_chunk_step, ex.stats()


def test_crossfade_keeps_hand_over_steps_within_the_in_chunk_steps():
    blended, in_chunk, stats = smooth_run(blend_steps=10)
    switched, _, _ = smooth_run(blend_steps=0)
    assert stats.handovers >= 10 and stats.underflows == 0
    assert blended <= 1.05 * in_chunk
    assert switched > 1.3 * in_chunk  # the same chunks without a blend step at every hand-over


def test_jerk_budget_lengthens_the_ramp_and_bounds_the_boundary_jerk():
    _, _, fixed = smooth_run(blend_steps=10, budget=0.0)
    _, _, budgeted = smooth_run(blend_steps=10)
    assert budgeted.blend_steps_mean > fixed.blend_steps_mean == 10
    assert budgeted.boundary_jerk_ratio < 2.0 < fixed.boundary_jerk_ratio


@settings(max_examples=200)
@given(st.lists(st.floats(0.0, 1e9), min_size=1, max_size=80))
def test_percentile_95_is_numpys_to_the_bit(values):
    assert percentile_95(np.array(values)) == float(np.percentile(values, 95))


def test_blend_weight_is_a_smooth_s_curve():
    s = np.linspace(0, 1, 401)
    w = np.array([blend_weight(x) for x in s])
    assert w[0] == 0 and w[-1] == pytest.approx(1) and np.all(np.diff(w) >= 0)
    assert blend_weight(0.5) == pytest.approx(0.5)
    velocity = np.gradient(w, s)
    assert velocity.max() == pytest.approx(2.0, abs=1e-3) and velocity[0] == pytest.approx(0, abs=1e-3)
    jerk = np.gradient(np.gradient(velocity, s), s)
    assert np.abs(jerk[5:-5]).max() == pytest.approx(32, rel=0.05)


def test_overlapping_crossfades_sum_every_running_ramp():
    """A chunk every third tick with 0.5 s ramps: up to nine ramps run at once. With constant chunks the command is
    known in closed form: the newest chunk plus, for every running ramp k, (1 - w_k) * (previous chunk - chunk k)."""
    space = joints(1)
    ex = async_executor(space, horizon=10, rate=10.0, control_dt=0.02, blend_steps=5, blend_jerk_budget=0.0)
    values = np.random.default_rng(7).normal(size=40)
    ramps, commands, expected, k = [], [], [], 0  # ramps: (start on the motion clock, chunk before, chunk after)
    ex.tick(0.0)
    ex.submit(chunk(np.full(10, values[0]), 0.0, space, 0.1), now=0.0)
    for n in range(1, 120):
        now, tau = 0.02 * n, 0.02 * (n - 1)  # motion time: the robot started one tick late
        result = ex.tick(now)
        if n % 3 == 1 and n > 1:  # the chunk submitted last tick is handed over now
            ramps.append((tau, values[k - 1], values[k]))
        command = values[k] + sum((1 - blend_weight((tau - start) / 0.5)) * (before - after)
                                  for start, before, after in ramps)
        commands.append(result.action[0])
        expected.append(command)
        if n % 3 == 0:
            k += 1
            assert ex.submit(chunk(np.full(10, values[k]), now, space, 0.1), now=now)
    assert commands == pytest.approx(expected, abs=1e-12)
    stats = ex.stats()
    assert stats.handovers == k == 39 and stats.blend_steps_mean == 5 and stats.rejected_chunks == {}


def test_the_same_answer_again_is_a_repeat_not_a_rejection():
    space = joints(1)
    ex = async_executor(space, horizon=10)
    ex.tick(0.0)
    answer = chunk(np.arange(10.0), 0.0, space, 0.02)
    assert ex.submit(answer, now=0.0)
    assert [r.action[0] for r in run(ex, [0.02, 0.04])] == pytest.approx([0, 1])
    assert ex.submit(chunk(np.arange(10.0), 0.0, space, 0.02), now=0.05)  # e.g. playback, asked again
    assert [r.action[0] for r in run(ex, [0.06, 0.08])] == pytest.approx([2, 3])  # nothing changed
    assert not ex.submit(chunk(np.arange(10.0) + 1, 0.0, space, 0.02), now=0.09)  # same stamp, other actions
    stats = ex.stats()
    assert (stats.accepted_chunks, stats.repeated_chunks, stats.handovers) == (1, 1, 0)
    assert stats.rejected_chunks == {"out_of_order": 1}
    ex.reset(0.1)
    assert not ex.submit(answer, now=0.1)  # after a reset even the same answer is superseded
    assert ex.stats().rejected_chunks == {"out_of_order": 2}


def test_disagreement_between_overlapping_chunks_is_measured():
    space = joints(2)
    ex = async_executor(space, horizon=10)
    ex.tick(0.0)
    ex.submit(chunk(np.zeros((10, 2)), 0.0, space, 0.02), now=0.0)
    run(ex, [0.02, 0.04])
    ex.submit(chunk(np.tile([0.1, -0.3], (10, 1)), 0.02, space, 0.02), now=0.04)
    ex.tick(0.06)
    stats = ex.stats()
    assert stats.disagreement_last_per_column == pytest.approx((0.1, 0.3))
    assert stats.disagreement_last == pytest.approx(math.sqrt((0.1**2 + 0.3**2) / 2))


# --- holds and bad input ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("hold_on_underflow", [True, False])
def test_underflow_holds_the_last_target_and_is_counted(hold_on_underflow):
    space = joints(1)
    ex = async_executor(space, horizon=3, hold_on_underflow=hold_on_underflow)
    ex.tick(0.0)
    ex.submit(chunk([1, 2, 3], 0.0, space, 0.02), now=0.0)
    out = run(ex, [0.02, 0.04, 0.06, 0.08, 0.10])
    assert [r.action[0] for r in out[:3]] == pytest.approx([1, 2, 3])
    for r in out[3:]:
        assert r.hold == "underflow" and r.request
        assert (r.action[0] == pytest.approx(3)) if hold_on_underflow else (r.action is None)
    ex.submit(chunk([7, 8, 9], 0.10, space, 0.02), now=0.11)
    assert ex.tick(0.12).action[0] == pytest.approx(7)  # observation taken while holding: resumes from its first action
    run(ex, [0.14, 0.16, 0.18])
    stats = ex.stats()
    assert stats.underflows == 2 and stats.holds["underflow"] == 3


def test_delta_hold_commands_no_motion_and_keeps_the_gripper():
    space = joints(1, kind="joint_delta", gripper=True)
    ex = async_executor(space, horizon=2)
    ex.tick(0.0)
    ex.submit(chunk([[0.1, 0.0], [0.2, 1.0]], 0.0, space, 0.02), now=0.0)
    out = run(ex, [0.02, 0.04, 0.06])
    assert out[2].hold == "underflow" and out[2].action.tolist() == [0.0, 1.0]


def good_and_bad_chunks(space, dt):
    good = np.arange(10.0).reshape(10, 1)
    nan = good.copy()
    nan[3, 0] = np.nan
    other_space = joints(2)
    return [
        ("non_finite", chunk(nan, 0.05, space, dt)),
        ("shape", ActionChunk(np.zeros((10, 2)), space, dt, 0.05)),
        ("space", chunk(np.zeros((10, 2)), 0.05, other_space, dt)),
        ("stale", chunk(good, -5.0, space, dt)),
        ("dt", chunk(good, 0.05, space, 0.1)),
        ("future_stamp", chunk(good, 1.0, space, dt)),
        ("out_of_order", chunk(good, -0.01, space, dt)),
        ("type", {"actions": good}),
    ]


def test_bad_chunks_are_rejected_counted_and_the_executor_keeps_serving():
    space = joints(1)
    ex = async_executor(space, horizon=10)
    reference = async_executor(space, horizon=10)
    for e in (ex, reference):
        e.tick(0.0)
        assert e.submit(chunk(np.arange(10.0), 0.0, space, 0.02), now=0.0)
        e.tick(0.02)
    reasons = []
    for reason, bad in good_and_bad_chunks(space, 0.02):
        assert ex.submit(bad, now=0.03) is False
        reasons.append(reason)
        assert ex.stats().last_rejection.startswith("policy test: ")
    assert ex.stats().rejected_chunks == {reason: 1 for reason in reasons}
    times = [0.04, 0.06, 0.08]
    expected = np.array([r.action for r in run(reference, times)])
    assert np.array([r.action for r in run(ex, times)]) == pytest.approx(expected)


def test_chunk_with_nothing_left_to_execute_is_rejected_as_expired():
    space = joints(1)
    ex = async_executor(space, horizon=3, max_chunk_age=5.0)
    ex.tick(0.0)
    ex.submit(chunk(np.zeros(3), 0.0, space, 0.02), now=0.0)
    run(ex, [0.02 * i for i in range(1, 3)])
    ex.submit(chunk(np.ones(3), 0.02, space, 0.02), now=0.2)  # its 3 steps ended at 0.08
    ex.tick(0.2)
    assert ex.stats().rejected_chunks == {"expired": 1}


def test_bad_quaternion_is_rejected():
    space = ActionSpace(kind="ee_pose", rotation="quat")
    ex = async_executor(space, horizon=2)
    actions = np.zeros((2, space.dim))
    actions[:, 6] = 1.0
    actions[1, 3:7] = [0.0, 0.0, 0.0, 0.2]
    assert not ex.submit(ActionChunk(actions, space, 0.02, 0.0), now=0.0)
    assert ex.stats().rejected_chunks == {"quaternion": 1}


def test_reset_drops_chunks_and_refuses_answers_to_older_observations():
    space = joints(1)
    ex = async_executor(space, horizon=10)
    ex.tick(0.0)
    ex.submit(chunk(np.arange(10.0), 0.0, space, 0.02), now=0.0)
    run(ex, [0.02, 0.04])
    ex.reset(0.05)
    held = ex.tick(0.06)
    assert held.hold == "startup" and held.action[0] == 1.0 and held.request
    assert not ex.submit(chunk(np.arange(10.0), 0.05, space, 0.02), now=0.07)
    assert ex.stats().rejected_chunks == {"out_of_order": 1}


def test_clock_going_back_restarts_the_timeline_instead_of_raising():
    """A sim-time reset or a looping bag: hold, refuse answers stamped on the old clock, take the new clock's."""
    space = joints(1)
    ex = async_executor(space, horizon=10)
    ex.tick(10.0)
    ex.submit(chunk(np.arange(10.0), 10.0, space, 0.02), now=10.0)
    run(ex, [10.02, 10.04])
    held = ex.tick(0.5)  # the clock jumped back 9.5 s
    assert held.hold == "startup" and held.action is not None and held.request
    assert not ex.submit(chunk(np.arange(10.0), 10.04, space, 0.02), now=0.52)  # an answer from the old clock
    assert ex.stats().rejected_chunks == {"future_stamp": 1}
    assert ex.submit(chunk(np.arange(10.0) + 5.0, 0.5, space, 0.02), now=0.52)
    assert ex.tick(0.54).action[0] == pytest.approx(5.0)  # held meanwhile: the chunk starts where the arm stood


# --- per-step quantities and rotations --------------------------------------------------------------------------
@pytest.mark.parametrize("control_dt", [0.02, 0.03, 0.07, 0.25])
def test_deltas_are_resampled_without_double_counting(control_dt):
    space = joints(1, kind="joint_delta")
    ex = ChunkExecutor(ExecutorConfig(mode="async", control_dt=control_dt), meta(space, 4, 10))
    ex.tick(0.0)
    ex.submit(chunk([1.0, 2.0, 3.0, 4.0], 0.0, space, 0.1), now=0.0)
    ticks = [control_dt * i for i in range(1, 40)]
    commanded = [r.action[0] for r in run(ex, ticks) if r.running]
    assert sum(commanded) == pytest.approx(10.0)  # exactly the chunk's total motion
    # each tick carries the motion of the part of the slots it covers: slot i moves (i + 1) over 0.1 s
    covered = [(k * control_dt, (k + 1) * control_dt) for k in range(len(commanded))]
    expected = [sum((i + 1) * max(0.0, min(b, 0.1 * (i + 1)) - max(a, 0.1 * i)) / 0.1 for i in range(4))
                for a, b in covered]
    assert commanded == pytest.approx(expected)


def test_velocities_are_averaged_over_the_tick():
    space = joints(1, kind="joint_vel")
    ex = ChunkExecutor(ExecutorConfig(mode="async", control_dt=0.25), meta(space, 4, 10))
    ex.tick(0.0)
    ex.submit(chunk([1.0, 2.0, 3.0, 4.0], 0.0, space, 0.1), now=0.0)
    first, second = run(ex, [0.25, 0.5])
    assert first.action[0] == pytest.approx((1 * 0.1 + 2 * 0.1 + 3 * 0.05) / 0.25)
    assert second.action[0] == pytest.approx((3 * 0.05 + 4 * 0.1) / 0.25)  # the chunk ends at 0.4


def test_absolute_targets_are_interpolated_between_slots():
    space = joints(1, gripper=True)
    ex = ChunkExecutor(ExecutorConfig(mode="async", control_dt=0.04), meta(space, 3, 10))
    ex.tick(0.0)
    ex.submit(chunk([[0.0, 0.0], [1.0, 1.0], [3.0, 1.0]], 0.0, space, 0.1), now=0.0)
    out = np.array([r.action for r in run(ex, [0.04, 0.08, 0.12, 0.16])])
    assert out == pytest.approx(np.array([[0.0, 0.0], [0.4, 0.4], [0.8, 0.8], [1.4, 1.0]]))


def test_rpy_targets_interpolate_the_short_way_round():
    algebra = ActionAlgebra(ActionSpace(kind="ee_pose", rotation="rpy", gripper=None))
    values = np.array([[0, 0, 0, 0, 0, 3.1], [0, 0, 0, 0, 0, -3.1]])
    mid = algebra.interpolate(values, np.array([0.5]))[0]
    assert abs(mid[5]) == pytest.approx(math.pi, abs=1e-9)


def test_quaternion_targets_stay_unit_and_average_across_the_sign_ambiguity():
    space = ActionSpace(kind="ee_pose", rotation="quat", gripper=None)
    algebra = ActionAlgebra(space)
    q1 = quat_about_z(0.2)
    q2 = -quat_about_z(0.4)  # the same rotation as +q, from the opposite hemisphere
    samples = np.array([np.r_[0, 0, 0, q1], np.r_[0, 0, 0, q2]])
    mean = algebra.mean(samples, np.array([0.5, 0.5]))
    assert np.linalg.norm(mean[3:]) == pytest.approx(1.0)
    assert from_matrix("rpy", to_matrix("quat", mean[3:])) == pytest.approx([0, 0, 0.3], abs=1e-3)


def test_axis_angle_targets_round_trip_through_quaternions():
    space = ActionSpace(kind="ee_pose", rotation="axis_angle")
    algebra = ActionAlgebra(space)
    actions = np.array([[0.1, 0.2, 0.3, 0.5, -0.2, 0.1, 1.0], [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]])
    work = algebra.encode(actions)
    assert work.shape == (2, 8)
    assert [algebra.decode(w) for w in work] == [pytest.approx(a) for a in actions]


def test_quaternion_deltas_are_split_by_rotation_vector():
    space = ActionSpace(kind="ee_delta", rotation="quat", gripper=None)
    ex = ChunkExecutor(ExecutorConfig(mode="async", control_dt=0.05), meta(space, 1, 10))
    ex.tick(0.0)
    step = np.r_[0.02, 0, 0, quat_about_z(0.2)]
    ex.submit(ActionChunk(step[None, :], space, 0.1, 0.0), now=0.0)
    first, second = run(ex, [0.05, 0.1])
    for half in (first.action, second.action):
        assert half[:3] == pytest.approx([0.01, 0, 0])
        assert from_matrix("axis_angle", to_matrix("quat", half[3:])) == pytest.approx([0, 0, 0.1])


# --- configuration ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value", [
    ("mode", "fast"), ("control_dt", 0.0), ("control_dt", float("nan")), ("execute_steps", 0),
    ("ensemble_coeff", float("inf")), ("queue_threshold", 1.5), ("blend_steps", -1), ("blend", "mix"),
    ("max_chunk_age", -1.0), ("hold_on_underflow", "yes"), ("latency_window", 0), ("blend_jerk_budget", -1.0),
    ("max_blend_steps", 0),
])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        ExecutorConfig(**{field: value})


def test_execute_steps_beyond_the_horizon_is_refused():
    with pytest.raises(ConfigError, match="execute_steps.*horizon 4"):
        ChunkExecutor(ExecutorConfig(mode="sync", execute_steps=5), meta(joints(1), 4, 10))


def test_config_from_yaml_names_file_and_field(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"executor": {"mode": "sync", "execute_steps": 25, "control_dt": 0.02}}))
    config = ExecutorConfig.from_section(Section(load_yaml(path), path).section("executor"))
    assert (config.mode, config.execute_steps, config.blend) == ("sync", 25, "crossfade")
    path.write_text(yaml.safe_dump({"executor": {"queue_threshold": 2}}))
    with pytest.raises(ConfigError, match=r"policy\.yaml: executor\.queue_threshold: expected a fraction"):
        ExecutorConfig.from_section(Section(load_yaml(path), path).section("executor"))
    path.write_text(yaml.safe_dump({"executor": {"blend_step": 3}}))
    with pytest.raises(ConfigError, match=r"executor\.blend_step: unknown key"):
        ExecutorConfig.from_section(Section(load_yaml(path), path).section("executor"))


# --- property ---------------------------------------------------------------------------------------------------
SPACES = [joints(2, gripper=True), joints(2, kind="joint_delta"), ActionSpace(kind="ee_pose", rotation="quat"),
          ActionSpace(kind="ee_pose", rotation="rpy", gripper=None)]
HOLDS = {None, "startup", "awaiting_chunk", "underflow"}


def random_actions(space, horizon, seed, corrupt):
    rng = np.random.default_rng(seed)
    actions = rng.normal(0, 2.0, (horizon, space.dim))
    if space.is_ee and space.rotation == "quat":
        quats = rng.normal(size=(horizon, 4))
        actions[:, 3:7] = quats / np.linalg.norm(quats, axis=1, keepdims=True)
    if corrupt == "nan":
        actions[rng.integers(horizon), rng.integers(space.dim)] = np.nan
    if corrupt == "shape":
        actions = actions[:, :-1]
    return actions


@given(
    space_index=st.integers(0, len(SPACES) - 1),
    mode=st.sampled_from(["sync", "ensemble", "async"]),
    blend=st.sampled_from(["crossfade", "prefix"]),
    control_dt=st.sampled_from([0.01, 0.02, 0.033]),
    events=st.lists(st.tuples(st.sampled_from(["tick", "chunk"]), st.floats(0.0, 0.2), st.floats(0.0, 0.4),
                              st.integers(0, 2**16), st.sampled_from([None, None, None, "nan", "shape"])),
                    min_size=1, max_size=40),
)
def test_tick_output_is_always_a_finite_action_of_the_right_size_or_a_hold(space_index, mode, blend, control_dt,
                                                                          events):
    space = SPACES[space_index]
    horizon = 6
    metadata = meta(space, horizon, 25, supports_prefix=True)
    ex = ChunkExecutor(ExecutorConfig(mode=mode, control_dt=control_dt, blend=blend, execute_steps=4), metadata)
    now = 0.0
    for kind, advance, age, seed, corrupt in events:
        now += advance
        if kind == "chunk":
            actions = random_actions(space, horizon, seed, corrupt)
            ex.prefix(now - age)
            ex.submit(ActionChunk(actions, space, 1 / 25, now - age), now)
            continue
        result = ex.tick(now)
        assert result.hold in HOLDS
        if result.action is not None:
            assert result.action.shape == (space.dim,) and np.all(np.isfinite(result.action))
        assert (result.hold is None) == bool(result.sources)
