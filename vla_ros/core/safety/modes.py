"""The safety filter's state machine: what kind of command each call produces, when targets are accepted, when the
e-stop latches and when reset() is allowed. This table is what a reviewer audits (docs/safety.md repeats it).

Modes: not_ready (nothing anchored: nothing is sent), tracking, stopping (graded stop), estop (latched).
SafeCommand.state names the call: not_ready, ok (tracking, a target accepted this call), hold (tracking, no new
target: still moving toward the last one), stopping, stopped (at rest after a stop), estop.

Every call (filter / tick) at clock time `now`, rules in order, the first that applies decides:

| #  | mode      | condition                                                   | next mode           | command               |
|----|-----------|-------------------------------------------------------------|---------------------|-----------------------|
| 1  | any       | `now` not a finite number                                   | unchanged           | repeat; input counted |
| 2  | not_ready | measured state incomplete, older than hold_after, or future | not_ready           | none (reason once)    |
| 3  | not_ready | measured state complete and fresh                           | tracking / estop    | anchor                |
| 4  | anchored  | `now` before the previous command (the clock went back)     | unchanged / estop * | repeat, re-stamped    |
| 5  | anchored  | `now` less than min_step after the previous command         | unchanged           | repeat                |
| 6  | anchored  | e-stop latched                                              | estop               | brake                 |
| 7  | anchored  | measured state older than joint_state_stop_after or missing | stopping            | brake                 |
| 8  | anchored  | no call for more than command_stop_after                    | stopping            | brake                 |
| 9  | anchored  | no target accepted since anchoring or the last stop         | unchanged           | brake (stays at rest) |
| 10 | anchored  | last accepted target older than command_stop_after          | stopping            | brake                 |
| 11 | anchored  | otherwise                                                   | tracking            | step **               |

anchor: the measured position (clipped into the URDF range) at rest, a new segment. repeat: the previous command
again. brake: the time-optimal stop at the acceleration / jerk limits from the commanded state; "stopped" once at
rest. step: toward the target within every limit (filter.py). The reasons of rules 2 and 6-10 are reported once when
they start, not every call.
*  estop when the clock went back by more than clock_jump_estop; the command is re-stamped on the new clock and the
   filter's timeline continues from it.
** a call later than controller_delay first brakes for the excess (what a trajectory controller did meanwhile).

Targets (filter): accepted (mode tracking, state ok) only if valid (finite numbers, known joints by name), the
e-stop is not latched and the measured state is at most joint_state_hold_after old; else refused and counted, the
last accepted target held.

estop(reason): any mode -> estop, latched whatever `reason` is (None included); never raises.

reset(now): estop / stopping / tracking -> not_ready (rule 3 re-anchors at the next call), accepted only if, in order:
  a. `now` is a finite number, not before the previous command;
  b. the measured state is complete and at most joint_state_hold_after old;
  c. the commanded state is at rest (a braking command is never cut short);
  d. the measured arm is at rest: every joint moved at most rest_tolerance over the last rest_window seconds (at
     least two joint states spanning half of it) and reports no velocity above rest_velocity.
Else refused with the first failing rule as the reason (counted as `reset`); the mode is unchanged.
"""

from __future__ import annotations

import math

from vla_ros.core.safety.config import SafetyConfig, SafetyLimits
from vla_ros.core.safety.report import Intervention
from vla_ros.core.safety.watchdog import Watchdog

_NAN = math.nan


