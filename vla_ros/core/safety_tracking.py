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

from dataclasses import dataclass
from math import sqrt

import numpy as np
import ruckig

# Relative slack on "the trajectory lasts one period": Ruckig's durations carry floating-point rounding.
_ON_TIME = 1e-9
# Fraction of the velocity limit a chased target may move at: the arm must be faster than the target to catch up.
_CHASE_SPEED = 0.9
_NONE = np.zeros(0, dtype=int)
_FOUND = (ruckig.Result.Working, ruckig.Result.Finished)
# Below this (rad, rad/s, rad/s^2) a joint group on a still target is at rest: Ruckig's landing leaves ~1e-17 residues.
_AT_REST = 1e-12


@dataclass
class GroupStep:
    positions: np.ndarray
    velocities: np.ndarray
    accelerations: np.ndarray
    late: np.ndarray  # local indices of joints that cannot reach the target within dt
    durations: np.ndarray  # each joint's own shortest time to its target
    error: str | None = None  # Ruckig found no trajectory: the caller brakes this group


class TrackingGroup:
    """Joints planned together (one arm, time-synchronised; or one gripper)."""

    def __init__(self, index: np.ndarray, velocity: np.ndarray, acceleration: np.ndarray, jerk: np.ndarray):
        self.index = index
        n = len(index)
        self._otg = ruckig.Ruckig(n)
        self._input = ruckig.InputParameter(n)
        self._trajectory = ruckig.Trajectory(n)
        self._velocity = velocity[index]
        self._input.max_velocity = self._velocity.tolist()
        self._input.max_acceleration = acceleration[index].tolist()
        self._input.max_jerk = jerk[index].tolist()
        self._zeros = [0.0] * n

    def step(self, p, v, a, q, vq, aq, dt: float) -> GroupStep:
        """One period from (p, v, a) (within the limits) toward target (q, vq, aq) at the commanded time + dt."""
        current, target = (p.tolist(), v.tolist(), a.tolist()), (q.tolist(), vq.tolist(), aq.tolist())
        if all(abs(x) <= _AT_REST for x in (*current[1], *current[2], *target[1], *target[2])) and all(
                abs(x - y) <= _AT_REST for x, y in zip(current[0], target[0])):
            return GroupStep(p, np.zeros_like(v), np.zeros_like(a), _NONE, _NONE)  # at rest on a still target
        inp, trajectory = self._input, self._trajectory
        inp.current_position, inp.current_velocity, inp.current_acceleration = current
        inp.target_position, inp.target_velocity, inp.target_acceleration = target
        inp.minimum_duration = dt
        deadline = dt * (1 + _ON_TIME)
        durations = np.full(len(p), np.inf)
        try:
            if self._otg.calculate(inp, trajectory) in _FOUND:
                if trajectory.duration <= deadline:
                    return GroupStep(*(np.array(x) for x in trajectory.at_time(dt)), _NONE, _NONE)
                durations = np.asarray(trajectory.independent_min_durations)
        except ruckig.RuckigError:
            pass  # a target state Ruckig cannot reach exactly (e.g. moving at the velocity limit): chase it instead
        # Chase the target in the frame moving with its velocity: there it is a fixed point, the time-optimal
        # interception is Ruckig's ordinary problem, and the velocity limits shift by that velocity.
        drift = np.minimum(np.maximum(vq, -_CHASE_SPEED * self._velocity), _CHASE_SPEED * self._velocity)
        inp.current_position = (p - q + drift * dt).tolist()
        inp.current_velocity = (v - drift).tolist()
        inp.target_position = inp.target_velocity = inp.target_acceleration = self._zeros
        inp.max_velocity = (self._velocity - drift).tolist()
        inp.min_velocity = (-self._velocity - drift).tolist()
        inp.minimum_duration = None
        try:
            result = self._otg.calculate(inp, trajectory)
        except ruckig.RuckigError as exc:
            lines = [line.split(" input:")[0] for line in str(exc).splitlines() if line.startswith("[ruckig]")]
            return self._failed(p, v, a, (lines or ["ruckig error"])[0])
        finally:
            inp.max_velocity = self._velocity.tolist()
            inp.min_velocity = None
        if result not in _FOUND:
            return self._failed(p, v, a, f"ruckig result {result.name}")
        positions, velocities, accelerations = (np.array(x) for x in trajectory.at_time(dt))
        late = np.flatnonzero(durations > deadline)
        if late.size == 0:
            # Synchronisation alone made the arm late (no profile of exactly dt exists): blame the slowest joint.
            late = np.array([int(np.argmax(durations))])
        return GroupStep(positions + q, velocities + drift, accelerations, late, durations)

    @staticmethod
    def _failed(p, v, a, message: str) -> GroupStep:
        return GroupStep(p, v, a, np.arange(len(p)), np.full(len(p), np.inf), message)


def target_rates(history: list[tuple[float, np.ndarray]], lower: list[float], upper: list[float],
                 velocity: list[float], acceleration: list[float], jerk: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Velocity and acceleration of the target stream at its newest target: those of the parabola through the last
    three targets (a line through two; zero for one). Kept only where the stream is a motion the joint could follow
    (within its velocity and acceleration limits: a jump is not) and away from the position limits; the acceleration
    is cut so the velocity limit is never overshot while it ramps to zero (|v + a|a|/2J| <= V)."""
    if len(history) < 2:
        zeros = np.zeros(len(lower))
        return zeros, zeros
    (t1, q1), (t2, q2) = history[-2:]
    q1, q2 = q1.tolist(), q2.tolist()
    q0, t0 = (history[0][1].tolist(), history[0][0]) if len(history) == 3 else (None, None)
    rates, accelerations = [], []
    for k, (q, vmax, amax, jmax) in enumerate(zip(q2, velocity, acceleration, jerk)):
        slope = (q - q1[k]) / (t2 - t1)
        curve = (slope - (q1[k] - q0[k]) / (t1 - t0)) / (t2 - t0) if q0 is not None else 0.0
        v, a = slope + curve * (t2 - t1), 2.0 * curve
        if not (abs(v) <= vmax and abs(a) <= amax and lower[k] < q < upper[k]):
            v = a = 0.0
        a = min(max(a, -sqrt(2.0 * jmax * (vmax + v))), sqrt(2.0 * jmax * (vmax - v)))
        rates.append(v)
        accelerations.append(a)
    return np.array(rates), np.array(accelerations)
