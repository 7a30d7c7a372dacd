"""The time-optimal jerk-limited stop of a joint, in closed form.

From velocity v and acceleration a, the fastest way to rest (v = a = 0) under |a| <= A, |jerk| <= J is bang-bang in
jerk. Let s = v + a|a| / (2J), the velocity reached if the acceleration is ramped to zero at once, and
sigma = sign(s). In canonical coordinates (v, a multiplied by sigma, so s >= 0) the stop is:
  1. jerk -J until a = -a_p,  with a_p = min(A, sqrt(J v + a^2 / 2)),
  2. a = -a_p held for t2 = max(0, (v + a^2 / (2J) - A^2 / J) / A) (only when a_p = A),
  3. jerk +J until a = 0, which is reached exactly when v = 0.
The canonical velocity is >= 0 after its first zero crossing (there is one only when v < 0 and a > 0, in phase 1),
so the position moves back first, then forward to the rest point: the extremes are at that crossing and at rest.

Ruckig computes the same profile (velocity interface, no synchronisation) and cross-checks these formulas in the
tests. The filter evaluates the stop for every joint, and for candidate states, every control step: per joint in
plain Python floats, because for 6-14 joints numpy's per-call overhead makes the vectorised form 7x slower (53 us vs
7 us for 8 joints) and Ruckig's one-trajectory-per-call interface slower still. Only `stop_samples`, which evaluates
many times at once, is vectorised.
"""

from __future__ import annotations

from itertools import repeat
from math import sqrt
from typing import Iterable

import numpy as np


def _profile(v: float, a: float, A: float, J: float):
    sigma = 1.0 if v + a * abs(a) / (2.0 * J) >= 0.0 else -1.0
    vc, ac = sigma * v, sigma * a
    ap2 = J * vc + 0.5 * ac * ac
    ap = min(sqrt(ap2), A) if ap2 > 0.0 else 0.0
    t1 = max((ac + ap) / J, 0.0)
    t2 = max((vc + ac * ac / (2.0 * J) - ap * ap / J) / A, 0.0)
    return sigma, vc, ac, ap, t1, t2, ap / J


def stop_extent(v: Iterable[float], a: Iterable[float], A: Iterable[float], J: Iterable[float]):
    """Per joint, the (rest, highest, lowest) displacement of the time-optimal stop from (v, a), as three lists;
    highest >= 0 >= lowest."""
    rest, highest, lowest = [], [], []
    for vi, ai, Ai, Ji in zip(v, a, A, J):
        if vi == 0.0 and ai == 0.0:  # at rest (a still gripper, a stopped arm): no stop to take
            rest.append(0.0)
            highest.append(0.0)
            lowest.append(0.0)
            continue
        # _profile, inlined: this runs for every joint of every candidate state of every control step.
        if vi + ai * abs(ai) / (2.0 * Ji) >= 0.0:
            sigma, vc, ac = 1.0, vi, ai
        else:
            sigma, vc, ac = -1.0, -vi, -ai
        ap2 = Ji * vc + 0.5 * ac * ac
        ap = 0.0
        if ap2 > 0.0:
            ap = sqrt(ap2)
            if Ai < ap:
                ap = Ai
        t1 = (ac + ap) / Ji
        if t1 < 0.0:
            t1 = 0.0
        t2 = (vc + ac * ac / (2.0 * Ji) - ap * ap / Ji) / Ai
        if t2 < 0.0:
            t2 = 0.0
        t3 = ap / Ji
        v1 = vc + t1 * (ac - 0.5 * Ji * t1)
        x1 = t1 * (vc + t1 * (0.5 * ac - Ji * t1 / 6.0))
        v2 = v1 - ap * t2
        x2 = x1 + t2 * (v1 - 0.5 * ap * t2)
        x3 = x2 + t3 * (v2 + t3 * (-0.5 * ap + Ji * t3 / 6.0))
        back = 0.0
        if vc < 0.0:  # canonical back-travel until the velocity crosses zero (at t0, inside phase 1)
            d = ac * ac + 2.0 * Ji * vc
            t0 = min(max((ac - sqrt(d if d > 0.0 else 0.0)) / Ji, 0.0), t1)
            back = min(t0 * (vc + t0 * (0.5 * ac - Ji * t0 / 6.0)), 0.0)
        ahead = x3 if x3 > 0.0 else 0.0
        rest.append(sigma * x3)
        if sigma > 0.0:
            highest.append(ahead)
            lowest.append(back)
        else:
            highest.append(-back)
            lowest.append(-ahead)
    return rest, highest, lowest


