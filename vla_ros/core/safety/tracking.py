"""The filter's step toward a joint target: Ruckig's time-optimal jerk-limited trajectory, sampled one period ahead.

Each step asks Ruckig for a trajectory from the commanded state (p, v, a) to the target state that lasts at least
one period dt. If it lasts exactly dt, the target is reached on time and passes through unchanged (with velocity and
acceleration from the target stream, so a smooth target stream is reproduced exactly). If not, the target is out of
reach within the limits this period (the caller reports it): the joints chase it time-optimally in the frame moving
with the target's velocity, where it is a fixed point, so a moving target is caught up with and then passes through
again. The target stream's velocity is trusted only where the stream is a motion the joint could follow; after a
jump it is not, and the target is chased as a fixed point. Arm joints are time-synchronised, so a joint-space jump
moves the whole arm along one coordinated path; each gripper is planned on its own so it never stretches arm motion.
"""

from __future__ import annotations

import math
from itertools import chain
from math import sqrt
from typing import NamedTuple

import numpy as np
import ruckig

# Relative slack on "the trajectory lasts one period": Ruckig's durations carry floating-point rounding.
_ON_TIME = 1e-9
# Fraction of the velocity limit a chased target may move at: the arm must be faster than the target to catch up.
_CHASE_SPEED = 0.9
_FOUND = (ruckig.Result.Working, ruckig.Result.Finished)
# Below this (rad, rad/s, rad/s^2) a joint group on a still target is at rest: Ruckig's landing leaves ~1e-17 residues.
_AT_REST = 1e-12


class GroupStep(NamedTuple):
    """End state of one period of a group's step, as lists (local joint order)."""

    positions: list[float]
    velocities: list[float]
    accelerations: list[float]
    late: list[int]  # local indices of joints that cannot reach the target within dt
    durations: list[float]  # each joint's own shortest time to its target
    error: str | None = None  # Ruckig found no trajectory: the caller brakes this group


