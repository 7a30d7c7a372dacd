"""Staleness watchdog: how old the measured joint state and the last accepted target are, and what that calls for.

Joint states may arrive from several topics (an arm and its gripper often publish separately), so each joint has its
own stamp and the state is as old as its oldest joint.
"""

from __future__ import annotations

import math

import numpy as np

from vla_ros.core.safety.config import SafetyConfig


class Watchdog:
    def __init__(self, nq: int, config: SafetyConfig):
        self.config = config
        self.positions = np.full(nq, np.nan)  # latest measured position per joint
        self._state_stamps = np.full(nq, -math.inf)
        self._oldest = -math.inf  # the oldest joint's stamp (-inf until every joint was measured)
        self.last_command = -math.inf

    def state_seen(self, index: np.ndarray, positions: np.ndarray, stamp: float) -> None:
        """Positions of joints `index` measured at `stamp` (finite); older than a joint's last measurement: ignored."""
        newer = stamp >= self._state_stamps[index]
        self.positions[index[newer]] = positions[newer]
        self._state_stamps[index[newer]] = stamp
        self._oldest = float(self._state_stamps.min())

    def command_seen(self, now: float) -> None:
        self.last_command = now

    def forget_commands(self) -> None:
        self.last_command = -math.inf

    @property
    def state_complete(self) -> bool:
        return self._oldest > -math.inf

    def state_age(self, now: float) -> float:
        """Seconds since the oldest joint's last measurement (inf before every joint was measured; >= 0)."""
        return max(0.0, now - self._oldest)

    def command_age(self, now: float) -> float:
        return max(0.0, now - self.last_command)

    def state_holds(self, now: float) -> bool:
        """Too old to accept targets computed from it (the last accepted target is held)."""
        return self.state_age(now) > self.config.joint_state_hold_after

    def state_stops(self, now: float) -> bool:
        return self.state_age(now) > self.config.joint_state_stop_after

    def command_stops(self, now: float) -> bool:
        return self.command_age(now) > self.config.command_stop_after
