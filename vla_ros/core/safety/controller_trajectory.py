"""What a trajectory controller (ros2_control's JointTrajectoryController) is sent after each filter command, so that
what it executes is the motion the filter checked, whatever the spacing of the calls.

A one-point trajectory reaching each command one control period later asks the controller for the distance the
filter covered over the real call interval in one period: late calls (a hold timer, jitter, a stall) became
proportionally faster motion, and a stall left it holding at speed. Instead the controller runs the filter's own
trajectory `delay` seconds late (SafetyConfig.controller_delay_periods control periods), and each message carries:
  - the filter's commands of the last `delay` seconds and the new one, as points (position, velocity, acceleration)
    at `time_from_start` = (command time - new command time) + delay;
  - then the time-optimal stop from the new command, sampled at its breakpoints, ending at rest.
Consecutive messages overlap on the same timeline, so the controller's switch from one to the next is seamless as
long as each arrives within `delay` of the previous one; when none arrives it completes the stop within the limits
and ends at rest (a JointTrajectoryController rejects trajectories ending with a non-zero velocity). The filter keeps
its side of this promise: a call later than `delay` first brakes for the excess (filter.py).

Between two breakpoints (of the stop, or of a command's piece: the filter keeps them, see SafetyFilter._piece) every
joint moves along one cubic, which the controller's quintic interpolation through (position, velocity, acceleration)
reproduces exactly: the stop is sent at all of its breakpoints. A tracking piece has dozens (short jerk pulses near
its ends, per joint), so its points are thinned once, when it is committed (`thin_piece`): a point is left out only
where the quintic the controller will draw through its neighbours stays within 1e-5 rad (m) of the filter's
trajectory at every dropped point and within the velocity and acceleration limits over the whole segment
(accelerations in closed form, velocities sampled with the slack the acceleration allows), with a bounded number of
checks per piece (MAX_THIN_CHECKS; past it, unchecked stretches keep every breakpoint). The commands' own points are
always kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vla_ros.core.safety.braking import stop_breakpoints, stop_samples

# Segment checks per piece (~80-100 us each here). The median piece needs 2-3; a piece that keeps most of its ~28
# breakpoints needed up to ~40 (2-4 ms, the slowest 1 % of control ticks). Past this bound the piece's unchecked
# stretches are sent whole: ~0.5 more points per piece on average, thinning p99 1.9 -> 0.5 ms (captured pieces of
# `bench safety`'s Franka stream).
MAX_THIN_CHECKS = 4
# Points closer than this in time are merged: the controller takes time_from_start in nanoseconds, strictly increasing.
_MIN_SPACING = 1e-6


@dataclass(frozen=True)
class ControllerTrajectory:
    """Points for the controller after the command stamped `stamp`: times (K,) in seconds after that stamp,
    positions / velocities / accelerations (K, nq) in robot.joint_names order. The last point is at rest."""

    stamp: float
    times: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray
    accelerations: np.ndarray


def controller_trajectory(stamp: float, recent: list[tuple[float, list, list, list]], delay: float,
                          acceleration: list[float], jerk: list[float]) -> ControllerTrajectory:
    """`recent`: the filter's commands of the current segment and the points kept inside their pieces (see
    `thin_piece`), oldest first, as (timeline time, p, v, a); the last is the command stamped `stamp`. Limits per
    joint (robot.joint_names order)."""
    now, p, v, a = recent[-1]
    rows = [(t - now + delay, q, qd, qdd) for t, q, qd, qdd in recent[:-1] if t - now + delay > _MIN_SPACING]
    rows.append((delay, p, v, a))
    breaks = stop_breakpoints(v, a, acceleration, jerk)
    if breaks:
        dx, vs, acc = stop_samples(v, a, acceleration, jerk, breaks)
        base = np.asarray(p)
        for tau, d, vel, ac in zip(breaks, dx, vs, acc):
            if tau > _MIN_SPACING:
                rows.append((delay + tau, base + d, vel, ac))
    kept = [rows[0]]
    for row in rows[1:]:
        if row[0] - kept[-1][0] > _MIN_SPACING:
            kept.append(row)
        elif row is rows[-1]:  # the final rest point wins over a point just before it
            kept[-1] = row
    times, positions, velocities, accelerations = (np.array(x) for x in zip(*kept))
    # The stop ends at rest, but its sampled end (or a held command, whose stop is shorter than _MIN_SPACING) carries
    # rounding residues (~1e-18 rad/s, ~1e-11 rad/s^2); a JTC refuses a last point moving by more than float epsilon.
    velocities[-1] = accelerations[-1] = 0.0
    return ControllerTrajectory(stamp, times, positions, velocities, accelerations)


def thin_piece(points: list[tuple[float, list, list, list]], velocity, acceleration, tolerance: float = 1e-5,
               max_checks: int | None = MAX_THIN_CHECKS) -> list[tuple[float, list, list, list]]:
    """The points of one command's piece (start, breakpoints inside, end) worth sending: `thin` with both ends kept.
    Done once per piece when it is committed, so every message carries the same points for it and the controller's
    switch from one message to the next lands on the same curve."""
    times, positions, velocities, accelerations = (np.array(x) for x in zip(*points))
    keep = thin(times, positions, velocities, accelerations, np.asarray(velocity), np.asarray(acceleration),
                tolerance, must_keep=(0, len(points) - 1), max_checks=max_checks)
    return [points[k] for k in keep]


# The quintic Hermite basis on u in [0, 1] (what a JointTrajectoryController interpolates between two points,
# joint_trajectory_controller/trajectory.cpp): x(u) = sum_k H_k(u) d_k with d = (p0, v0 h, a0 h^2, p1, v1 h, a1 h^2).
# Rows: H_0..H_5, columns: coefficients of u^0..u^5.
_HERMITE = np.array([[1, 0, 0, -10, 15, -6], [0, 1, 0, -6, 8, -3], [0, 0, 0.5, -1.5, 1.5, -0.5],
                     [0, 0, 0, 10, -15, 6], [0, 0, 0, -4, 7, -3], [0, 0, 0, 0.5, -1, 0.5]], dtype=float)
_GRID = np.linspace(0.0, 1.0, 17)  # where velocity, acceleration and jerk are evaluated (plus rigorous slack)


def _basis(u: np.ndarray, order: int) -> np.ndarray:
    """(len(u), 6): the order-th u-derivative of each basis function at u."""
    coefficients = _HERMITE.copy()
    for _ in range(order):
        coefficients = coefficients[:, 1:] * np.arange(1, coefficients.shape[1])
    return np.vander(u, coefficients.shape[1], increasing=True) @ coefficients.T


# Velocity, acceleration and jerk (u-derivatives 1-3) on the grid, stacked: one product per segment; the 4th
# derivative at both ends last.
_GRID_BASIS = np.vstack([_basis(_GRID, order) for order in (1, 2, 3)] + [_basis(np.array([0.0, 1.0]), 4)])
_POWERS = np.arange(6)


def _segment_fits(times, positions, velocities, accelerations, i: int, j: int, vmax, amax, tolerance):
    """(does the quintic through points i and j stay within `tolerance` of every point between them and within the
    limits over [t_i, t_j]?, the point between them farthest from it, or None). Velocity, acceleration and jerk on a
    grid; between grid points each moves by at most the next derivative's bound times half the spacing, and the 4th
    derivative, linear, is bounded by its ends: a bound, not a sample. Few, larger numpy calls: this runs per
    control tick."""
    h = times[j] - times[i]
    if not h > 0.0:  # coincident points (timeline rounding): nothing between them to draw
        return True, None
    data = np.empty((6, positions.shape[1]))
    data[0], data[1], data[2] = positions[i], velocities[i] * h, accelerations[i] * (h * h)
    data[3], data[4], data[5] = positions[j], velocities[j] * h, accelerations[j] * (h * h)
    worst = None
    if j > i + 1:
        u = (times[i + 1:j] - times[i]) / h
        deviation = np.abs((u[:, None] ** _POWERS) @ (_HERMITE.T @ data) - positions[i + 1:j]).max(axis=1)
        worst = i + 1 + int(np.argmax(deviation))
        if deviation[worst - i - 1] > tolerance:
            return False, worst
    n = len(_GRID)
    peaks = np.abs(_GRID_BASIS @ data)
    velocity, acceleration, jerk = (peaks[k * n:(k + 1) * n].max(axis=0) for k in range(3))
    half = 0.5 / (n - 1)  # half the grid spacing, in u
    jerk += np.maximum(peaks[-2], peaks[-1]) * half
    acceleration = (acceleration + jerk * half) / (h * h)
    velocity = velocity / h + acceleration * h * half
    fits = bool((acceleration <= amax * (1.0 + 1e-9)).all() and (velocity <= vmax * (1.0 + 1e-9)).all())
    return fits, worst


def thin(times, positions, velocities, accelerations, vmax, amax, tolerance: float, must_keep=(),
         max_checks: int | None = None) -> list[int]:
    """Indices of the points to send (see the module docstring): recursive splitting, like Douglas-Peucker, of each
    stretch between two kept points at its farthest point (or its middle one) until every segment fits; consecutive
    points of the exact representation always fit (their quintic is the cubic between them). After `max_checks`
    segment checks (None: no bound) the stretches not yet checked keep all their points: exact, and cheaper to send
    than to thin."""
    anchors = sorted(set(must_keep))
    keep = set(anchors)
    stack = list(zip(anchors, anchors[1:]))
    checks = 0
    while stack:
        i, j = stack.pop()
        if j <= i + 1:
            continue
        if checks == max_checks:
            keep.update(range(i + 1, j))
            continue
        checks += 1
        fits, worst = _segment_fits(times, positions, velocities, accelerations, i, j, vmax, amax, tolerance)
        if fits:
            continue
        split = worst if worst is not None else (i + j) // 2
        keep.add(split)
        stack += [(i, split), (split, j)]
    return sorted(keep)