class TrackingGroup:
    """Joints planned together (one arm, time-synchronised; or one gripper).

    The filter's hot path works on Python lists (per-joint floats), so the group takes and returns lists: for 1-7
    joints, numpy's per-call overhead costs more than the arithmetic, and Ruckig reads and returns lists anyway.
    """

    def __init__(self, index: np.ndarray, velocity: np.ndarray, acceleration: np.ndarray, jerk: np.ndarray):
        self.index = [int(i) for i in index]
        n = len(self.index)
        # Contiguous joints: a slice of the filter's per-joint lists (cheaper than gathering them one by one), else None.
        first = self.index[0]
        self.span = slice(first, first + n) if self.index == list(range(first, first + n)) else None
        self._otg = ruckig.Ruckig(n)
        self._input = ruckig.InputParameter(n)
        self._trajectory = ruckig.Trajectory(n)
        self._velocity = velocity[index].tolist()
        self._chase_velocity = (_CHASE_SPEED * velocity[index]).tolist()
        self._zeros = [0.0] * n
        self._input.max_velocity = self._velocity
        # The chase (see step) has its own input: its targets are always zero, its velocity limits shifted.
        self._chase = ruckig.InputParameter(n)
        for inp in (self._input, self._chase):
            inp.max_acceleration = acceleration[index].tolist()
            inp.max_jerk = jerk[index].tolist()
        self._chase.target_position = self._chase.target_velocity = self._chase.target_acceleration = self._zeros
        # How the last step was made, to evaluate it inside the period (see `breakpoints` / `sample`):
        # ("rest", p) | ("direct", None) | ("chase", (q, drift, dt)) | ("failed", None).
        self._last: tuple = ("failed", None)

    def breakpoints(self) -> list[float]:
        """Times after the start of the last step at which some joint's jerk changes (Ruckig's phases, its braking
        pre-phases included): between two of them every joint moves along one cubic."""
        if self._last[0] not in ("direct", "chase"):
            return []
        times = []
        for profile in self._trajectory.profiles[0]:
            start = 0.0
            for duration in (*profile.brake.t, *profile.t):
                start += duration
                times.append(start)
        return times

    def sample(self, t: float) -> tuple[list[float], list[float], list[float]]:
        """(p, v, a) lists of the last step at time t after its start (0 <= t <= its period)."""
        kind, detail = self._last
        if kind == "rest":
            return detail, self._zeros, self._zeros
        positions, velocities, accelerations = self._trajectory.at_time(t)
        if kind == "chase":  # back from the frame moving with the target
            q, drift, dt = detail
            return ([x + qk + d * (t - dt) for x, qk, d in zip(positions, q, drift)],
                    [x + d for x, d in zip(velocities, drift)], accelerations)
        return positions, velocities, accelerations

    def step(self, p: list[float], v: list[float], a: list[float], q: list[float], vq: list[float], aq: list[float],
             dt: float) -> GroupStep:
        """One period from (p, v, a) (within the limits) toward target (q, vq, aq) at the commanded time + dt."""
        rest = _AT_REST
        # min / max first: a moving group fails them at once, without a generator.
        if -rest <= min(v) and max(v) <= rest and all(-rest <= x <= rest for x in chain(v, a, vq, aq)) and all(
                -rest <= x - y <= rest for x, y in zip(p, q)):
            self._last = ("rest", p)
            return GroupStep(p, self._zeros, self._zeros, [], [])  # at rest on a still target
        inp, trajectory = self._input, self._trajectory
        inp.current_position, inp.current_velocity, inp.current_acceleration = p, v, a
        inp.target_position, inp.target_velocity, inp.target_acceleration = q, vq, aq
        inp.minimum_duration = dt
        deadline = dt * (1 + _ON_TIME)
        durations = None
        try:
            if self._otg.calculate(inp, trajectory) in _FOUND:
                if trajectory.duration <= deadline:
                    self._last = ("direct", None)
                    return GroupStep(*trajectory.at_time(dt), [], [])
                durations = trajectory.independent_min_durations
        except ruckig.RuckigError:
            pass  # a target state Ruckig cannot reach exactly (e.g. moving at the velocity limit): chase it instead
        if durations is None:
            durations = [math.inf] * len(p)
        # Chase the target in the frame moving with its velocity: there it is a fixed point, the time-optimal
        # interception is Ruckig's ordinary problem, and the velocity limits shift by that velocity.
        drift = [x if -c <= x <= c else min(max(x, -c), c) for x, c in zip(vq, self._chase_velocity)]
        chase = self._chase
        chase.current_position = [(pk - qk) + d * dt for pk, qk, d in zip(p, q, drift)]
        chase.current_velocity = [vk - d for vk, d in zip(v, drift)]
        chase.current_acceleration = a
        chase.max_velocity = [limit - d for limit, d in zip(self._velocity, drift)]
        chase.min_velocity = [-limit - d for limit, d in zip(self._velocity, drift)]
        try:
            result = self._otg.calculate(chase, trajectory)
        except ruckig.RuckigError as exc:
            lines = [line.split(" input:")[0] for line in str(exc).splitlines() if line.startswith("[ruckig]")]
            return self._failed(p, v, a, (lines or ["ruckig error"])[0])
        if result not in _FOUND:
            return self._failed(p, v, a, f"ruckig result {result.name}")
        self._last = ("chase", (q, drift, dt))
        positions, velocities, accelerations = trajectory.at_time(dt)
        late = [k for k, duration in enumerate(durations) if duration > deadline]
        if not late:
            # Synchronisation alone made the arm late (no profile of exactly dt exists): blame the slowest joint (the
            # first of equally slow ones).
            late = [max(range(len(durations)), key=durations.__getitem__)]
        return GroupStep([x + qk for x, qk in zip(positions, q)], [x + d for x, d in zip(velocities, drift)],
                         accelerations, late, durations)

    def _failed(self, p, v, a, message: str) -> GroupStep:
        self._last = ("failed", None)
        return GroupStep(p, v, a, list(range(len(p))), [math.inf] * len(p), message)


def target_rates(history: list[tuple[float, list[float]]], lower: list[float], upper: list[float],
                 velocity: list[float], acceleration: list[float],
                 jerk: list[float]) -> tuple[list[float], list[float]]:
    """Velocity and acceleration of the target stream at its newest target: those of the parabola through the last
    three targets (a line through two; zero for one), as lists. Kept only where the stream is a motion the joint could
    follow (within its velocity and acceleration limits: a jump is not) and away from the position limits; the
    acceleration is cut so the velocity limit is never overshot while it ramps to zero (|v + a|a|/2J| <= V)."""
    if len(history) < 2:
        zeros = [0.0] * len(lower)
        return zeros, zeros
    (t1, q1), (t2, q2) = history[-2:]
    h21 = t2 - t1
    three = len(history) == 3  # else a line through two: no curvature (q0 is then a placeholder)
    t0, q0 = history[0] if three else (t1, q1)
    h10, h20 = t1 - t0, t2 - t0
    rates, accelerations = [], []
    for q, p, o, lo, hi, vmax, amax, jmax in zip(q2, q1, q0, lower, upper, velocity, acceleration, jerk):
        slope = (q - p) / h21
        curve = (slope - (p - o) / h10) / h20 if three else 0.0
        v, a = slope + curve * h21, 2.0 * curve
        if not (-vmax <= v <= vmax and -amax <= a <= amax and lo < q < hi):
            v = a = 0.0
        # a = min(max(a, floor), ceiling), spelled out: this runs per joint per control step.
        floor = -sqrt(2.0 * jmax * (vmax + v))
        if floor > a:
            a = floor
        ceiling = sqrt(2.0 * jmax * (vmax - v))
        if ceiling < a:
            a = ceiling
        rates.append(v)
        accelerations.append(a)
    return rates, accelerations
