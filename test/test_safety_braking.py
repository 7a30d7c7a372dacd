"""The closed-form time-optimal stop (core.safety.braking) against Ruckig's own profile, and its basic properties."""

from __future__ import annotations

import numpy as np
import pytest
import ruckig

from vla_ros.core.safety.braking import stop_breakpoints, stop_duration, stop_extent, stop_samples, stop_state


def _ruckig_stop(v: float, a: float, A: float, J: float) -> ruckig.Trajectory:
    otg, inp, trajectory = ruckig.Ruckig(1), ruckig.InputParameter(1), ruckig.Trajectory(1)
    inp.control_interface = ruckig.ControlInterface.Velocity
    inp.current_position, inp.current_velocity, inp.current_acceleration = [0.0], [v], [a]
    inp.target_velocity, inp.target_acceleration = [0.0], [0.0]
    inp.max_velocity, inp.max_acceleration, inp.max_jerk = [100.0], [A], [J]
    assert otg.calculate(inp, trajectory) == ruckig.Result.Working
    return trajectory


def _states(count: int, seed: int):
    """Random states from which a stop never exceeds the velocity limit V (as the filter keeps them)."""
    rng = np.random.default_rng(seed)
    A, J, V = rng.uniform(1, 20, count), rng.uniform(10, 8000, count), rng.uniform(0.2, 3.5, count)
    a = rng.uniform(-1, 1, count) * A
    v = rng.uniform(-1, 1, count) * V
    v = np.clip(v, -V + np.minimum(a, 0) ** 2 / (2 * J), V - np.maximum(a, 0) ** 2 / (2 * J))
    # Edge cases: at rest, exactly on the switching curve, at the acceleration limit.
    v[:3], a[:3] = [0.0, A[1] ** 2 / (2 * J[1]), 0.5], [0.0, -A[1], A[2]]
    return v, a, A, J


def test_stop_matches_ruckig_time_optimal_stop():
    v, a, A, J = _states(300, seed=1)
    rest, high, low = stop_extent(v, a, A, J)
    duration, peak = stop_duration(v, a, A, J)
    rng = np.random.default_rng(2)
    for i in range(len(v)):
        trajectory = _ruckig_stop(v[i], a[i], A[i], J[i])
        extrema = trajectory.position_extrema[0]
        assert duration[i] == pytest.approx(trajectory.duration, abs=1e-9)
        times = np.linspace(0, trajectory.duration, 200)
        sampled = max(abs(trajectory.at_time(t)[2][0]) for t in times)  # within jerk * spacing of the peak
        assert sampled - 1e-9 <= peak[i] <= sampled + J[i] * (times[1] - times[0]) + 1e-9
        assert rest[i] == pytest.approx(trajectory.at_time(trajectory.duration)[0][0], abs=1e-10)
        assert high[i] == pytest.approx(extrema.max, abs=1e-10)
        assert low[i] == pytest.approx(extrema.min, abs=1e-10)
        t = float(rng.uniform(0, trajectory.duration))
        position, velocity, acceleration = trajectory.at_time(t)
        dx, vel, acc = stop_state([v[i]], [a[i]], [A[i]], [J[i]], t)
        assert (dx[0], vel[0], acc[0]) == pytest.approx((position[0], velocity[0], acceleration[0]), abs=1e-9)


def test_stop_state_is_exactly_at_rest_after_the_stop_and_per_joint_times_work():
    v, a, A, J = _states(50, seed=3)
    duration, _ = stop_duration(v, a, A, J)
    rest, _, _ = stop_extent(v, a, A, J)
    dx, vel, acc = stop_state(v, a, A, J, [d + 1e-3 for d in duration])
    assert vel == [0.0] * 50 and acc == [0.0] * 50
    np.testing.assert_allclose(dx, rest, atol=1e-12)
    dx_late, _, _ = stop_state(v, a, A, J, 10.0)  # a long time: still the rest point, never further
    np.testing.assert_allclose(dx_late, rest, atol=1e-12)


def test_stop_never_exceeds_the_acceleration_limit_and_is_continuous():
    v, a, A, J = _states(40, seed=4)
    times = np.linspace(0, max(stop_duration(v, a, A, J)[0]), 400)
    samples = np.array([stop_state(v, a, A, J, float(t)) for t in times])  # (T, 3, n)
    assert np.all(np.abs(samples[:, 2]) <= np.maximum(A, np.abs(a)) + 1e-9)
    # Velocity is the derivative of the displacement: central differences agree within jerk * dt^2 / 6.
    dt = times[1] - times[0]
    central = (samples[2:, 0] - samples[:-2, 0]) / (2 * dt)
    assert np.all(np.abs(central - samples[1:-1, 1]) <= J * dt**2 / 6 + 1e-9)


def test_samples_of_the_stop_are_its_states_at_those_times():
    v, a, A, J = _states(10, seed=5)
    times = [0.0, 0.01, 0.05, 0.2, 3.0]
    dx, vel, acc = stop_samples(v, a, A, J, times)
    for k, t in enumerate(times):
        state = stop_state(v, a, A, J, t)
        np.testing.assert_allclose(dx[k], state[0], atol=1e-15)
        np.testing.assert_array_equal(vel[k] == 0, np.asarray(state[1]) == 0)
        np.testing.assert_allclose(vel[k], state[1], atol=1e-15)
        np.testing.assert_allclose(acc[k], state[2], atol=1e-12)


def test_quintic_interpolation_between_breakpoints_reproduces_the_stop_exactly():
    """What a JointTrajectoryController does with the stop sampled at its breakpoints (position, velocity and
    acceleration at each): each piece is a cubic, so the quintic through its end states is the stop itself."""
    v, a, A, J = _states(12, seed=6)
    knots = [0.0] + stop_breakpoints(v, a, A, J)
    assert knots[-1] == pytest.approx(max(stop_duration(v, a, A, J)[0]))
    x, vel, acc = stop_samples(v, a, A, J, knots)
    for k in range(len(knots) - 1):
        t0, t1 = knots[k], knots[k + 1]
        inner = np.linspace(t0, t1, 7)[1:-1]
        expected, _, _ = stop_samples(v, a, A, J, inner)
        h, s = t1 - t0, (inner - t0)[:, None]
        # quintic Hermite through (x, v, a) at both ends, as joint_trajectory_controller's interpolate_between_points
        c3 = (20 * (x[k + 1] - x[k]) - (8 * vel[k + 1] + 12 * vel[k]) * h - (3 * acc[k] - acc[k + 1]) * h**2) / (2 * h**3)
        c4 = (30 * (x[k] - x[k + 1]) + (14 * vel[k + 1] + 16 * vel[k]) * h + (3 * acc[k] - 2 * acc[k + 1]) * h**2) / (
            2 * h**4)
        c5 = (12 * (x[k + 1] - x[k]) - 6 * (vel[k + 1] + vel[k]) * h - (acc[k] - acc[k + 1]) * h**2) / (2 * h**5)
        quintic = x[k] + vel[k] * s + acc[k] / 2 * s**2 + c3 * s**3 + c4 * s**4 + c5 * s**5
        np.testing.assert_allclose(quintic, expected, atol=1e-9)
    assert not vel[-1].any() and not acc[-1].any()
