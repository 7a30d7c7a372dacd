"""What the safety filter reports: the command it produced, each intervention, and whole-chunk pre-check findings.

Every record is flat (strings and floats) so it goes as-is into /diagnostics key-values and replay metrics.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

# Intervention / violation kinds. Per joint: position (range or braking distance), velocity, acceleration, jerk,
# trajectory (the trajectory generator found no profile: the joint group brakes). Per arm: workspace,
# ee_linear_speed, ee_angular_speed. Whole command: input (refused: bad target, joint state or time), time (a call
# not after the previous command, the clock going back, or a gap), late_call (a call later than the controller delay:
# braked for the excess first), state_stale, command_stale, estop, not_ready, reset (a refused reset).
LIMITS = (
    "position", "velocity", "acceleration", "jerk", "trajectory", "workspace", "ee_linear_speed", "ee_angular_speed",
    "input", "time", "late_call", "state_stale", "command_stale", "estop", "not_ready", "reset",
)
# SafeCommand.state values.
STATES = ("ok", "hold", "stopping", "stopped", "estop", "not_ready")


@dataclass(frozen=True)
class Intervention:
    """One thing the filter changed or refused. `requested` vs `allowed` are in the limit's unit (rad, m, m/s, s...).

    Joint limits name the joint (and its arm); EE limits name the arm only; whole-command kinds name neither.
    """

    limit: str
    arm: str | None
    joint: str | None
    requested: float
    allowed: float
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {"limit": self.limit, "arm": self.arm, "joint": self.joint, "requested": self.requested,
                "allowed": self.allowed, "detail": self.detail}


@dataclass(frozen=True)
class SafeCommand:
    """The command for hardware at time `stamp` (robot.joint_names order), or nothing to send (`positions` None).

    `segment` counts (re-)anchorings on the measured state: within one segment consecutive commands form one smooth
    trajectory; the first command of a segment is the measured position at rest. A call that cannot advance time
    returns the previous command again (same stamp; re-stamped on the new clock when the clock went back).
    `timeline`: the command's time on the filter's own timeline, which equals `stamp` until the caller's clock goes
    back (then the timeline continues from the last command); the trajectory is smooth on the timeline.
    """

    stamp: float
    positions: np.ndarray | None
    velocities: np.ndarray | None
    accelerations: np.ndarray | None
    state: str
    interventions: tuple[Intervention, ...]
    segment: int
    timeline: float

    @property
    def sendable(self) -> bool:
        return self.positions is not None


@dataclass(frozen=True)
class ResetResult:
    """The answer to SafetyFilter.reset(): accepted, or refused with the first rule that failed (modes.py)."""

    accepted: bool
    reason: str

    def __bool__(self) -> bool:
        return self.accepted


@dataclass(frozen=True)
class Violation:
    """A limit a planned trajectory (chunk) would break. `step` is the first offending row; `requested` the worst
    value over the chunk; `time_scale` how much slower (dt multiplied by it) the chunk would have to run to satisfy a
    velocity / acceleration / jerk / EE speed limit (None when slowing down cannot help)."""

    limit: str
    arm: str | None
    joint: str | None
    step: int
    requested: float
    allowed: float
    time_scale: float | None
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {"limit": self.limit, "arm": self.arm, "joint": self.joint, "step": self.step,
                "requested": self.requested, "allowed": self.allowed, "time_scale": self.time_scale,
                "detail": self.detail}


class InterventionCounter:
    """Counts of interventions by limit kind (every kind present, zero included) for /diagnostics and metrics."""

    def __init__(self):
        self._counts: Counter[str] = Counter()

    def add(self, interventions: tuple[Intervention, ...] | list[Intervention]) -> None:
        self._counts.update(i.limit for i in interventions)

    def counts(self) -> dict[str, int]:
        return {limit: self._counts[limit] for limit in LIMITS}

    @property
    def total(self) -> int:
        return sum(self._counts.values())
