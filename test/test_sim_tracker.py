"""JointTracker: the simulated joints' lag, speed / acceleration limits, position limits, hold, delay and noise."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_ros.core.robot import load_robot
from vla_ros.core.sim.tracker import JointCommandError, JointTracker, TrackerConfig


@pytest.fixture(scope="module")
def widowx():
    return load_robot("widowx")


def run(tracker, start: float, stop: float, dt: float = 0.001):
    """(times, q, qd) of the true state sampled every dt from start (exclusive) to stop."""
    times = start + dt * np.arange(1, int(round((stop - start) / dt)) + 1)
    q, qd = [], []
    for t in times:
        tracker.step(t)
        q.append(tracker.state[0])
        qd.append(tracker.state[1])
    return times, np.array(q), np.array(qd)


@pytest.mark.parametrize("time_constant", [0.05, 0.1])
def test_small_step_follows_the_configured_first_order_lag(franka, time_constant):
    tracker = JointTracker(franka, TrackerConfig(time_constant=time_constant))
    step = 0.005  # small enough that neither the speed nor the acceleration limit matters much
    target = franka.home.copy()
    target[0] += step
    tracker.command(target, 0.0)
    times, q, _ = run(tracker, 0.0, 10 * time_constant)
    remaining = (target[0] - q[:, 0]) / step
    for multiple in (1, 2, 3):
        k = np.argmin(np.abs(times - multiple * time_constant))
        assert remaining[k] == pytest.approx(np.exp(-multiple), abs=0.04)
    assert abs(remaining[-1]) < 1e-3
    np.testing.assert_allclose(q[:, 1:], np.tile(franka.home[1:], (len(times), 1)), atol=1e-12)


@settings(max_examples=25)
@given(targets=st.lists(st.lists(st.floats(0.0, 1.0), min_size=8, max_size=8), min_size=1, max_size=4),
       gaps=st.lists(st.floats(0.02, 0.6), min_size=4, max_size=4), dt=st.sampled_from([0.001, 0.004, 0.02]))
def test_never_exceeds_velocity_acceleration_or_position_limits(franka, targets, gaps, dt):
    limits = franka.limits
    span = limits.upper - limits.lower
    tracker = JointTracker(franka)
    now = 0.0
    previous_qd = np.zeros(franka.nq)
    for fractions, gap in zip(targets, gaps):
        # Targets anywhere in, and up to 20 % beyond, the limits: the servo must clip them.
        tracker.command(limits.lower - 0.2 * span + 1.4 * span * np.array(fractions), now)
        for t in now + dt * np.arange(1, int(gap / dt) + 1):
            tracker.step(t)
            q, qd = tracker.state
            assert np.all(q >= limits.lower) and np.all(q <= limits.upper)
            assert np.all(np.abs(qd) <= limits.velocity * (1 + 1e-9))
            assert np.all(np.abs(qd - previous_qd) <= limits.acceleration * dt * (1 + 1e-9) + 1e-12)
            previous_qd = qd
        now += int(gap / dt) * dt


def test_long_move_is_speed_limited_and_stops_on_target_without_overshoot(franka):
    tracker = JointTracker(franka)
    target = franka.home.copy()
    target[0] += 2.0  # joint 1: 2.175 rad/s, 15 rad/s^2
    tracker.command(target, 0.0)
    _, q, qd = run(tracker, 0.0, 2.5)
    assert np.max(np.abs(qd[:, 0])) == pytest.approx(franka.limits.velocity[0], rel=1e-6)
    assert np.max(q[:, 0]) <= target[0] + 1e-9
    assert q[-1, 0] == pytest.approx(target[0], abs=1e-9)
    # Time-optimal bound: accelerate, cruise, brake. The lag adds little on top of it.
    v, a = franka.limits.velocity[0], franka.limits.acceleration[0]
    minimum = 2.0 / v + v / a
    arrival = 0.001 * (np.argmax(np.abs(q[:, 0] - target[0]) < 1e-3) + 1)
    assert minimum < arrival < minimum + 0.3


def test_commands_beyond_the_limits_stop_at_the_limit(franka):
    tracker = JointTracker(franka)
    tracker.command(franka.limits.upper + 1.0, 0.0)
    tracker.step(0.0)
    np.testing.assert_allclose(tracker.target, franka.limits.upper)
    run(tracker, 0.0, 6.0, dt=0.02)
    q, qd = tracker.state
    np.testing.assert_allclose(q, franka.limits.upper, atol=1e-9)
    np.testing.assert_allclose(qd, 0.0, atol=1e-9)


def test_holds_the_last_set_point_when_commands_stop(franka):
    tracker = JointTracker(franka)
    target = franka.home + 0.3 * np.sign(np.random.default_rng(3).standard_normal(franka.nq)) * 0.05
    tracker.command(target, 0.0)
    run(tracker, 0.0, 2.0, dt=0.02)
    settled, _ = tracker.state
    _, q, qd = run(tracker, 2.0, 7.0, dt=0.05)
    np.testing.assert_allclose(q, np.tile(settled, (len(q), 1)), atol=1e-9)
    np.testing.assert_allclose(settled, target, atol=1e-6)
    assert np.max(np.abs(qd)) < 1e-6


def test_holds_the_start_pose_with_no_command_at_all(widowx):
    tracker = JointTracker(widowx)
    q, qd = tracker.step(0.0)
    q_later, qd_later = tracker.step(30.0)
    np.testing.assert_array_equal(q, widowx.home)
    np.testing.assert_array_equal(q_later, widowx.home)
    assert not qd.any() and not qd_later.any()


def test_partial_command_moves_only_the_named_joints(widowx):
    tracker = JointTracker(widowx)
    gripper = widowx.arms[0].gripper
    tracker.command([gripper.closed], 0.0, indices=[gripper.index])
    run(tracker, 0.0, 1.0, dt=0.01)
    q, _ = tracker.state
    assert q[gripper.index] == pytest.approx(gripper.closed, abs=1e-6)
    others = np.arange(widowx.nq) != gripper.index
    np.testing.assert_array_equal(q[others], widowx.home[others])


def test_result_does_not_depend_on_the_step_rate(franka):
    target = franka.home + 0.4
    a, b = JointTracker(franka), JointTracker(franka)
    a.command(target, 0.0)
    b.command(target, 0.0)
    run(a, 0.0, 0.6, dt=0.001)
    for t in (0.007, 0.02, 0.1, 0.103, 0.6):
        b.step(t)
    np.testing.assert_allclose(a.state[0], b.state[0], atol=1e-12)
    np.testing.assert_allclose(a.state[1], b.state[1], atol=1e-12)


def test_transport_delay_shifts_the_response(franka):
    delayed = JointTracker(franka, TrackerConfig(delay=0.03))
    prompt = JointTracker(franka)
    target = franka.home + 0.1
    delayed.command(target, 1.0)
    prompt.command(target, 1.03)
    _, q_delayed, _ = run(delayed, 1.0, 1.5)
    _, q_prompt, _ = run(prompt, 1.03, 1.5)
    np.testing.assert_array_equal(q_delayed[:30], np.tile(franka.home, (30, 1)))
    np.testing.assert_allclose(q_delayed[30:], q_prompt, atol=1e-12)


def test_measurement_noise_is_seeded_and_leaves_the_true_state_alone(franka):
    config = TrackerConfig(position_noise=1e-3, velocity_noise=1e-2, seed=7)
    a, b, c = JointTracker(franka, config), JointTracker(franka, config), JointTracker(franka, TrackerConfig(
        position_noise=1e-3, velocity_noise=1e-2, seed=8))
    times = np.arange(1, 2001) * 0.01
    readings_a = np.array([a.step(t)[0] for t in times])
    readings_b = np.array([b.step(t)[0] for t in times])
    readings_c = np.array([c.step(t)[0] for t in times])
    np.testing.assert_array_equal(readings_a, readings_b)
    assert not np.array_equal(readings_a, readings_c)
    interior = (franka.home > franka.limits.lower + 0.01) & (franka.home < franka.limits.upper - 0.01)
    std = (readings_a - franka.home).std(axis=0)
    np.testing.assert_allclose(std[interior], 1e-3, rtol=0.1)
    np.testing.assert_array_equal(a.state[0], franka.home)
    assert np.all(readings_a >= franka.limits.lower) and np.all(readings_a <= franka.limits.upper)


def test_clock_reset_does_not_move_the_joints(franka):
    tracker = JointTracker(franka)
    tracker.step(5.0)
    tracker.command(franka.home + 0.05, 5.0)
    tracker.step(5.1)
    before = tracker.state[0]
    tracker.step(1.0)  # the clock jumped back (sim time restarted)
    np.testing.assert_array_equal(tracker.state[0], before)
    tracker.step(1.5)
    assert not np.array_equal(tracker.state[0], before)


def test_rejects_bad_commands_naming_the_joint(franka):
    tracker = JointTracker(franka)
    bad = franka.home.copy()
    bad[3] = np.nan
    with pytest.raises(JointCommandError, match="panda_joint4"):
        tracker.command(bad, 0.0)
    with pytest.raises(JointCommandError, match="expected 8"):
        tracker.command(franka.home[:7], 0.0)
    with pytest.raises(ValueError, match="time_constant"):
        TrackerConfig(time_constant=0.0)
