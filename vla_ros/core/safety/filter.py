"""SafetyFilter: the last word before hardware. Joint targets in, commands that respect every limit out.

The commands form one trajectory (per segment, see below) that the filter owns: the *commanded* state (position,
velocity, acceleration per joint at the time of the last command). Every call extends it from that state to `now`
by a piece of a continuous trajectory with piecewise-constant jerk, and returns its end. That piece is always one of
  - Ruckig's time-optimal step toward the target (tracking.py), which passes a reachable target through
    unchanged,
  - the time-optimal stop (braking.py),
  - a convex combination of the two (the jerk profiles mixed pointwise),
each within |jerk| <= J, |a| <= A, |v| <= V throughout. So the divided differences of the returned positions over
any stamps (velocity, 2x acceleration, 6x jerk: what an independent checker recomputes from consecutive commands)
stay within the same limits, whatever the spacing of the calls.

Position limits (range minus a margin) are kept with look-ahead: a state is accepted only if the time-optimal stop
from it stays inside the range (and under the velocity limit), so the joint can always stop in time (braking
distance) and the stop is always available as a fallback. When the step toward the target would leave that set, the
step is mixed with the stop (the largest admissible share, per joint). The same is done per arm for the EE: inside
its workspace box and under its linear / angular speed limits over the step (FK differences), and along the stop
that would follow (speed: a bound over the whole stop; box: samples of the stop with the most the path can bulge
between them; see _ee_check), so that braking never carries the EE out of its box or over its speed.

Modes (SafeCommand.state):
  ok        a new target was accepted this call
  hold      no new target this call: still moving toward the last one (also: a target refused because the joint
            state is slightly stale, or a call that cannot advance time)
  stopping  graded stop at the acceleration / jerk limits: joint state too old, no new target for too long, a gap
            between calls; "stopped" once at rest (it stays there until a new target)
  estop     latched by estop(); brakes to rest, refuses targets, until reset()
  not_ready no measured joint state yet: nothing to send

Bad input (NaN, inf, wrong length, unknown or repeated joint names) is refused as a whole, never partly applied: the
filter holds (keeps tracking the last accepted target). Targets are mapped by joint name; joints not named keep their
previous target. Calls closer than `min_step` to the previous command, or going back in time, return that command
again (same stamp): no motion over no time.

Segments: the trajectory starts at the measured position at rest (the first command after the first joint state,
and after reset()). reset() clears the e-stop and re-anchors the commanded state on the measured state: the command
jumps to where the robot actually is (so the robot does not move), velocity and acceleration zero. It is refused
unless the joint state is fresh and the commanded state is at rest (or time went back: then the command stream is
frozen anyway, the controller holding the last command).

A joint (or EE) found outside its range at anchoring may stay where it is or move inward, never further out; the
range tightens to the configured one once the joint is inside and can stop inside.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from math import sqrt
from typing import Sequence

import numpy as np
import pinocchio as pin

from vla_ros.core.errors import VlaRosError
from vla_ros.core.robot import ArmSpec, RobotModel
from vla_ros.core.safety.braking import stop_duration, stop_extent, stop_samples, stop_state
from vla_ros.core.safety.config import SafetyConfig, SafetyLimits
from vla_ros.core.safety.precheck import ArmBox, precheck_trajectory
from vla_ros.core.safety.report import InterventionCounter, Intervention, SafeCommand, Violation
from vla_ros.core.safety.tracking import TrackingGroup, target_rates
from vla_ros.core.safety.watchdog import Watchdog

__all__ = ["ResetRefused", "SafetyConfig", "SafetyFilter", "SafeCommand", "Intervention", "Violation"]

_POSITION_TOL = 1e-10  # m / rad: acceptance slack of the look-ahead checks (floating-point rounding only)
_RATE_TOL = 1e-9  # relative slack on velocity / EE speed checks
# Regula falsi steps of the search for the largest admissible share of a step (mixed with the stop).
_SEARCH_STEPS = 3
_NAN = math.nan
_STOP_SAMPLES = 8  # points of the stop checked by the EE workspace look-ahead
_XYZ_ROWS = np.array([0, 3])  # Jacobian row blocks: linear, angular


class ResetRefused(VlaRosError):
    """reset() was called while the joint state is stale or the arm is still stopping."""


@dataclass
class _ArmGuard:
    spec: ArmSpec
    index: list[int]  # the arm's joints
    columns: slice | list[int]  # the same, as Jacobian columns (a slice when contiguous: a view, 10x cheaper)
    reach: float  # m, bounds |dx/dq_i| and |d2x/dq_i dq_j| of the EE (sum of the arm's link lengths)
    vertices: np.ndarray  # (2^n, n) every 0/1 choice per arm joint: vertices of the EE speed zonotope
    lower: np.ndarray  # workspace box in force (relaxed at anchoring if the EE starts outside)
    upper: np.ndarray
    translation: list[float]  # EE pose at the last command
    rotation: np.ndarray
    lower_l: list[float] = field(init=False)  # the box as lists, for the per-axis checks
    upper_l: list[float] = field(init=False)

    def __post_init__(self):
        self.set_box(self.lower, self.upper)

    def set_box(self, lower: np.ndarray, upper: np.ndarray) -> None:
        self.lower, self.upper = lower, upper
        self.lower_l, self.upper_l = lower.tolist(), upper.tolist()


class SafetyFilter:
    """Deterministic, time injected (`now` in seconds). Not thread-safe: one caller at a time."""

    def __init__(self, robot: RobotModel, config: SafetyConfig | None = None):
        self.robot = robot
        self.config = config or SafetyConfig()
        self.limits = SafetyLimits.of(robot, self.config)
        self._V, self._A, self._J = self.limits.velocity, self.limits.acceleration, self.limits.jerk
        # Per-joint scalars as Python lists: the hot path works joint by joint in floats (see braking.py).
        self._Vl, self._Al, self._Jl = (x.tolist() for x in (self.limits.velocity, self.limits.acceleration,
                                                              self.limits.jerk))
        self._V_slack = [x * (1 + _RATE_TOL) for x in self._Vl]  # velocity limits with the rounding slack
        self._limit_lower_l, self._limit_upper_l = self.limits.lower.tolist(), self.limits.upper.tolist()
        self._index = {name: i for i, name in enumerate(robot.joint_names)}
        self._every = list(range(robot.nq))
        self._arm_of: list[str | None] = [None] * robot.nq
        self._groups = []
        for arm in robot.arms:
            for i in arm.index:
                self._arm_of[i] = arm.name
            self._groups.append(TrackingGroup(np.asarray(arm.index), self._V, self._A, self._J))
            if arm.gripper is not None:
                self._arm_of[arm.gripper.index] = arm.name
                self._groups.append(TrackingGroup(np.array([arm.gripper.index]), self._V, self._A, self._J))
        self._data = robot.new_data()
        self._reach = {arm.name: _reach(robot, arm, self._data) for arm in robot.arms}
        self._watchdog = Watchdog(robot.nq, self.config)
        self._counter = InterventionCounter()
        self._names_seen: dict[tuple, tuple] = {}  # parsed joint-name lists (nodes resend the same names)
        self._zeros = np.zeros(robot.nq)
        self._zeros_l = [0.0] * robot.nq
        self._all = np.arange(robot.nq)  # the parsed index of a full name list in robot.joint_names order
        self._segment = 0
        self._anchored = False
        self._estop_reason: str | None = None
        self._stop_kind: str | None = None  # why the last command braked (watchdog transitions are reported once)
        self._pending: list[Intervention] = []  # reported with the next command
        self._last: SafeCommand | None = None
        self._t = _NAN
        self._set_state(self._zeros, self._zeros, self._zeros)
        self._set_range(self.limits.lower.copy(), self.limits.upper.copy())
        self._relaxed = False
        self._target = self._zeros_l  # per joint (a list, like the commanded state's lists)
        self._has_target = False
        self._history: list[tuple[float, list[float]]] = []  # last accepted targets, for their velocity estimate
        self._arms: list[_ArmGuard] = []

    def _set_state(self, p: np.ndarray, v: np.ndarray, a: np.ndarray, lists=None) -> None:
        """The commanded state, as arrays and (for the per-joint hot path) as lists."""
        self._p, self._v, self._a = p, v, a
        self._pl, self._vl, self._al = lists if lists is not None else (p.tolist(), v.tolist(), a.tolist())

    def _set_range(self, lower: np.ndarray, upper: np.ndarray) -> None:
        self._lower, self._upper = lower, upper
        self._lower_l, self._upper_l = lower.tolist(), upper.tolist()

    # --- public API ---------------------------------------------------------------------------------------------

    def update_joint_state(self, names: Sequence[str], positions: Sequence[float], now: float) -> tuple[Intervention, ...]:
        """Measured joint positions (any subset, e.g. one JointState topic of several) stamped `now`. Joints the robot
        does not command are ignored (JointState carries mimic joints); a bad update is refused as a whole and
        returned (and counted): the state then ages and the watchdog stops the arm."""
        parsed, problem = self._parse(names, positions, "joint state", ignore_unknown=True)
        if problem is None and not math.isfinite(now):
            problem = Intervention("input", None, None, now, _NAN, f"joint state refused: stamp {now} is not finite")
        if problem is not None:
            self._counter.add([problem])
            return (problem,)
        self._watchdog.state_seen(parsed[0], parsed[1], float(now))
        return ()

    def filter(self, names: Sequence[str], positions: Sequence[float], now: float) -> SafeCommand:
        """A new joint target (by name) for time `now` -> the command to send at `now`."""
        parsed, problem = self._parse(names, positions, "target")
        return self._step(float(now), parsed, [] if problem is None else [problem])

    def tick(self, now: float) -> SafeCommand:
        """No new target this period: the command to send at `now` (hold, or the watchdog's graded stop)."""
        return self._step(float(now), None, [])

    def estop(self, reason: str) -> None:
        """Latch the e-stop: the arm brakes to rest at the limits and targets are refused until reset()."""
        self._latch(reason, self._pending)

    def reset(self, now: float) -> None:
        """Clear the e-stop and re-anchor the commanded state on the measured one (the next command is the measured
        position at rest). Raises ResetRefused unless the joint state is fresh and the commanded state is at rest (or
        `now` is before the last command: time went back)."""
        if not self._watchdog.state_complete or self._watchdog.state_holds(now):
            raise ResetRefused(
                f"safety reset refused: joint state is {self._watchdog.state_age(now):.3f} s old "
                f"(max {self.config.joint_state_hold_after:g} s)"
            )
        # Re-anchoring at rest while the command is still braking would stop it dead; unless time went back, which
        # froze the command stream (the controller holds the last command) until the clock catches up.
        if self._anchored and (self._v.any() or self._a.any()) and not now < self._t:
            raise ResetRefused("safety reset refused: the arm is still stopping; retry once it is at rest")
        self._estop_reason = None
        self._anchored = False

    def precheck(self, trajectory: np.ndarray, dt: float, names: Sequence[str]) -> list[Violation]:
        """Limits a planned trajectory (T rows, one column per named joint, row i meant for now + (i+1) dt) would
        break if executed from the current commanded state, each with its first step (see Violation)."""
        if self._anchored:
            start = (self._p, self._v, self._a)
            boxes = [ArmBox(g.spec, g.lower, g.upper, g.translation, g.rotation) for g in self._arms]
        else:
            start = None
            boxes = [ArmBox(arm, arm.workspace_min, arm.workspace_max, None, None) for arm in self.robot.arms]
        return precheck_trajectory(self.robot, self.limits, self._lower, self._upper, boxes, start, trajectory, dt,
                                   names, self._data)

    def intervention_counts(self) -> dict[str, int]:
        """Interventions so far by limit kind (every kind present), for /diagnostics and replay metrics."""
        return self._counter.counts()

    @property
    def estopped(self) -> bool:
        return self._estop_reason is not None

    @property
    def estop_reason(self) -> str | None:
        return self._estop_reason

    @property
    def last_command(self) -> SafeCommand | None:
        return self._last

    # --- input ----------------------------------------------------------------------------------------------------

    def _parse(self, names, positions, what: str, ignore_unknown: bool = False):
        """((index array, values array, values list), None) or (None, an "input" Intervention naming the first
        problem)."""
        try:
            names = tuple(names)
            values = np.asarray(positions, dtype=float)
        except (TypeError, ValueError):
            return self._refused(what, "positions are not numbers")
        if values.ndim != 1:
            return self._refused(what, f"positions must be one flat list, got shape {values.shape}")
        if len(names) != len(values):
            return self._refused(what, f"{len(names)} joint names but {len(values)} positions", len(values), len(names))
        key = (names, ignore_unknown)
        try:
            parsed = self._names_seen.get(key)
        except TypeError:  # an unhashable "name"
            return self._refused(what, "joint names must be strings")
        if parsed is None:
            parsed = self._parse_names(names, ignore_unknown)
            if len(self._names_seen) >= 64:
                self._names_seen.clear()
            self._names_seen[key] = parsed
        index, keep, problem, joint = parsed
        if problem is not None:
            return self._refused(what, problem, joint=joint)
        if keep is not None:
            values = values[keep]
        listed = values.tolist()
        if not all(map(math.isfinite, listed)):  # per value in floats: a few times cheaper than numpy on a handful
            k = int(np.flatnonzero(~np.isfinite(values))[0])
            name = self.robot.joint_names[index[k]]
            return self._refused(what, f"{name} = {values[k]} is not finite", values[k], joint=name)
        return (index, values, listed), None

    def _refused(self, what: str, detail: str, requested: float = _NAN, allowed: float = _NAN,
                 joint: str | None = None):
        """(None, the "input" Intervention refusing `what`)."""
        arm = self._arm_of[self._index[joint]] if joint in self._index else None
        return None, Intervention("input", arm, joint, requested, allowed, f"{what} refused: {detail}")

    def _parse_names(self, names: tuple, ignore_unknown: bool):
        """(index array, positions to keep or None for all, problem or None, joint the problem names)."""
        seen: set[str] = set()
        index, keep = [], []
        for k, name in enumerate(names):
            if not isinstance(name, str):
                return None, None, f"joint name {name!r} is not a string", None
            if name in seen:
                return None, None, f"joint {name!r} named twice", name
            seen.add(name)
            i = self._index.get(name)
            if i is None:
                if ignore_unknown:
                    continue
                return None, None, f"unknown joint {name!r} (robot {self.robot.name})", None
            index.append(i)
            keep.append(k)
        if not index:
            return None, None, f"no joint of robot {self.robot.name} named", None
        index = self._all if index == self._every else np.array(index)
        return index, (None if len(keep) == len(names) else np.array(keep)), None, None

    def _accept(self, target, now: float, events: list[Intervention]) -> bool:
        if self._estop_reason is not None:
            events.append(Intervention("estop", None, None, _NAN, _NAN,
                                       f"target refused: e-stop latched ({self._estop_reason}); call reset"))
            return False
        if self._watchdog.state_holds(now):
            age, limit = self._watchdog.state_age(now), self.config.joint_state_hold_after
            events.append(Intervention("state_stale", None, None, age, limit,
                                       f"target refused: joint state is {age:.3f} s old (max {limit:g} s); holding"))
            return False
        index, _, values = target
        every = index is self._all  # every joint, in order: no gathering or scattering
        lower, upper = self._limit_lower_l, self._limit_upper_l
        if not every:
            lower, upper = [lower[i] for i in index], [upper[i] for i in index]
        clamped = []
        for x, lo, hi in zip(values, lower, upper):  # per joint in floats: cheaper than numpy on a handful of joints
            x_lo = x if x >= lo else lo
            clamped.append(x_lo if x_lo <= hi else hi)
        if clamped != values:
            for k, (x, c) in enumerate(zip(values, clamped)):
                if x != c:
                    i = index[k]
                    events.append(Intervention(
                        "position", self._arm_of[i], self.robot.joint_names[i], x, c,
                        f"target {x:.6g} outside the margined range [{lower[k]:.4f}, {upper[k]:.4f}]",
                    ))
        if every:
            target_q = clamped
        else:
            target_q = list(self._target)
            for i, c in zip(index, clamped):
                target_q[i] = c
        if self._history and now - self._history[-1][0] > self.config.command_stop_after:
            self._history = []
        self._history = self._history[-2:] + [(now, target_q)]
        self._target = target_q
        self._has_target = True
        self._watchdog.command_seen(now)
        return True

    # --- one call ---------------------------------------------------------------------------------------------------

    def _step(self, now: float, target, events: list[Intervention]) -> SafeCommand:
        events = self._pending + events
        self._pending = []
        if not math.isfinite(now):
            events.append(Intervention("time", None, None, now, _NAN, f"call time {now} is not finite: nothing moves"))
            return self._repeat(events)
        if not self._anchored:
            if not self._watchdog.state_complete:
                if target is not None:
                    events.append(Intervention("not_ready", None, None, _NAN, _NAN,
                                               "target refused: no measured state of every joint yet"))
                return self._repeat(events)
            return self._anchor(now, target, events)
        dt = now - self._t
        if dt < self.config.min_step:
            if dt < -self.config.clock_jump_estop and self._estop_reason is None:
                self._latch(f"clock jumped back {-dt:.3f} s", events)
            refused = ", target refused" if target is not None else ""
            events.append(Intervention("time", None, None, dt, self.config.min_step,
                                       f"call {dt * 1e3:.3f} ms after the previous command (min "
                                       f"{self.config.min_step * 1e3:g} ms): command repeated{refused}"))
            return self._repeat(events)
        accepted = target is not None and self._accept(target, now, events)
        kind, why = self._stop_reason(now, dt)
        if kind is None:
            self._stop_kind = None
            return self._track(now, dt, accepted, events)
        if kind != self._stop_kind and why is not None:
            events.append(why)
        self._stop_kind = kind
        return self._brake(now, dt, keep_target=accepted, events=events)

    def _stop_reason(self, now: float, dt: float) -> tuple[str | None, Intervention | None]:
        config, watchdog = self.config, self._watchdog
        if self._estop_reason is not None:
            return "estop", None
        if watchdog.state_stops(now):
            age = watchdog.state_age(now)
            return "state_stale", Intervention("state_stale", None, None, age, config.joint_state_stop_after,
                                               f"joint state is {age:.3f} s old (max "
                                               f"{config.joint_state_stop_after:g} s): graded stop")
        if dt > config.command_stop_after:
            return "gap", Intervention("time", None, None, dt, config.command_stop_after,
                                       f"no command for {dt:.3f} s (max {config.command_stop_after:g} s): graded stop")
        if not self._has_target:
            return "idle", None
        if watchdog.command_stops(now):
            age = watchdog.command_age(now)
            return "command_stale", Intervention("command_stale", None, None, age, config.command_stop_after,
                                                 f"no new target for {age:.3f} s (max "
                                                 f"{config.command_stop_after:g} s): graded stop")
        return None, None

    def _latch(self, reason: str, events: list[Intervention]) -> None:
        if self._estop_reason is None:
            self._estop_reason = reason
            events.append(Intervention("estop", None, None, _NAN, _NAN, f"e-stop latched: {reason}"))

    # --- producing commands ------------------------------------------------------------------------------------------

    def _anchor(self, now: float, target, events: list[Intervention]) -> SafeCommand:
        p = self._watchdog.positions.copy()
        self._segment += 1
        self._anchored = True
        self._t = now
        self._set_state(p, self._zeros, self._zeros)
        self._set_range(np.minimum(self.limits.lower, p), np.maximum(self.limits.upper, p))
        self._target, self._has_target, self._history = p.tolist(), False, []
        self._watchdog.forget_commands()
        self._stop_kind = None
        self._arms = []
        for arm in self.robot.arms:
            pose = self.robot.fk(p, arm.ee_frame_id, self._data)
            index = arm.index.tolist()
            contiguous = index == list(range(index[0], index[-1] + 1))
            vertices = np.array(list(itertools.product((0.0, 1.0), repeat=len(index))))
            self._arms.append(_ArmGuard(
                arm, index, slice(index[0], index[-1] + 1) if contiguous else index, self._reach[arm.name], vertices,
                np.minimum(arm.workspace_min, pose.translation), np.maximum(arm.workspace_max, pose.translation),
                pose.translation.tolist(), np.array(pose.rotation)))
        self._relaxed = True
        # A target given with this call is kept, and tracked from the next call: no time to move toward it yet.
        accepted = target is not None and self._accept(target, now, events)
        state = "estop" if self._estop_reason is not None else "hold" if accepted else "stopped"
        return self._emit(SafeCommand(now, p, self._zeros, self._zeros, state, tuple(events), self._segment))

    def _repeat(self, events: list[Intervention]) -> SafeCommand:
        last = self._last
        if last is None or not self._anchored:
            command = SafeCommand(_NAN if last is None else last.stamp, None, None, None, "not_ready", tuple(events),
                                  self._segment)
            return self._emit(command, remember=False)
        state = "estop" if self._estop_reason is not None else "hold" if last.state == "ok" else last.state
        return self._emit(SafeCommand(last.stamp, last.positions, last.velocities, last.accelerations, state,
                                      tuple(events), self._segment))

    def _brake(self, now: float, dt: float, keep_target: bool, events: list[Intervention]) -> SafeCommand:
        dx, v, a = stop_state(self._vl, self._al, self._Al, self._Jl, dt)
        p = [x + d for x, d in zip(self._pl, dx)]
        extent = stop_extent(v, a, self._Al, self._Jl)
        if not keep_target:  # after a stop the arm waits where it stopped for a new target
            self._target, self._has_target, self._history = [x + r for x, r in zip(p, extent[0])], False, []
        at_rest = not (any(v) or any(a))
        state = "estop" if self._estop_reason is not None else "stopped" if at_rest else "stopping"
        return self._commit(now, p, v, a, extent, state, events)

    def _track(self, now: float, dt: float, accepted: bool, events: list[Intervention]) -> SafeCommand:
        q = self._target
        if accepted:
            vq, aq = target_rates(self._history, self._lower_l, self._upper_l, self._Vl, self._Al, self._Jl)
        else:
            vq = aq = self._zeros_l
        # Committed states are within the limits up to rounding; Ruckig would add a braking pre-trajectory for that.
        v0 = [x if -limit <= x <= limit else min(max(x, -limit), limit) for x, limit in zip(self._vl, self._Vl)]
        a0 = [x if -limit <= x <= limit else min(max(x, -limit), limit) for x, limit in zip(self._al, self._Al)]
        p, v, a = list(self._zeros_l), list(self._zeros_l), list(self._zeros_l)  # every joint is in one group
        failed = []
        for group in self._groups:
            i, joints = group.index, group.span
            if joints is not None:  # contiguous joints (every built-in robot): slices of the per-joint lists
                step = group.step(self._pl[joints], v0[joints], a0[joints], q[joints], vq[joints], aq[joints], dt)
                p[joints], v[joints], a[joints] = step.positions, step.velocities, step.accelerations
            else:
                step = group.step(*([x[j] for j in i] for x in (self._pl, v0, a0, q, vq, aq)), dt)
                for j, x, y, z in zip(i, step.positions, step.velocities, step.accelerations):
                    p[j], v[j], a[j] = x, y, z
            if step.error is not None:
                failed.extend(i)
                events.append(Intervention("trajectory", self._arm_of[i[0]], None, q[i[0]], p[i[0]],
                                           f"no trajectory toward the target ({step.error}): braking"))
            elif accepted:
                for k in step.late:
                    if abs(step.positions[k] - q[i[k]]) > self.config.tracking_tolerance:
                        events.append(self._late(i[k], q[i[k]], step.durations[k], dt))
        if failed:
            for j, x, y, z in zip(failed, *self._stop_lists(failed, dt)):
                p[j], v[j], a[j] = x, y, z
        state = self._keep_stoppable(p, v, a, dt, events)
        poses = []
        for guard in self._arms:
            state, pose = self._keep_ee_limits(guard, state, dt, events)
            poses.append(pose)
        return self._commit(now, *state, "ok" if accepted else "hold", events, poses)

    def _late(self, i: int, q: float, duration: float, dt: float) -> Intervention:
        """The target q of joint i is out of reach this period: name the limit that makes it so."""
        p, v = self._pl[i], self._vl[i]
        if abs(q - p) / dt > self._Vl[i]:
            limit, needed, allowed = "velocity", abs(q - p) / dt, self._Vl[i]
        elif 2 * abs(q - p - v * dt) / dt**2 > self._Al[i]:
            limit, needed, allowed = "acceleration", 2 * abs(q - p - v * dt) / dt**2, self._Al[i]
        else:
            limit, needed, allowed = "jerk", 6 * abs(q - p - v * dt - 0.5 * self._al[i] * dt**2) / dt**3, self._Jl[i]
        reach = f"{duration:.3f} s to reach it" if math.isfinite(duration) else "no profile reaches it exactly"
        return Intervention(limit, self._arm_of[i], self.robot.joint_names[i], q, _NAN,
                            f"target needs {needed:.4g} > {limit} limit {allowed:.4g} over one {dt * 1e3:.1f} ms step "
                            f"({reach}): moving toward it at the limits")

    # --- look-ahead constraints ------------------------------------------------------------------------------------

    def _admissible(self, index: list[int], p, v, a):
        """Per candidate state (joint index[k] at p[k], v[k], a[k]): does the stop from it stay in range and under
        the velocity limit? Returns (ok, excess, (rest, high, low)) as lists: `excess` is the stop's worst position
        overshoot (<= tolerance when ok), the extent its displacement at rest, highest and lowest."""
        A, J, V, lower, upper = self._Al, self._Jl, self._V_slack, self._lower_l, self._upper_l
        if index is not self._every:
            A, J, V, lower, upper = ([x[i] for i in index] for x in (A, J, V, lower, upper))
        extent = stop_extent(v, a, A, J)
        ok, excess = [], []
        for pk, vk, ak, high, low, Jk, Vk, lo, hi in zip(p, v, a, extent[1], extent[2], J, V, lower, upper):
            over = pk + high - hi
            under = lo - (pk + low)
            if under > over:  # max(over, under), without the call: this loop is per joint per candidate
                over = under
            ok.append(over <= _POSITION_TOL and abs(vk + ak * abs(ak) / (2.0 * Jk)) <= Vk)
            excess.append(over)
        return ok, excess, extent

    def _stop_lists(self, index: list[int], dt: float):
        """End (p, v, a) of the stop over dt from the commanded state, for joints `index`, as lists."""
        dx, v, a = stop_state([self._vl[i] for i in index], [self._al[i] for i in index],
                              [self._Al[i] for i in index], [self._Jl[i] for i in index], dt)
        return [self._pl[i] + d for i, d in zip(index, dx)], v, a

    def _keep_stoppable(self, p, v, a, dt, events):
        """Per joint, mix the step with the stop where the stop from the step's end would leave the range. Returns
        (p, v, a, extent), all lists."""
        ok, excess, extent = self._admissible(self._every, p, v, a)
        if all(ok):
            return p, v, a, extent
        f = [i for i, good in enumerate(ok) if not good]
        wanted = ([p[i] for i in f], [v[i] for i in f], [a[i] for i in f])
        stop = self._stop_lists(f, dt)
        shares = self._largest_shares(f, wanted, stop, [excess[i] for i in f])
        mixed = _mix(shares, wanted, stop)
        p, v, a = p.copy(), v.copy(), a.copy()
        for i, x, y, z in zip(f, *mixed):
            p[i], v[i], a[i] = x, y, z
        _, _, part = self._admissible(f, *mixed)
        for whole, values in zip(extent, part):
            for i, value in zip(f, values):
                whole[i] = value
        for k, i in enumerate(f):
            if excess[i] > _POSITION_TOL:
                limit, why = "position", f"stop within [{self._lower_l[i]:.4f}, {self._upper_l[i]:.4f}]"
            else:  # its acceleration would carry the velocity over the limit while it ramps down
                limit, why = "velocity", f"stay under {self._Vl[i]:g}"
            events.append(Intervention(
                limit, self._arm_of[i], self.robot.joint_names[i], wanted[0][k], p[i],
                f"slowed to {shares[k]:.0%} of the step so it can still {why} at the acceleration / jerk limits",
            ))
        return p, v, a, extent

    def _largest_shares(self, index: list[int], step, stop, excess_full: list[float]) -> list[float]:
        """Per joint, the largest share s in [0, 1] of the step (mixed with 1 - s of the stop) that is admissible:
        regula falsi on the stop's position overshoot, always keeping an admissible lower end (share 0, the stop
        itself, is admissible by construction and the fallback)."""
        m = len(index)
        low, high = [0.0] * m, [1.0] * m
        _, low_excess, _ = self._admissible(index, *stop)
        high_excess = list(excess_full)
        for _ in range(_SEARCH_STEPS):
            trial = []
            for k in range(m):
                span = high_excess[k] - low_excess[k]
                fraction = -low_excess[k] / span if span > 0 and low_excess[k] <= 0 else 0.5
                trial.append(low[k] + (high[k] - low[k]) * min(max(fraction, 0.05), 0.95))
            ok, excess, _ = self._admissible(index, *_mix(trial, step, stop))
            for k in range(m):
                if ok[k]:
                    low[k], low_excess[k] = trial[k], excess[k]
                else:
                    high[k], high_excess[k] = trial[k], excess[k]
        return low

    def _ee_check(self, guard: _ArmGuard, q: list[float], v: list[float], a: list[float], extent, dt: float,
                  look_ahead: bool = True, exact_margin: bool = True):
        """EE limits the state (q, v, a) (lists) breaks, as [(limit, requested, allowed, detail)]; the signed worst
        overshoot in metres / radians over one step (negative: every EE limit holds; with `exact_margin` False, exact
        only when something is found); and the EE pose.

        Checked: the EE in the box and its mean speed over the step (the FK difference from the last command); the
        EE speed bound over the whole stop from this state (_ee_speed_bound: what the next step falls back to); the
        stopping point in the box and, with `look_ahead`, the EE along the stop, sampled at _STOP_SAMPLES times,
        inside the box shrunk by the most the path can leave the chord between two samples (skipped when reach *
        joint travel shows the stop cannot reach a wall)."""
        spec, index = guard.spec, guard.index
        q_stop = np.array([x + d for x, d in zip(q, extent[0])])
        q = np.array(q)
        pose = self.robot.fk(q, spec.ee_frame_id, self._data)
        point = pose.translation.tolist()
        findings: list = []
        worst = self._ee_box(guard, point, 0.0, "EE", findings)
        stop = self.robot.fk(q_stop, spec.ee_frame_id, self._data).translation.tolist()
        margin = max(worst, self._ee_box(guard, stop, 0.0, "EE stopping point", findings))
        # Joint travel during the stop: back and forth when it reverses (both extremes non-zero).
        high, low = extent[1], extent[2]
        travel = 0
        for j in index:
            travel += (high[j] - low[j]) * (2.0 if high[j] > 0.0 > low[j] else 1.0)
        # Rotation angle between the two poses from the trace of R_prev^T R: (trace - 1) / 2 = cos(angle).
        cosine = (float(np.vdot(guard.rotation, pose.rotation)) - 1.0) / 2.0
        mean = (math.dist(point, guard.translation) / dt, math.acos(min(max(cosine, -1.0), 1.0)) / dt)
        allowed = (spec.max_ee_linear_speed, spec.max_ee_angular_speed)
        bound = self._ee_speed_bound(guard, q, v, a, travel, allowed, exact_margin)
        for k, (limit, unit) in enumerate((("ee_linear_speed", "m/s"), ("ee_angular_speed", "rad/s"))):
            speed = max(mean[k], bound[k])
            margin = max(margin, (speed - allowed[k]) * dt)
            if speed > allowed[k] * (1 + _RATE_TOL):
                what = "" if mean[k] >= bound[k] else " while stopping"
                findings.append((limit, speed, allowed[k],
                                 f"{limit.replace('_', ' ')}{what} {speed:.3f} > {allowed[k]:g} {unit}"))
        if look_ahead and guard.reach * travel > -worst:
            margin = max(margin, self._ee_path_in_box(guard, q, v, a, findings))
        return findings, margin, pose

    def _ee_speed_bound(self, guard: _ArmGuard, q, v, a, travel: float, allowed, exact: bool = True
                        ) -> tuple[float, float]:
        """Upper bounds of the EE linear and angular speed over the whole stop from (q, v, a).

        During its stop each joint's velocity stays between 0, v_i and its value once its acceleration is ramped to
        zero, so with the Jacobian held the EE velocity lies in the zonotope sum_i J_i [lo_i, hi_i], whose farthest
        point is a vertex (every subset of the joints at one end of their interval): an exact bound whatever order
        the joints stop in. The Jacobian itself changes over the stop by at most reach (linear) or 1 (angular) per
        radian of joint travel, per unit of joint speed: added. Cheaper, looser bounds are tried first: |J_i| <=
        reach (linear) and 1 (angular), then the triangle inequality with the actual |J_i|. With `exact` False the
        caller only asks whether both bounds are within `allowed`, and any bound under them may be returned."""
        index, J = guard.index, self._Jl
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
        linear, angular = guard.reach * (width + drift), width + drift
        if linear <= allowed[0] and angular <= allowed[1]:
            return linear, angular
        jacobian = self.robot.frame_jacobian(q, guard.spec.ee_frame_id, self._data)[:, guard.columns]
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
            linear, angular = linear + guard.reach * drift, angular + drift
            if linear > allowed[0]:
                linear = _box_norm(rows[:3], lo, hi) + guard.reach * drift
            if angular > allowed[1]:
                angular = _box_norm(rows[3:], lo, hi) + drift
            if linear <= allowed[0] and angular <= allowed[1]:
                return linear, angular
        lo, span = np.array(lo), np.array(span)
        linear, angular = (np.sqrt(np.add.reduceat(jacobian * jacobian, _XYZ_ROWS, axis=0)) @ span).tolist()
        bounds = [linear + guard.reach * drift, angular + drift]
        for k, rows in enumerate((slice(0, 3), slice(3, 6))):
            if bounds[k] > allowed[k]:
                part = jacobian[rows]
                vertices = part @ lo + guard.vertices @ (part * span).T
                bounds[k] = math.sqrt(float(np.einsum("ij,ij->i", vertices, vertices).max()))
                bounds[k] += (guard.reach if k == 0 else 1.0) * drift
        return bounds[0], bounds[1]

    def _ee_box(self, guard: _ArmGuard, point, shrink: float, label: str, findings: list) -> float:
        """Signed worst overshoot of `point` out of the box shrunk by `shrink`; adds a finding when it is out."""
        worst = -math.inf
        for k, (x, lo, hi) in enumerate(zip(point, guard.lower_l, guard.upper_l)):
            over = (lo - x if lo - x > x - hi else x - hi) + shrink  # max(x - hi, lo - x), without the call
            if over > worst:
                worst = over
            if over > _POSITION_TOL:
                findings.append(("workspace", x, hi - shrink if x > hi - shrink else lo + shrink,
                                 f"{label} {'xyz'[k]} = {x:.4f} m outside [{lo + shrink:.4f}, {hi - shrink:.4f}]"))
        return worst

    def _ee_path_in_box(self, guard, q, v, a, findings) -> float:
        """Worst overshoot of the box by the EE along the stop from (q, v, a): samples, each inside the box shrunk by
        the most the EE path can leave the chord to the next sample."""
        index, frame = guard.index, guard.spec.ee_frame_id
        A, J = [self._Al[i] for i in index], [self._Jl[i] for i in index]
        v, a = [v[j] for j in index], [a[j] for j in index]
        durations, peaks = stop_duration(v, a, A, J)
        gap = max(durations) / _STOP_SAMPLES
        dx, _ = stop_samples(v, a, A, J, [gap * k for k in range(1, _STOP_SAMPLES + 1)])
        # Between two samples a joint leaves the chord of its path by at most max|qddot| gap^2 / 8, and the EE
        # leaves the chord of its own path by at most reach * (that, summed) plus reach * (joint travel)^2 / 2.
        curvature = sum(peaks) * gap**2 / 8.0
        worst, previous = -math.inf, np.zeros(len(index))
        sample = q.copy()
        for k in range(_STOP_SAMPLES):
            sample[index] = q[index] + dx[k]
            bulge = guard.reach * (curvature + float(np.abs(dx[k] - previous).sum()) ** 2 / 2.0)
            point = self.robot.fk(sample, frame, self._data).translation.tolist()
            worst = max(worst, self._ee_box(guard, point, bulge, "EE while stopping", findings))
            previous = dx[k]
        return worst

    def _keep_ee_limits(self, guard: _ArmGuard, state, dt, events):
        """Mix the arm's step with its stop until the EE (and its stopping point) is in the box and under speed.
        Regula falsi on the share of the step on the checks without the sampled look-ahead, keeping an admissible
        lower end (share 0, the stop, was checked with look-ahead as the last command); then the full check on the
        result, quartering the share until it passes (else the stop). Returns the state and its EE pose."""
        p, v, a, extent = state
        # The margin is needed only when something is found, and a speed bound within the limits cannot be the
        # largest term then (a finding exceeds 0 by more than the rounding), so the cheaper bound will do.
        findings, worst, pose = self._ee_check(guard, p, v, a, extent, dt, exact_margin=False)
        if not findings:
            return state, pose
        i = guard.index
        step, stop = ([p[j] for j in i], [v[j] for j in i], [a[j] for j in i]), self._stop_lists(i, dt)

        def candidate(share: float, look_ahead: bool):
            mixed = _mix([share] * len(i), step, stop)
            ok, _, part = self._admissible(i, *mixed)
            cp, cv, ca = p.copy(), v.copy(), a.copy()
            for j, x, y, z in zip(i, *mixed):
                cp[j], cv[j], ca[j] = x, y, z
            cext = tuple(list(x) for x in extent)
            for whole, values in zip(cext, part):
                for j, value in zip(i, values):
                    whole[j] = value
            found, margin, cpose = self._ee_check(guard, cp, cv, ca, cext, dt, look_ahead)
            return all(ok) and not found, margin, ((cp, cv, ca, cext), cpose)

        good, low_worst, result = candidate(0.0, look_ahead=False)
        share = 0.0
        if good:  # else even the stop breaks an EE limit (the arm already stops as fast as it can): report it
            low, high, high_worst = 0.0, 1.0, worst
            for _ in range(_SEARCH_STEPS):
                span = high_worst - low_worst
                fraction = -low_worst / span if span > 0 and low_worst <= 0 else 0.5
                trial = low + (high - low) * min(max(fraction, 0.05), 0.95)
                passed, margin, _ = candidate(trial, look_ahead=False)
                if passed:
                    low, low_worst = trial, margin
                else:
                    high, high_worst = trial, margin
            for _ in range(_SEARCH_STEPS):
                passed, _, trial = candidate(low, look_ahead=True)
                if passed:
                    share, result = low, trial
                    break
                low /= 4.0
        for limit, requested, allowed, detail in findings:
            events.append(Intervention(limit, guard.spec.name, None, requested, allowed,
                                       f"{detail}: slowed to {share:.0%} of the step"))
        return result

    # --- commit ------------------------------------------------------------------------------------------------------

    def _commit(self, now, p, v, a, extent, state, events, poses=None) -> SafeCommand:
        """Commit the state (p, v, a), lists, as the command at `now`."""
        lists = p, v, a
        p, v, a = np.array(p), np.array(v), np.array(a)
        self._t = now
        self._set_state(p, v, a, lists)
        for k, guard in enumerate(self._arms):
            pose = poses[k] if poses is not None else self.robot.fk(p, guard.spec.ee_frame_id, self._data)
            guard.translation, guard.rotation = pose.translation.tolist(), pose.rotation.copy()
        if self._relaxed:
            self._tighten(p, extent)
        return self._emit(SafeCommand(now, p, v, a, state, tuple(events), self._segment))

    def _tighten(self, p, extent):
        """Shrink ranges relaxed at anchoring back to the configured ones once the state is inside and stops inside."""
        rest, high, low = (np.asarray(x) for x in extent)
        lower, upper = self.limits.lower, self.limits.upper
        self._set_range(np.where(p + low >= lower, lower, self._lower), np.where(p + high <= upper, upper, self._upper))
        relaxed = bool((self._lower < lower).any() or (self._upper > upper).any())
        for guard in self._arms:
            spec = guard.spec
            stop = self.robot.fk(p + rest, spec.ee_frame_id, self._data).translation
            point = np.asarray(guard.translation)
            guard.set_box(np.where(np.minimum(point, stop) >= spec.workspace_min, spec.workspace_min, guard.lower),
                          np.where(np.maximum(point, stop) <= spec.workspace_max, spec.workspace_max, guard.upper))
            relaxed = relaxed or bool((guard.lower < spec.workspace_min).any() or (guard.upper > spec.workspace_max).any())
        self._relaxed = relaxed

    def _emit(self, command: SafeCommand, remember: bool = True) -> SafeCommand:
        if remember:
            self._last = command
        if command.interventions:
            self._counter.add(command.interventions)
        return command


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


def _mix(share: Sequence[float], step, stop):
    """Per joint, the convex combination share * step + (1 - share) * stop of two trajectory pieces' end states
    ((positions, velocities, accelerations) lists): the jerk profiles mixed pointwise, so the limits still hold."""
    return tuple([s * x + (1.0 - s) * y for s, x, y in zip(share, xs, ys)] for xs, ys in zip(step, stop))


def _reach(robot: RobotModel, arm: ArmSpec, data: pin.Data) -> float:
    """Sum of the arm's link lengths (joint origin to joint origin, then to the EE) at home: no EE point is farther
    than this from any of the arm's joint axes."""
    pin.framesForwardKinematics(robot.model, data, robot.home)
    points = [data.oMi[robot.model.getJointId(name)].translation for name in arm.joints]
    points.append(data.oMf[arm.ee_frame_id].translation)
    return float(sum(np.linalg.norm(b - a) for a, b in zip(points, points[1:])))
