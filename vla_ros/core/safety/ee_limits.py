"""End-effector limits per arm: the EE inside its workspace box and under its linear / angular speed limits over the
step (FK differences), and along the stop that would follow (speed: a bound over the whole stop; box: samples of the
stop with the most the path can bulge between them), so that braking never carries the EE out of its box or over
its speed. A step that breaks one is mixed with the stop (see lookahead.py) until it does not.
"""

from __future__ import annotations

import itertools
import math
from math import sqrt

import numpy as np
import pinocchio as pin

from vla_ros.core.robot import ArmSpec, RobotModel
from vla_ros.core.safety.braking import stop_duration, stop_samples
from vla_ros.core.safety.lookahead import POSITION_TOL, RATE_TOL, SEARCH_STEPS, StopLookahead, mix
from vla_ros.core.safety.report import Intervention

_STOP_SAMPLES = 8  # points of the stop checked by the EE workspace look-ahead
_XYZ_ROWS = np.array([0, 3])  # Jacobian row blocks: linear, angular


class ArmGuard:
    """One arm's EE limits, with the box in force (relaxed at anchoring if the EE starts outside) and the EE pose at
    the last command."""

    def __init__(self, robot: RobotModel, spec: ArmSpec, reach: float, data: pin.Data, lookahead: StopLookahead,
                 pose: pin.SE3):
        self.robot, self.spec, self.reach, self._data, self._lookahead = robot, spec, reach, data, lookahead
        self.index = spec.index.tolist()
        contiguous = self.index == list(range(self.index[0], self.index[-1] + 1))
        # A slice when contiguous: a view of the Jacobian's columns, 10x cheaper than gathering them.
        self.columns = slice(self.index[0], self.index[-1] + 1) if contiguous else self.index
        # Every 0/1 choice per arm joint: the vertices of the EE speed zonotope.
        self.vertices = np.array(list(itertools.product((0.0, 1.0), repeat=len(self.index))))
        self.set_box(np.minimum(spec.workspace_min, pose.translation), np.maximum(spec.workspace_max, pose.translation))
        self.set_pose(pose)

    def set_box(self, lower: np.ndarray, upper: np.ndarray) -> None:
        self.lower, self.upper = lower, upper
        self.lower_l, self.upper_l = lower.tolist(), upper.tolist()  # the box as lists, for the per-axis checks

    def set_pose(self, pose: pin.SE3) -> None:
        self.translation, self.rotation = pose.translation.tolist(), pose.rotation.copy()

    def tighten(self, p: np.ndarray, rest: np.ndarray) -> bool:
        """Shrink a box relaxed at anchoring back to the configured one on every axis where the EE and its stopping
        point are inside; True while it is still relaxed."""
        spec = self.spec
        stop = self.robot.fk(p + rest, spec.ee_frame_id, self._data).translation
        point = np.asarray(self.translation)
        self.set_box(np.where(np.minimum(point, stop) >= spec.workspace_min, spec.workspace_min, self.lower),
                     np.where(np.maximum(point, stop) <= spec.workspace_max, spec.workspace_max, self.upper))
        return bool((self.lower < spec.workspace_min).any() or (self.upper > spec.workspace_max).any())

    # --- checks ---------------------------------------------------------------------------------------------------

    def check(self, q: list[float], v: list[float], a: list[float], extent, dt: float, look_ahead: bool = True,
              exact_margin: bool = True):
        """EE limits the state (q, v, a) (lists) breaks, as [(limit, requested, allowed, detail)]; the signed worst
        overshoot in metres / radians over one step (negative: every EE limit holds; with `exact_margin` False, exact
        only when something is found); and the EE pose.

        Checked: the EE in the box and its mean speed over the step (the FK difference from the last command); the
        EE speed bound over the whole stop from this state (speed_bound: what the next step falls back to); the
        stopping point in the box and, with `look_ahead`, the EE along the stop, sampled at _STOP_SAMPLES times,
        inside the box shrunk by the most the path can leave the chord between two samples (skipped when reach *
        joint travel shows the stop cannot reach a wall)."""
        spec, index = self.spec, self.index
        q_stop = np.array([x + d for x, d in zip(q, extent[0])])
        q = np.array(q)
        pose = self.robot.fk(q, spec.ee_frame_id, self._data)
        point = pose.translation.tolist()
        findings: list = []
        worst = self.box_overshoot(point, 0.0, "EE", findings)
        stop = self.robot.fk(q_stop, spec.ee_frame_id, self._data).translation.tolist()
        margin = max(worst, self.box_overshoot(stop, 0.0, "EE stopping point", findings))
        # Joint travel during the stop: back and forth when it reverses (both extremes non-zero).
        high, low = extent[1], extent[2]
        travel = 0
        for j in index:
            travel += (high[j] - low[j]) * (2.0 if high[j] > 0.0 > low[j] else 1.0)
        # Rotation angle between the two poses from the trace of R_prev^T R: (trace - 1) / 2 = cos(angle).
        cosine = (float(np.vdot(self.rotation, pose.rotation)) - 1.0) / 2.0
        mean = (math.dist(point, self.translation) / dt, math.acos(min(max(cosine, -1.0), 1.0)) / dt)
        allowed = (spec.max_ee_linear_speed, spec.max_ee_angular_speed)
        bound = self.speed_bound(q, v, a, travel, allowed, exact_margin)
        for k, (limit, unit) in enumerate((("ee_linear_speed", "m/s"), ("ee_angular_speed", "rad/s"))):
            speed = max(mean[k], bound[k])
            margin = max(margin, (speed - allowed[k]) * dt)
            if speed > allowed[k] * (1 + RATE_TOL):
                what = "" if mean[k] >= bound[k] else " while stopping"
                findings.append((limit, speed, allowed[k],
                                 f"{limit.replace('_', ' ')}{what} {speed:.3f} > {allowed[k]:g} {unit}"))
        if look_ahead and self.reach * travel > -worst:
            margin = max(margin, self.path_overshoot(q, v, a, findings))
        return findings, margin, pose

    def speed_bound(self, q, v, a, travel: float, allowed, exact: bool = True) -> tuple[float, float]:
        """Upper bounds of the EE linear and angular speed over the whole stop from (q, v, a).

        During its stop each joint's velocity stays between 0, v_i and its value once its acceleration is ramped to
        zero, so with the Jacobian held the EE velocity lies in the zonotope sum_i J_i [lo_i, hi_i], whose farthest
        point is a vertex (every subset of the joints at one end of their interval): an exact bound whatever order
        the joints stop in. The Jacobian itself changes over the stop by at most reach (linear) or 1 (angular) per
        radian of joint travel, per unit of joint speed: added. Cheaper, looser bounds are tried first: |J_i| <=
        reach (linear) and 1 (angular), then the triangle inequality with the actual |J_i|. With `exact` False the
        caller only asks whether both bounds are within `allowed`, and any bound under them may be returned."""
        index, J = self.index, self._lookahead.J
        lo, hi = [], []
        for j in index:  # lo = min(v, ahead, 0), hi = max(v, ahead, 0), without the calls (per joint per candidate)
            vj, aj = v[j], a[j]
            ahead = vj + aj * abs(aj) / (2.0 * J[j])
            low = high = vj
            if ahead < low:
                low = ahead
            if ahead > high:
                high = ahead
            lo.append(0.0 if 0.0 < low else low)
            hi.append(0.0 if 0.0 > high else high)
        width = sum(hi) - sum(lo)
        drift = travel * width
        linear, angular = self.reach * (width + drift), width + drift
        if linear <= allowed[0] and angular <= allowed[1]:
            return linear, angular
        jacobian = self.robot.frame_jacobian(q, self.spec.ee_frame_id, self._data)[:, self.columns]
        span = [h - l for h, l in zip(hi, lo)]
        if not exact:
            # Bounds in floats, which round unlike numpy's (BLAS) sums but cost a fraction of numpy's calls here: used
            # only to show the limits hold, when the staged value itself is not needed. The triangle bound, then
            # where that is not enough the zonotope's bounding box, which is far cheaper than its vertices.
            x, y, z, wx, wy, wz = rows = jacobian.tolist()
            linear = angular = 0.0
            for jx, jy, jz, jwx, jwy, jwz, width_i in zip(x, y, z, wx, wy, wz, span):
                linear += sqrt(jx * jx + jy * jy + jz * jz) * width_i
                angular += sqrt(jwx * jwx + jwy * jwy + jwz * jwz) * width_i
            linear, angular = linear + self.reach * drift, angular + drift
            if linear > allowed[0]:
                linear = _box_norm(rows[:3], lo, hi) + self.reach * drift
            if angular > allowed[1]:
                angular = _box_norm(rows[3:], lo, hi) + drift
            if linear <= allowed[0] and angular <= allowed[1]:
                return linear, angular
        lo, span = np.array(lo), np.array(span)
        linear, angular = (np.sqrt(np.add.reduceat(jacobian * jacobian, _XYZ_ROWS, axis=0)) @ span).tolist()
        bounds = [linear + self.reach * drift, angular + drift]
        for k, rows in enumerate((slice(0, 3), slice(3, 6))):
            if bounds[k] > allowed[k]:
                part = jacobian[rows]
                vertices = part @ lo + self.vertices @ (part * span).T
                bounds[k] = math.sqrt(float(np.einsum("ij,ij->i", vertices, vertices).max()))
                bounds[k] += (self.reach if k == 0 else 1.0) * drift
        return bounds[0], bounds[1]

    def box_overshoot(self, point, shrink: float, label: str, findings: list) -> float:
        """Signed worst overshoot of `point` out of the box shrunk by `shrink`; adds a finding when it is out."""
        worst = -math.inf
        for k, (x, lo, hi) in enumerate(zip(point, self.lower_l, self.upper_l)):
            over = (lo - x if lo - x > x - hi else x - hi) + shrink  # max(x - hi, lo - x), without the call
            if over > worst:
                worst = over
            if over > POSITION_TOL:
                findings.append(("workspace", x, hi - shrink if x > hi - shrink else lo + shrink,
                                 f"{label} {'xyz'[k]} = {x:.4f} m outside [{lo + shrink:.4f}, {hi - shrink:.4f}]"))
        return worst

    def path_overshoot(self, q, v, a, findings) -> float:
        """Worst overshoot of the box by the EE along the stop from (q, v, a): samples, each inside the box shrunk by
        the most the EE path can leave the chord to the next sample."""
        index, frame, lookahead = self.index, self.spec.ee_frame_id, self._lookahead
        A, J = [lookahead.A[i] for i in index], [lookahead.J[i] for i in index]
        v, a = [v[j] for j in index], [a[j] for j in index]
        durations, peaks = stop_duration(v, a, A, J)
        gap = max(durations) / _STOP_SAMPLES
        dx, _, _ = stop_samples(v, a, A, J, [gap * k for k in range(1, _STOP_SAMPLES + 1)])
        # Between two samples a joint leaves the chord of its path by at most max|qddot| gap^2 / 8, and the EE
        # leaves the chord of its own path by at most reach * (that, summed) plus reach * (joint travel)^2 / 2.
        curvature = sum(peaks) * gap**2 / 8.0
        worst, previous = -math.inf, np.zeros(len(index))
        sample = q.copy()
        for k in range(_STOP_SAMPLES):
            sample[index] = q[index] + dx[k]
            bulge = self.reach * (curvature + float(np.abs(dx[k] - previous).sum()) ** 2 / 2.0)
            point = self.robot.fk(sample, frame, self._data).translation.tolist()
            worst = max(worst, self.box_overshoot(point, bulge, "EE while stopping", findings))
            previous = dx[k]
        return worst

    # --- enforcing ------------------------------------------------------------------------------------------------

    def keep(self, commanded, state, dt: float, events: list[Intervention], weights: list[float]):
        """Mix the arm's step with its stop from `commanded` until the EE (and its stopping point) is in the box and
        under speed. Regula falsi on the share of the step on the checks without the sampled look-ahead, keeping an
        admissible lower end (share 0, the stop, was checked with look-ahead as the last command); then the full check
        on the result, quartering the share until it passes (else the stop). The arm joints' `weights` (their shares
        of the step) are multiplied by the share kept. Returns the state and its EE pose."""
        p, v, a, extent = state
        # The margin is needed only when something is found, and a speed bound within the limits cannot be the
        # largest term then (a finding exceeds 0 by more than the rounding), so the cheaper bound will do.
        findings, worst, pose = self.check(p, v, a, extent, dt, exact_margin=False)
        if not findings:
            return state, pose
        i, lookahead = self.index, self._lookahead
        step, stop = ([p[j] for j in i], [v[j] for j in i], [a[j] for j in i]), lookahead.stop_from(commanded, i, dt)

        def candidate(share: float, look_ahead: bool):
            mixed = mix([share] * len(i), step, stop)
            ok, _, part = lookahead.admissible(i, *mixed)
            cp, cv, ca = p.copy(), v.copy(), a.copy()
            for j, x, y, z in zip(i, *mixed):
                cp[j], cv[j], ca[j] = x, y, z
            cext = tuple(list(x) for x in extent)
            for whole, values in zip(cext, part):
                for j, value in zip(i, values):
                    whole[j] = value
            found, margin, cpose = self.check(cp, cv, ca, cext, dt, look_ahead)
            return all(ok) and not found, margin, ((cp, cv, ca, cext), cpose)

        good, low_worst, result = candidate(0.0, look_ahead=False)
        share = 0.0
        if good:  # else even the stop breaks an EE limit (the arm already stops as fast as it can): report it
            low, high, high_worst = 0.0, 1.0, worst
            for _ in range(SEARCH_STEPS):
                span = high_worst - low_worst
                fraction = -low_worst / span if span > 0 and low_worst <= 0 else 0.5
                trial = low + (high - low) * min(max(fraction, 0.05), 0.95)
                passed, margin, _ = candidate(trial, look_ahead=False)
                if passed:
                    low, low_worst = trial, margin
                else:
                    high, high_worst = trial, margin
            for _ in range(SEARCH_STEPS):
                passed, _, trial = candidate(low, look_ahead=True)
                if passed:
                    share, result = low, trial
                    break
                low /= 4.0
        for j in i:
            weights[j] *= share
        for limit, requested, allowed, detail in findings:
            events.append(Intervention(limit, self.spec.name, None, requested, allowed,
                                       f"{detail}: slowed to {share:.0%} of the step"))
        return result


def _box_norm(rows: list[list[float]], lo: list[float], hi: list[float]) -> float:
    """Upper bound of |M x| over the box lo <= x <= hi (M given by its rows): the norm of the farthest corner of the
    bounding box of the image, each coordinate at its own extreme."""
    total = 0.0
    for row in rows:
        up = down = 0.0
        for m, low, high in zip(row, lo, hi):
            at_low, at_high = m * low, m * high
            if at_low > at_high:
                at_low, at_high = at_high, at_low
            up += at_high
            down += at_low
        extreme = up if up > -down else -down
        total += extreme * extreme
    return sqrt(total)


def arm_reach(robot: RobotModel, arm: ArmSpec, data: pin.Data) -> float:
    """Sum of the arm's link lengths (joint origin to joint origin, then to the EE) at home: no EE point is farther
    than this from any of the arm's joint axes."""
    pin.framesForwardKinematics(robot.model, data, robot.home)
    points = [data.oMi[robot.model.getJointId(name)].translation for name in arm.joints]
    points.append(data.oMf[arm.ee_frame_id].translation)
    return float(sum(np.linalg.norm(b - a) for a, b in zip(points, points[1:])))
