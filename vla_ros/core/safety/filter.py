"""SafetyFilter: the last word before hardware. Joint targets in, commands that respect every limit out.

The commands form one trajectory (per segment, see below) that the filter owns: the *commanded* state (position,
velocity, acceleration per joint at the time of the last command). Every call extends it from that state to `now`
by a piece of a continuous trajectory with piecewise-constant jerk, and returns its end. That piece is always one of
  - Ruckig's time-optimal step toward the target (tracking.py), which passes a reachable target through unchanged,
  - the time-optimal stop (braking.py),
  - a convex combination of the two (the jerk profiles mixed pointwise), or a stop followed by a step (a late call),
each within |jerk| <= J, |a| <= A, |v| <= V throughout. So the divided differences of the returned positions over
any stamps (velocity, 2x acceleration, 6x jerk: what an independent checker recomputes from consecutive commands)
stay within the same limits, whatever the spacing of the calls.

Position limits (range minus a margin) are kept with look-ahead (lookahead.py): a state is accepted only if the
time-optimal stop from it stays inside the range, so the joint can always stop in time and the stop is always
available as a fallback. The same is done per arm for the EE (ee_limits.py): inside its workspace box and under its
linear / angular speed limits over the step, and along the stop that would follow.

What each call produces, when targets are accepted, the e-stop and reset() follow the state machine in modes.py
(its table is the contract). SafeCommand.state: ok, hold, stopping, stopped, estop, not_ready.

Time. Calls are stamped with the caller's clock (`now`); the filter keeps its own timeline (SafeCommand.timeline):
the same as the clock until the clock goes back (sim time reset, NTP step, bag loop), when the timeline continues
from the last command (the command is repeated, re-stamped on the new clock) and the commands go on, on the new
clock, from there; by more than clock_jump_estop it also latches the e-stop, so the arm brakes to rest on the new
clock. A trajectory controller runs the commands `controller_delay` late (controller_trajectory.py): a call later
than that first brakes for the excess, which is what the controller did meanwhile.

Measured state: joint states (any subset of joints per update, by name) stamped on the caller's clock; a position
outside the URDF range by more than the measurement tolerance is refused (and counted), never used. Anchoring needs
a complete and fresh measured state.

Bad input (NaN, inf, out-of-range floats, complex or non-numeric values, wrong length, unknown or repeated joint
names, a time that is not a finite number) is refused as a whole, never partly applied, and counted as `input`;
no public method raises on data. Targets are mapped by joint name; joints not named keep their previous target.

Segments: the trajectory starts at the measured position (inside the URDF range) at rest: the first command after
the first joint state, and after reset(). A joint (or EE) found outside its configured range at anchoring may stay
where it is or move inward, never further out; the range tightens to the configured one once the joint is inside
and can stop inside.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Sequence

import numpy as np

from vla_ros.core.robot import RobotModel
from vla_ros.core.safety.braking import stop_breakpoints, stop_extent, stop_samples, stop_state
from vla_ros.core.safety.config import SafetyConfig, SafetyLimits
from vla_ros.core.safety.controller_trajectory import ControllerTrajectory, controller_trajectory, thin_piece
from vla_ros.core.safety.ee_limits import ArmGuard, arm_reach
from vla_ros.core.safety.inputs import JointInput, out_of_range, read_time
from vla_ros.core.safety.lookahead import StopLookahead
from vla_ros.core.safety.modes import Modes
from vla_ros.core.safety.precheck import ArmBox, precheck_trajectory
from vla_ros.core.safety.report import Intervention, InterventionCounter, ResetResult, SafeCommand, Violation
from vla_ros.core.safety.tracking import TrackingGroup, target_rates
from vla_ros.core.safety.watchdog import Watchdog

_NAN = math.nan


class SafetyFilter:
    """Deterministic, time injected (`now` in seconds). Not thread-safe: one caller at a time."""

    def __init__(self, robot: RobotModel, config: SafetyConfig | None = None, keep_trajectory: bool = False):
        """`keep_trajectory`: also keep each command's piece of trajectory at its breakpoints, for
        controller_trajectory() (a trajectory controller's messages); costs time on every call."""
        self.robot = robot
        self.keep_trajectory = keep_trajectory
        self.config = config or SafetyConfig()
        self.limits = SafetyLimits.of(robot, self.config)
        self._arm_of: list[str | None] = [None] * robot.nq
        self._groups = []
        V, A, J = self.limits.velocity, self.limits.acceleration, self.limits.jerk
        for arm in robot.arms:
            for i in arm.index:
                self._arm_of[i] = arm.name
            self._groups.append(TrackingGroup(np.asarray(arm.index), V, A, J))
            if arm.gripper is not None:
                self._arm_of[arm.gripper.index] = arm.name
                self._groups.append(TrackingGroup(np.array([arm.gripper.index]), V, A, J))
        self._limit_lower_l, self._limit_upper_l = self.limits.lower.tolist(), self.limits.upper.tolist()
        self._inputs = JointInput(robot, self._arm_of)
        self._lookahead = StopLookahead(robot, self.limits, self._arm_of)
        self._data = robot.new_data()
        self._reach = {arm.name: arm_reach(robot, arm, self._data) for arm in robot.arms}
        self._watchdog = Watchdog(robot.nq, robot.joint_names, self.limits.prismatic)
        self._modes = Modes(self.config, self.limits, self._watchdog)
        self._counter = InterventionCounter()
        self.controller_delay = self.config.controller_delay(robot)
        self._zeros = np.zeros(robot.nq)
        self._zeros_l = [0.0] * robot.nq
        self._segment = 0
        self._anchored = False
        self._pending: list[Intervention] = []  # reported with the next command
        self._last: SafeCommand | None = None
        self._t = _NAN  # timeline time of the last command
        self._offset = 0.0  # timeline - caller's clock
        self._set_state(self._zeros, self._zeros, self._zeros)
        self._relaxed = False
        self._target = self._zeros_l  # per joint (a list, like the commanded state's lists)
        self._has_target = False
        self._history: list[tuple[float, list[float]]] = []  # last accepted targets, for their velocity estimate
        self._arms: list[ArmGuard] = []
        self._recent: deque = deque()  # (t, p, v, a) of the segment's commands of the last controller_delay

    def _set_state(self, p: np.ndarray, v: np.ndarray, a: np.ndarray, lists=None) -> None:
        """The commanded state, as arrays and (for the per-joint hot path) as lists."""
        self._p, self._v, self._a = p, v, a
        self._pl, self._vl, self._al = lists if lists is not None else (p.tolist(), v.tolist(), a.tolist())

    # --- public API ---------------------------------------------------------------------------------------------

    def update_joint_state(self, names: Sequence[str], positions: Sequence[float], now: float,
                           velocities: Sequence[float] | None = None) -> tuple[Intervention, ...]:
        """Measured joint positions (any subset, e.g. one JointState topic of several) stamped `now` on the caller's
        clock, and the velocities the driver reported (optional; values that do not parse count as not reported).
        Joints the robot does not command are ignored (JointState carries mimic joints); a bad update is refused as
        a whole and returned (and counted): the state then ages and the watchdog stops the arm."""
        stamp, problem = read_time(now, "joint state")
        parsed = None
        if problem is None:
            parsed, problem = self._inputs.parse(names, positions, "joint state", ignore_unknown=True)
        if problem is None:
            index, values, _ = parsed
            outside = out_of_range(index, values, self.limits.measured_lower, self.limits.measured_upper,
                                   self.robot.joint_names)
            if outside is not None:
                k, detail = outside
                joint = self.robot.joint_names[index[k]]
                problem = Intervention("input", self._arm_of[index[k]], joint, float(values[k]), _NAN,
                                       f"joint state refused: {detail}")
        if problem is not None:
            self._counter.add([problem])
            return (problem,)
        self._watchdog.state_seen(index, values, stamp, self._measured_velocities(names, velocities, index))
        return ()

    def filter(self, names: Sequence[str], positions: Sequence[float], now: float) -> SafeCommand:
        """A new joint target (by name) for time `now` -> the command to send at `now`."""
        parsed, problem = self._inputs.parse(names, positions, "target")
        return self._step(now, parsed, [] if problem is None else [problem])

    def tick(self, now: float) -> SafeCommand:
        """No new target this period: the command to send at `now` (hold, or the watchdog's graded stop)."""
        return self._step(now, None, [])

    def estop(self, reason: object = "e-stop requested") -> None:
        """Latch the e-stop: the arm brakes to rest at the limits and targets are refused until reset()."""
        report = self._modes.latch(reason)
        if report is not None:
            self._pending.append(report)

    def reset(self, now: float) -> ResetResult:
        """Clear the e-stop (or a graded stop) and re-anchor on the measured state at the next call; accepted only by
        the rules of modes.py (fresh state, commanded and measured arm at rest). A refusal is counted as `reset`."""
        seconds, problem = read_time(now, "reset")
        if problem is None and self._anchored and seconds + self._offset < self._t - 1e-9:
            problem = Intervention("reset", None, None, seconds, self._t - self._offset,
                                   f"reset refused: time {seconds:.3f} is before the last command "
                                   f"({self._t - self._offset:.3f}); retry after the next command")
        if problem is None:
            at_rest = not self._anchored or not (self._v.any() or self._a.any())
            reason = self._modes.reset_refusal(seconds, at_rest)
            if reason is not None:
                problem = Intervention("reset", None, None, _NAN, _NAN, reason)
        if problem is not None:
            self._counter.add([problem])
            return ResetResult(False, problem.detail)
        self._modes.reset()
        self._anchored = False
        return ResetResult(True, "reset: re-anchoring on the measured state")

    def precheck(self, trajectory: np.ndarray, dt: float, names: Sequence[str]) -> list[Violation]:
        """Limits a planned trajectory (T rows, one column per named joint, row i meant for now + (i+1) dt) would
        break if executed from the current commanded state, each with its first step (see Violation)."""
        if self._anchored:
            start = (self._p, self._v, self._a)
            boxes = [ArmBox(g.spec, g.lower, g.upper, np.asarray(g.translation), g.rotation) for g in self._arms]
        else:
            start = None
            boxes = [ArmBox(arm, arm.workspace_min, arm.workspace_max, None, None) for arm in self.robot.arms]
        return precheck_trajectory(self.robot, self.limits, self._lookahead.lower, self._lookahead.upper, boxes,
                                   start, trajectory, dt, names, self._data)

    def controller_trajectory(self) -> ControllerTrajectory | None:
        """What a trajectory controller is sent after the last command (controller_trajectory.py); None before the
        first anchored command. Needs keep_trajectory."""
        if not self.keep_trajectory:
            raise RuntimeError("controller_trajectory() needs SafetyFilter(..., keep_trajectory=True)")
        if not self._anchored or self._last is None or not self._last.sendable:
            return None
        return controller_trajectory(self._last.stamp, list(self._recent), self.controller_delay,
                                     self._lookahead.A, self._lookahead.J)

    def intervention_counts(self) -> dict[str, int]:
        """Interventions so far by limit kind (every kind present), for /diagnostics and replay metrics."""
        return self._counter.counts()

    @property
    def mode(self) -> str:
        """not_ready | tracking | stopping | estop (modes.py)."""
        return self._modes.mode

    @property
    def estopped(self) -> bool:
        return self._modes.estopped

    @property
    def estop_reason(self) -> str | None:
        return self._modes.estop_reason

    @property
    def last_command(self) -> SafeCommand | None:
        return self._last

    # --- input ----------------------------------------------------------------------------------------------------

    def _measured_velocities(self, names, velocities, index) -> np.ndarray | None:
        if velocities is None or len(velocities) == 0:
            return None
        parsed, problem = self._inputs.parse(names, velocities, "joint velocities", ignore_unknown=True)
        if problem is not None or len(parsed[0]) != len(index):
            return None  # a driver's missing / garbled velocities: not reported (the position window still applies)
        return parsed[1]

    def _accept(self, target, now: float, t: float, events: list[Intervention]) -> bool:
        refusal = self._modes.target_refusal(now)
        if refusal is not None:
            events.append(refusal)
            return False
        index, _, values = target
        every = index is self._inputs.all  # every joint, in order: no gathering or scattering
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
        if self._history and t - self._history[-1][0] > self.config.command_stop_after:
            self._history = []
        self._history = self._history[-2:] + [(t, target_q)]
        self._target = target_q
        self._has_target = True
        self._watchdog.command_seen(t)
        return True

    # --- one call ---------------------------------------------------------------------------------------------------

    def _step(self, now, target, events: list[Intervention]) -> SafeCommand:
        events = self._pending + events
        self._pending = []
        now, problem = read_time(now, "call" if target is None else "target")
        if problem is not None:  # rule 1
            events.append(problem)
            return self._repeat(events)
        self._watchdog.forget_future(now, self.config.joint_state_hold_after)
        if not self._anchored:  # rules 2-3
            anchor, report = self._modes.may_anchor(now, target is not None)
            if report is not None:
                events.append(report)
            return self._anchor(now, target, events) if anchor else self._repeat(events)
        t = now + self._offset
        dt = t - self._t
        refused = ", target refused" if target is not None else ""
        if dt < 0.0:  # rule 4: the clock went back; the timeline continues from the last command
            self._offset -= dt
            events.append(Intervention("time", None, None, dt, 0.0, f"clock went back {-dt:.3f} s: last command "
                                                                    f"repeated on the new clock{refused}"))
            if -dt > self.config.clock_jump_estop:
                report = self._modes.latch(f"clock jumped back {-dt:.3f} s")
                if report is not None:
                    events.append(report)
            return self._repeat(events, stamp=now)
        if dt < self.config.min_step:  # rule 5
            events.append(Intervention("time", None, None, dt, self.config.min_step,
                                       f"call {dt * 1e3:.3f} ms after the previous command (min "
                                       f"{self.config.min_step * 1e3:g} ms): command repeated{refused}"))
            return self._repeat(events)
        accepted = target is not None and self._accept(target, now, t, events)
        kind, report = self._modes.brake_reason(now, dt, t, self._has_target)  # rules 6-11
        if report is not None:
            events.append(report)
        if kind is not None:
            return self._brake(now, t, dt, keep_target=accepted, events=events)
        if dt > self.controller_delay:
            excess = dt - self.controller_delay
            events.append(Intervention("late_call", None, None, dt, self.controller_delay,
                                       f"call {dt * 1e3:.1f} ms after the previous command: braked for the "
                                       f"{excess * 1e3:.1f} ms beyond the controller delay first, as the controller "
                                       f"did"))
            self._coast(excess)
            dt = self.controller_delay
        return self._track(now, t, dt, accepted, events)

    # --- producing commands ------------------------------------------------------------------------------------------

    def _anchor(self, now: float, target, events: list[Intervention]) -> SafeCommand:
        measured = self._watchdog.positions
        hard = self.robot.limits
        p = np.clip(measured, hard.lower, hard.upper)
        for i in np.flatnonzero(p != measured):
            events.append(Intervention("position", self._arm_of[i], self.robot.joint_names[i], measured[i], p[i],
                                       f"measured {measured[i]:.6g} is outside the URDF range [{hard.lower[i]:.4f}, "
                                       f"{hard.upper[i]:.4f}]: anchored at the limit"))
        self._segment += 1
        self._anchored = True
        self._t = t = now + self._offset
        self._set_state(p, self._zeros, self._zeros)
        self._lookahead.relax(self.limits, p)
        self._target, self._has_target, self._history = p.tolist(), False, []
        self._watchdog.forget_commands()
        self._arms = [ArmGuard(self.robot, arm, self._reach[arm.name], self._data, self._lookahead,
                               self.robot.fk(p, arm.ee_frame_id, self._data)) for arm in self.robot.arms]
        self._relaxed = True
        self._recent = deque([(t, self._pl, self._vl, self._al)])
        # A target given with this call is kept, and tracked from the next call: no time to move toward it yet.
        accepted = target is not None and self._accept(target, now, t, events)
        state = "estop" if self.estopped else "hold" if accepted else "stopped"
        return self._emit(SafeCommand(now, p, self._zeros, self._zeros, state, tuple(events), self._segment, t))

    def _repeat(self, events: list[Intervention], stamp: float | None = None) -> SafeCommand:
        """The previous command again (re-stamped at `stamp` when the clock went back), or nothing to send."""
        last = self._last
        if last is None or not self._anchored:
            stamp = _NAN if last is None else last.stamp
            command = SafeCommand(stamp, None, None, None, "not_ready", tuple(events), self._segment, stamp)
            return self._emit(command, remember=False)
        state = "estop" if self.estopped else "hold" if last.state == "ok" else last.state
        return self._emit(SafeCommand(last.stamp if stamp is None else stamp, last.positions, last.velocities,
                                      last.accelerations, state, tuple(events), self._segment, last.timeline))

    def _coast(self, duration: float) -> None:
        """Advance the commanded state along its stop for `duration` (a late call's excess, see _step): a point of
        the trajectory that is never a command of its own."""
        A, J = self._lookahead.A, self._lookahead.J
        interior = self._piece(duration, [0.0] * self.robot.nq)
        dx, v, a = stop_state(self._vl, self._al, A, J, duration)
        p = [x + d for x, d in zip(self._pl, dx)]
        self._t += duration
        self._set_state(np.array(p), np.array(v), np.array(a), (p, v, a))
        for guard in self._arms:
            guard.set_pose(self.robot.fk(self._p, guard.spec.ee_frame_id, self._data))
        self._remember(self._t, interior)

    def _brake(self, now: float, t: float, dt: float, keep_target: bool, events: list[Intervention]) -> SafeCommand:
        A, J = self._lookahead.A, self._lookahead.J
        interior = self._piece(dt, [0.0] * self.robot.nq)
        dx, v, a = stop_state(self._vl, self._al, A, J, dt)
        p = [x + d for x, d in zip(self._pl, dx)]
        extent = stop_extent(v, a, A, J)
        if not keep_target:  # after a stop the arm waits where it stopped for a new target
            self._target, self._has_target, self._history = [x + r for x, r in zip(p, extent[0])], False, []
        at_rest = not (any(v) or any(a))
        state = "estop" if self.estopped else "stopped" if at_rest else "stopping"
        return self._commit(now, t, p, v, a, extent, state, events, interior=interior)

    def _track(self, now: float, t: float, dt: float, accepted: bool, events: list[Intervention]) -> SafeCommand:
        q = self._target
        lookahead = self._lookahead
        if accepted:
            vq, aq = target_rates(self._history, lookahead.lower_l, lookahead.upper_l, lookahead.V, lookahead.A,
                                  lookahead.J)
        else:
            vq = aq = self._zeros_l
        # Committed states are within the limits up to rounding; Ruckig would add a braking pre-trajectory for that.
        v0 = [x if -limit <= x <= limit else min(max(x, -limit), limit) for x, limit in zip(self._vl, lookahead.V)]
        a0 = [x if -limit <= x <= limit else min(max(x, -limit), limit) for x, limit in zip(self._al, lookahead.A)]
        p, v, a = list(self._zeros_l), list(self._zeros_l), list(self._zeros_l)  # every joint is in one group
        weights = [1.0] * self.robot.nq  # each joint's share of its group's step (the rest: the stop)
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
        commanded = (self._pl, self._vl, self._al)
        if failed:
            for j, x, y, z in zip(failed, *lookahead.stop_from(commanded, failed, dt)):
                p[j], v[j], a[j] = x, y, z
                weights[j] = 0.0
        state = lookahead.keep_stoppable(commanded, p, v, a, dt, events, weights)
        poses = []
        for guard in self._arms:
            state, pose = guard.keep(commanded, state, dt, events, weights)
            poses.append(pose)
        interior = self._piece(dt, weights)
        if interior:  # sent to a trajectory controller: its points worth sending, chosen once (controller_trajectory)
            p, v, a, _ = state
            ends = [(self._t, self._pl, self._vl, self._al), *interior, (t, p, v, a)]
            interior = thin_piece(ends, lookahead.V, lookahead.A)[1:-1]
        return self._commit(now, t, *state, "ok" if accepted else "hold", events, poses, interior)

    def _late(self, i: int, q: float, duration: float, dt: float) -> Intervention:
        """The target q of joint i is out of reach this period: name the limit that makes it so."""
        p, v, lookahead = self._pl[i], self._vl[i], self._lookahead
        if abs(q - p) / dt > lookahead.V[i]:
            limit, needed, allowed = "velocity", abs(q - p) / dt, lookahead.V[i]
        elif 2 * abs(q - p - v * dt) / dt**2 > lookahead.A[i]:
            limit, needed, allowed = "acceleration", 2 * abs(q - p - v * dt) / dt**2, lookahead.A[i]
        else:
            limit, needed, allowed = ("jerk", 6 * abs(q - p - v * dt - 0.5 * self._al[i] * dt**2) / dt**3,
                                      lookahead.J[i])
        reach = f"{duration:.3f} s to reach it" if math.isfinite(duration) else "no profile reaches it exactly"
        return Intervention(limit, self._arm_of[i], self.robot.joint_names[i], q, _NAN,
                            f"target needs {needed:.4g} > {limit} limit {allowed:.4g} over one {dt * 1e3:.1f} ms step "
                            f"({reach}): moving toward it at the limits")

    # --- commit ------------------------------------------------------------------------------------------------------

    def _commit(self, now, t, p, v, a, extent, state, events, poses=None, interior=()) -> SafeCommand:
        """Commit the state (p, v, a), lists, as the command at `now` (timeline time t); `interior`: the piece's
        points inside the period (see _piece)."""
        lists = p, v, a
        self._t = t
        self._set_state(np.array(p), np.array(v), np.array(a), lists)
        for k, guard in enumerate(self._arms):
            guard.set_pose(poses[k] if poses is not None else self.robot.fk(self._p, guard.spec.ee_frame_id,
                                                                             self._data))
        self._remember(t, interior)
        if self._relaxed:
            relaxed = self._lookahead.tighten(self._p, extent)
            rest = np.asarray(extent[0])
            for guard in self._arms:
                relaxed = guard.tighten(self._p, rest) or relaxed
            self._relaxed = relaxed
        return self._emit(SafeCommand(now, self._p, self._v, self._a, state, tuple(events), self._segment, t))

    def _piece(self, dt: float, weights: list[float]) -> list[tuple[float, list, list, list]]:
        """The points inside the period of the piece from the commanded state to its end dt later, at every time a
        joint's jerk changes, as (timeline time, p, v, a): each joint moves `weights` of its group's step plus the
        rest of its stop, pointwise (how the step was mixed with the stop). Empty without keep_trajectory."""
        if not self.keep_trajectory:
            return []
        A, J, start = self._lookahead.A, self._lookahead.J, self._t
        braking = [i for i, w in enumerate(weights) if w < 1.0]
        times = set(stop_breakpoints([self._vl[i] for i in braking], [self._al[i] for i in braking],
                                     [A[i] for i in braking], [J[i] for i in braking]))
        stepping = [g for g in self._groups if any(weights[i] > 0.0 for i in g.index)]
        for group in stepping:
            times.update(group.breakpoints())
        taus = []
        for x in sorted(x for x in times if 1e-6 < x < dt - 1e-6):
            if not taus or x - taus[-1] > 1e-9:  # joints' breakpoints equal up to rounding: one point
                taus.append(x)
        if not taus:
            return []
        if not braking:  # every joint on its group's step (the usual case): lists, no stop to mix in
            points = []
            for tau in taus:
                p, v, a = list(self._zeros_l), list(self._zeros_l), list(self._zeros_l)
                for group in self._groups:
                    joints = group.span
                    if joints is not None:
                        p[joints], v[joints], a[joints] = group.sample(tau)
                    else:
                        for i, x, y, z in zip(group.index, *group.sample(tau)):
                            p[i], v[i], a[i] = x, y, z
                points.append((start + tau, p, v, a))
            return points
        dx, velocity, acceleration = stop_samples(self._vl, self._al, A, J, taus)
        position = self._p + dx
        if stepping:  # each joint: weights * its group's step + (1 - weights) * its stop, pointwise
            w = np.asarray(weights)
            step = [position.copy(), velocity.copy(), acceleration.copy()]
            for group in stepping:
                samples = [group.sample(tau) for tau in taus]  # (p, v, a) per tau; one assignment per quantity
                for quantity, whole in enumerate(step):
                    whole[:, group.index] = [sample[quantity] for sample in samples]
            position, velocity, acceleration = (w * x + (1.0 - w) * y
                                                for x, y in zip(step, (position, velocity, acceleration)))
        return [(start + tau, p, v, a) for tau, p, v, a in zip(taus, position, velocity, acceleration)]

    def _remember(self, t: float, interior=()) -> None:
        """Keep the commanded state at t, after the points inside its piece, for the controller trajectory (the last
        controller_delay of it)."""
        recent = self._recent
        recent.extend(interior)
        recent.append((t, self._pl, self._vl, self._al))
        while recent[0][0] <= t - self.controller_delay - 1e-9:
            recent.popleft()

    def _emit(self, command: SafeCommand, remember: bool = True) -> SafeCommand:
        if remember:
            self._last = command
        if command.interventions:
            self._counter.add(command.interventions)
        return command
