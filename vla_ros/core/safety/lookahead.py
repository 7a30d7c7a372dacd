"""Joint position and velocity limits with look-ahead: a commanded state is admissible only if the time-optimal stop
from it stays inside the position range in force (and never overshoots the velocity limit while its acceleration
ramps down), so the joint can always stop in time and the stop is always available as a fallback. A step that
would leave that set is mixed with the stop (the largest admissible share, per joint).

Per joint in plain Python floats: for 6-14 joints numpy's per-call overhead costs more than the arithmetic (see
braking.py).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from vla_ros.core.robot import RobotModel
from vla_ros.core.safety.braking import stop_extent, stop_state
from vla_ros.core.safety.config import SafetyLimits
from vla_ros.core.safety.report import Intervention

POSITION_TOL = 1e-10  # m / rad: acceptance slack of the look-ahead checks (floating-point rounding only)
RATE_TOL = 1e-9  # relative slack on velocity / EE speed checks
# Regula falsi steps of the search for the largest admissible share of a step (mixed with the stop).
SEARCH_STEPS = 3


def mix(share: Sequence[float], step, stop):
    """Per joint, the convex combination share * step + (1 - share) * stop of two trajectory pieces' end states
    ((positions, velocities, accelerations) lists): the jerk profiles mixed pointwise, so the limits still hold."""
    return tuple([s * x + (1.0 - s) * y for s, x, y in zip(share, xs, ys)] for xs, ys in zip(step, stop))


class StopLookahead:
    """The position range in force (relaxed at anchoring when a joint starts outside it, see the filter) and the
    admissibility test of commanded states against it."""

    def __init__(self, robot: RobotModel, limits: SafetyLimits, arm_of: list[str | None]):
        self.robot, self.arm_of = robot, arm_of
        self.every = list(range(robot.nq))
        self.V, self.A, self.J = (x.tolist() for x in (limits.velocity, limits.acceleration, limits.jerk))
        self.V_slack = [x * (1 + RATE_TOL) for x in self.V]  # velocity limits with the rounding slack
        self.relax(limits, limits.lower)

    def set_range(self, lower: np.ndarray, upper: np.ndarray) -> None:
        self.lower, self.upper = lower, upper
        self.lower_l, self.upper_l = lower.tolist(), upper.tolist()

    def admissible(self, index: list[int], p, v, a):
        """Per candidate state (joint index[k] at p[k], v[k], a[k]): does the stop from it stay in range and under
        the velocity limit? Returns (ok, excess, (rest, high, low)) as lists: `excess` is the stop's worst position
        overshoot (<= tolerance when ok), the extent its displacement at rest, highest and lowest."""
        A, J, V, lower, upper = self.A, self.J, self.V_slack, self.lower_l, self.upper_l
        if index is not self.every:
            A, J, V, lower, upper = ([x[i] for i in index] for x in (A, J, V, lower, upper))
        extent = stop_extent(v, a, A, J)
        ok, excess = [], []
        for pk, vk, ak, high, low, Jk, Vk, lo, hi in zip(p, v, a, extent[1], extent[2], J, V, lower, upper):
            over = pk + high - hi
            under = lo - (pk + low)
            if under > over:  # max(over, under), without the call: this loop is per joint per candidate
                over = under
            ok.append(over <= POSITION_TOL and abs(vk + ak * abs(ak) / (2.0 * Jk)) <= Vk)
            excess.append(over)
        return ok, excess, extent

    def stop_from(self, state, index: list[int], dt: float):
        """End (p, v, a) of the stop over dt from `state` ((p, v, a) lists, every joint), for joints `index`."""
        p, v, a = state
        dx, vs, acc = stop_state([v[i] for i in index], [a[i] for i in index], [self.A[i] for i in index],
                                 [self.J[i] for i in index], dt)
        return [p[i] + d for i, d in zip(index, dx)], vs, acc

    def keep_stoppable(self, commanded, p, v, a, dt, events, weights: list[float]):
        """Per joint, mix the step (p, v, a) with the stop from `commanded` where the stop from the step's end would
        leave the range, multiplying the joint's `weights` entry (its share of the step) by the share kept. Returns
        (p, v, a, extent), all lists."""
        ok, excess, extent = self.admissible(self.every, p, v, a)
        if all(ok):
            return p, v, a, extent
        f = [i for i, good in enumerate(ok) if not good]
        wanted = ([p[i] for i in f], [v[i] for i in f], [a[i] for i in f])
        stop = self.stop_from(commanded, f, dt)
        shares = self._largest_shares(f, wanted, stop, [excess[i] for i in f])
        mixed = mix(shares, wanted, stop)
        p, v, a = p.copy(), v.copy(), a.copy()
        for i, x, y, z in zip(f, *mixed):
            p[i], v[i], a[i] = x, y, z
        _, _, part = self.admissible(f, *mixed)
        for whole, values in zip(extent, part):
            for i, value in zip(f, values):
                whole[i] = value
        for k, i in enumerate(f):
            weights[i] *= shares[k]
            if excess[i] > POSITION_TOL:
                limit, why = "position", f"stop within [{self.lower_l[i]:.4f}, {self.upper_l[i]:.4f}]"
            else:  # its acceleration would carry the velocity over the limit while it ramps down
                limit, why = "velocity", f"stay under {self.V[i]:g}"
            events.append(Intervention(
                limit, self.arm_of[i], self.robot.joint_names[i], wanted[0][k], p[i],
                f"slowed to {shares[k]:.0%} of the step so it can still {why} at the acceleration / jerk limits",
            ))
        return p, v, a, extent

    def _largest_shares(self, index: list[int], step, stop, excess_full: list[float]) -> list[float]:
        """Per joint, the largest share s in [0, 1] of the step (mixed with 1 - s of the stop) that is admissible:
        regula falsi on the stop's position overshoot, always keeping an admissible lower end (share 0, the stop
        itself, is admissible by construction and the fallback)."""
        m = len(index)
        low, high = [0.0] * m, [1.0] * m
        _, low_excess, _ = self.admissible(index, *stop)
        high_excess = list(excess_full)
        for _ in range(SEARCH_STEPS):
            trial = []
            for k in range(m):
                span = high_excess[k] - low_excess[k]
                fraction = -low_excess[k] / span if span > 0 and low_excess[k] <= 0 else 0.5
                trial.append(low[k] + (high[k] - low[k]) * min(max(fraction, 0.05), 0.95))
            ok, excess, _ = self.admissible(index, *mix(trial, step, stop))
            for k in range(m):
                if ok[k]:
                    low[k], low_excess[k] = trial[k], excess[k]
                else:
                    high[k], high_excess[k] = trial[k], excess[k]
        return low

    def tighten(self, p: np.ndarray, extent) -> bool:
        """Shrink a range relaxed at anchoring back to the configured one for every joint now inside that stops
        inside; True while some joint's range is still relaxed."""
        _, high, low = (np.asarray(x) for x in extent)
        limits_lower, limits_upper = self._configured
        self.set_range(np.where(p + low >= limits_lower, limits_lower, self.lower),
                       np.where(p + high <= limits_upper, limits_upper, self.upper))
        return bool((self.lower < limits_lower).any() or (self.upper > limits_upper).any())

    def relax(self, limits: SafetyLimits, p: np.ndarray) -> None:
        """At anchoring: the configured range, widened to take in a measured position outside it (that joint may
        stay where it is or move inward, never further out)."""
        self._configured = (limits.lower, limits.upper)
        self.set_range(np.minimum(limits.lower, p), np.maximum(limits.upper, p))