def stop_duration(v: Iterable[float], a: Iterable[float], A: Iterable[float], J: Iterable[float]):
    """Per joint, how long the time-optimal stop from (v, a) takes and the largest |acceleration| during it, as two
    lists."""
    durations, peaks = [], []
    for vi, ai, Ai, Ji in zip(v, a, A, J):
        _, _, _, ap, t1, t2, t3 = _profile(vi, ai, Ai, Ji)
        durations.append(t1 + t2 + t3)
        peaks.append(max(abs(ai), ap))
    return durations, peaks


def stop_state(v: Iterable[float], a: Iterable[float], A: Iterable[float], J: Iterable[float],
               t: float | Iterable[float]):
    """Per joint, (displacement, velocity, acceleration) after time t (one for all, or one per joint) of the
    time-optimal stop from (v, a), as three lists; exactly at rest once the stop is over."""
    dx, vel, acc = [], [], []
    times = repeat(t) if isinstance(t, (int, float)) else t
    for vi, ai, Ai, Ji, ti in zip(v, a, A, J, times):
        x, y, z = _state(_profile(vi, ai, Ai, Ji), Ji, ti)
        dx.append(x)
        vel.append(y)
        acc.append(z)
    return dx, vel, acc


def stop_samples(v: Iterable[float], a: Iterable[float], A: Iterable[float], J: Iterable[float],
                 times: Iterable[float]):
    """(displacement, velocity, acceleration) of each joint's stop at each of `times`: three (times x joints) arrays.
    The batched evaluation of the filter (many samples per call), so numpy, the profile too (_profile per joint)."""
    v, a, A, J = (np.asarray(x, dtype=float) for x in (v, a, A, J))
    sigma = np.where(v + a * np.abs(a) / (2.0 * J) >= 0.0, 1.0, -1.0)
    vc, ac = sigma * v, sigma * a
    ap2 = J * vc + 0.5 * ac * ac
    ap = np.minimum(np.sqrt(np.maximum(ap2, 0.0)), A)
    t1 = np.maximum((ac + ap) / J, 0.0)
    t2 = np.maximum((vc + ac * ac / (2.0 * J) - ap * ap / J) / A, 0.0)
    t3 = ap / J
    t = np.asarray(times, dtype=float)[:, None]
    tau1 = np.minimum(t, t1)
    tau2 = np.clip(t - t1, 0.0, t2)
    tau3 = np.clip(t - t1 - t2, 0.0, t3)
    v_a = vc + tau1 * (ac - 0.5 * J * tau1)
    x_a = tau1 * (vc + tau1 * (0.5 * ac - J * tau1 / 6.0))
    a_a = ac - J * tau1
    v_b = v_a - ap * tau2
    x_b = x_a + tau2 * (v_a - 0.5 * ap * tau2)
    dx = sigma * (x_b + tau3 * (v_b + tau3 * (0.5 * a_a + J * tau3 / 6.0)))
    over = t >= t1 + t2 + t3
    velocity = np.where(over, 0.0, sigma * (v_b + tau3 * (a_a + J * tau3 * 0.5)))
    acceleration = np.where(over, 0.0, sigma * (a_a + J * tau3))
    return dx, velocity, acceleration


def stop_breakpoints(v: Iterable[float], a: Iterable[float], A: Iterable[float], J: Iterable[float]) -> list[float]:
    """The times (sorted, > 0) at which some joint's stop from (v, a) changes phase, the last one being when every
    joint is at rest. Between two of them every joint's stop is one cubic polynomial, so the stop sampled there (with
    velocity and acceleration) is reproduced exactly by quintic interpolation: what a JointTrajectoryController does."""
    times = set()
    for vi, ai, Ai, Ji in zip(v, a, A, J):
        if vi == 0.0 and ai == 0.0:
            continue
        _, _, _, _, t1, t2, t3 = _profile(vi, ai, Ai, Ji)
        times.update(x for x in (t1, t1 + t2, t1 + t2 + t3) if x > 0.0)
    return sorted(times)


def _state(profile, J: float, t: float) -> tuple[float, float, float]:
    sigma, vc, ac, ap, t1, t2, t3 = profile
    # Each phase starts from the previous one's end; a phase not yet reached has zero duration.
    tau1 = min(t, t1)
    tau2 = min(max(t - t1, 0.0), t2)
    tau3 = min(max(t - t1 - t2, 0.0), t3)
    v_a = vc + tau1 * (ac - 0.5 * J * tau1)
    x_a = tau1 * (vc + tau1 * (0.5 * ac - J * tau1 / 6.0))
    a_a = ac - J * tau1
    v_b = v_a - ap * tau2
    x_b = x_a + tau2 * (v_a - 0.5 * ap * tau2)
    x = sigma * (x_b + tau3 * (v_b + tau3 * (0.5 * a_a + J * tau3 / 6.0)))
    if t >= t1 + t2 + t3:
        return x, 0.0, 0.0
    return x, sigma * (v_b + tau3 * (a_a + 0.5 * J * tau3)), sigma * (a_a + J * tau3)