class Modes:
    """Mode, e-stop latch and the rules of the table above. Facts come from the filter (times on the filter's
    timeline, measured-state ages on the caller's clock); kinematics stay in the filter."""

    def __init__(self, config: SafetyConfig, limits: SafetyLimits, watchdog: Watchdog):
        self.config, self.limits, self.watchdog = config, limits, watchdog
        self.mode = "not_ready"
        self.estop_reason: str | None = None
        self.reported: str | None = None  # the rule 2 / 6-10 reason already reported (reported once per start)

    # --- e-stop ---------------------------------------------------------------------------------------------------

    @property
    def estopped(self) -> bool:
        return self.estop_reason is not None

    def latch(self, reason: object) -> Intervention | None:
        """Latch the e-stop (the first reason is kept); the report, or None when it was latched already."""
        if self.estop_reason is not None:
            return None
        self.estop_reason = str(reason) if reason is not None and str(reason) else "e-stop requested (no reason given)"
        if self.mode != "not_ready":
            self.mode = "estop"
        return Intervention("estop", None, None, _NAN, _NAN, f"e-stop latched: {self.estop_reason}")

    # --- rules 2-3: anchoring -------------------------------------------------------------------------------------

    def may_anchor(self, now: float, with_target: bool) -> tuple[bool, Intervention | None]:
        """(anchor now?, report): a refused target is reported every time, the reason alone once."""
        reason = self.watchdog.stale_reason(now, self.config.joint_state_hold_after)
        if reason is None:
            self.mode, self.reported = ("estop" if self.estopped else "tracking"), None
            return True, None
        if with_target:
            return False, Intervention("not_ready", None, None, _NAN, _NAN, f"target refused: not anchored: {reason}")
        return False, self._once("not_ready", Intervention("not_ready", None, None, _NAN, _NAN,
                                                           f"not anchored: {reason}"))

    # --- rules 6-10: braking --------------------------------------------------------------------------------------

    def brake_reason(self, now: float, dt: float, t: float, has_target: bool) -> tuple[str | None, Intervention | None]:
        """(why this call brakes, its report when the reason starts) or (None, None): track (rule 11)."""
        config = self.config
        if self.estopped:
            kind, report = "estop", None
        elif (stale := self.watchdog.stale_reason(now, config.joint_state_stop_after)) is not None:
            age = self.watchdog.state_age(now)
            kind, report = "state_stale", Intervention("state_stale", None, None, age, config.joint_state_stop_after,
                                                       f"{stale}: graded stop")
        elif dt > config.command_stop_after:
            kind, report = "gap", Intervention("time", None, None, dt, config.command_stop_after,
                                               f"no command for {dt:.3f} s (max {config.command_stop_after:g} s): "
                                               f"graded stop")
        elif not has_target:
            kind, report = "idle", None
        elif (age := self.watchdog.command_age(t)) > config.command_stop_after:
            kind, report = "command_stale", Intervention("command_stale", None, None, age, config.command_stop_after,
                                                         f"no new target for {age:.3f} s (max "
                                                         f"{config.command_stop_after:g} s): graded stop")
        else:
            self.mode, self.reported = "tracking", None
            return None, None
        if kind not in ("estop", "idle"):  # idle: at rest waiting for a first target, the mode stays
            self.mode = "stopping"
        return kind, self._once(kind, report)

    def _once(self, kind: str, report: Intervention | None) -> Intervention | None:
        if kind == self.reported:
            return None
        self.reported = kind
        return report

    # --- targets --------------------------------------------------------------------------------------------------

    def target_refusal(self, now: float) -> Intervention | None:
        if self.estopped:
            return Intervention("estop", None, None, _NAN, _NAN,
                                f"target refused: e-stop latched ({self.estop_reason}); call reset")
        stale = self.watchdog.stale_reason(now, self.config.joint_state_hold_after)
        if stale is not None:
            return Intervention("state_stale", None, None, self.watchdog.state_age(now),
                                self.config.joint_state_hold_after, f"target refused: {stale}; holding")
        return None

    # --- reset ----------------------------------------------------------------------------------------------------

    def reset_refusal(self, now: float, commanded_at_rest: bool) -> str | None:
        """Rules b-d of reset (a is the filter's: it owns the timeline); None = accepted."""
        config = self.config
        stale = self.watchdog.stale_reason(now, config.joint_state_hold_after)
        if stale is not None:
            return f"reset refused: {stale}"
        if not commanded_at_rest:
            return "reset refused: the command is still braking; retry once it is at rest"
        moving = self.watchdog.moving_reason(now, config.rest_window, self.limits.rest_tolerance,
                                             self.limits.rest_velocity)
        if moving is not None:
            return f"reset refused: {moving}"
        return None

    def reset(self) -> None:
        self.estop_reason, self.mode, self.reported = None, "not_ready", None
