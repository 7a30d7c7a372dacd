"""What the filter knows of the measured arm: the latest joint states, how old they are, whether the arm is at rest;
and how old the last accepted target is.

Joint states may arrive from several topics (an arm and its gripper often publish separately), so each joint has its
own stamp: the state is as old as its oldest joint, and "from the future" (a clock that went back, a bad stamp) as
soon as one joint's stamp is ahead of the call time by more than a tolerance. Such joints are forgotten (they must be
measured again on the current clock), so one bad stamp never freezes the watchdog.
"""

from __future__ import annotations

import math

import numpy as np

_HISTORY = 1024  # joint-state updates kept for the at-rest test (0.2 s at up to 5 kHz)


class Watchdog:
    def __init__(self, nq: int, names: tuple[str, ...], prismatic: np.ndarray):
        self.names = names
        self._units = np.where(prismatic, "m", "rad")
        self.positions = np.full(nq, np.nan)  # latest measured position per joint
        self.velocities = np.full(nq, np.nan)  # latest reported velocity per joint (NaN: the driver sent none)
        self._stamps = np.full(nq, -math.inf)
        self._oldest = -math.inf  # the oldest joint's stamp (-inf until every joint was measured)
        self._newest = -math.inf
        self._history_stamps = np.full(_HISTORY, -math.inf)  # ring of updates, for the at-rest test
        self._history = np.full((_HISTORY, nq), np.nan)  # positions per update (NaN: joint not in that update)
        self._row = 0
        self.last_command = -math.inf  # filter timeline time of the last accepted target

    # --- measured state -------------------------------------------------------------------------------------------

    def state_seen(self, index: np.ndarray, positions: np.ndarray, stamp: float,
                   velocities: np.ndarray | None = None) -> None:
        """Positions (and velocities) of joints `index` measured at `stamp` (finite, checked); a joint's update older
        than its last one is ignored (out of order)."""
        newer = stamp >= self._stamps[index]
        if not newer.all():
            index, positions = index[newer], positions[newer]
            velocities = None if velocities is None else velocities[newer]
            if not len(index):
                return
        self.positions[index] = positions
        self.velocities[index] = np.nan if velocities is None else velocities
        self._stamps[index] = stamp
        self._oldest, self._newest = float(self._stamps.min()), float(self._stamps.max())
        row = self._row % _HISTORY
        self._history_stamps[row] = stamp
        self._history[row] = np.nan
        self._history[row, index] = positions
        self._row += 1

    def forget_future(self, now: float, tolerance: float) -> None:
        """Forget joints stamped more than `tolerance` after `now` (the clock went back, or a bad stamp)."""
        if self._newest <= now + tolerance:
            return
        ahead = self._stamps > now + tolerance
        self._stamps[ahead] = -math.inf
        self.positions[ahead] = self.velocities[ahead] = np.nan
        self._oldest, self._newest = float(self._stamps.min()), float(self._stamps.max())
        self._history_stamps[self._history_stamps > now + tolerance] = -math.inf

    @property
    def state_complete(self) -> bool:
        return self._oldest > -math.inf

    def state_age(self, now: float) -> float:
        """Seconds since the oldest joint's last measurement (inf before every joint was measured; >= 0)."""
        return max(0.0, now - self._oldest)

    def stale_reason(self, now: float, max_age: float) -> str | None:
        """Why the measured state cannot be used at `now` (None: complete and at most `max_age` old)."""
        if not self.state_complete:
            missing = [n for n, s in zip(self.names, self._stamps) if s == -math.inf]
            return f"no joint state of {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        age = self.state_age(now)
        if age > max_age:
            return f"joint state is {age:.3f} s old (max {max_age:g} s)"
        return None

    def moving_reason(self, now: float, window: float, tolerance: np.ndarray, velocity: np.ndarray) -> str | None:
        """Why the measured arm is not known to be at rest at `now` (None: at rest): a joint that moved more than its
        `tolerance` over the last `window` seconds, that has fewer than two updates spanning half of it, or whose
        reported velocity exceeds `velocity`."""
        moving = np.flatnonzero(np.abs(self.velocities) > velocity)  # NaN (not reported) compares False
        if moving.size:
            j = moving[0]
            return (f"{self.names[j]} reports {self.velocities[j]:.3f} {self._units[j]}/s "
                    f"(at rest: <= {velocity[j]:g}): the arm is still moving")
        recent = (self._history_stamps >= now - window) & (self._history_stamps <= now)
        stamps, rows = self._history_stamps[recent], self._history[recent]
        seen = ~np.isnan(rows)
        first = np.where(seen, stamps[:, None], np.inf).min(axis=0, initial=np.inf)
        last = np.where(seen, stamps[:, None], -np.inf).max(axis=0, initial=-np.inf)
        sparse = np.flatnonzero((seen.sum(axis=0) < 2) | (last - first < window / 2))
        if sparse.size:
            j = sparse[0]
            return (f"{self.names[j]} has {int(seen[:, j].sum())} joint states in the last {window:g} s: cannot tell "
                    f"the arm is at rest")
        spread = np.nanmax(rows, axis=0) - np.nanmin(rows, axis=0)
        moved = np.flatnonzero(spread > tolerance)
        if moved.size:
            j = moved[0]
            return (f"{self.names[j]} moved {spread[j]:.4f} {self._units[j]} in the last {window:g} s "
                    f"(at rest: <= {tolerance[j]:g}): the arm is still moving")
        return None

    # --- targets ---------------------------------------------------------------------------------------------------

    def command_seen(self, t: float) -> None:
        self.last_command = t

    def forget_commands(self) -> None:
        self.last_command = -math.inf

    def command_age(self, t: float) -> float:
        return max(0.0, t - self.last_command)
