"""Whether the drivers' joint-state rate leaves the watchdog room for an ordinary late message.

The filter refuses targets once the measured state is older than `joint_state_hold_after` (0.05 s by default). A
control tick can come just before the next joint-state message, so the state it sees is up to one message period
old before any lateness: at 30 Hz (franka_ros2's default `joint_state_rate`) a message 17 ms late already holds the
arm. That is a configuration mismatch, not a fault, so it is reported once per topic with what to change.
"""

from __future__ import annotations

from collections import deque

import numpy as np


class StateRateCheck:
    """Feed it each joint-state message's receipt time per topic; it answers one warning line per topic whose median
    period (over `samples` messages) leaves less than half of `hold_after` for lateness."""

    def __init__(self, hold_after: float, samples: int = 50):
        self.hold_after, self.samples = hold_after, samples
        self._last: dict[str, float] = {}
        self._periods: dict[str, deque] = {}
        self._done: set[str] = set()  # topics judged (warned or found fine)
        self.periods: dict[str, float] = {}  # median period per judged topic, s

    def observe(self, topic: str, now: float) -> str | None:
        if topic in self._done:
            return None
        last, self._last[topic] = self._last.get(topic), now
        if last is None or not now > last:
            return None
        periods = self._periods.setdefault(topic, deque(maxlen=self.samples))
        periods.append(now - last)
        if len(periods) < self.samples:
            return None
        self._done.add(topic)
        period = self.periods[topic] = float(np.median(periods))
        slack = self.hold_after - period
        if slack >= 0.5 * self.hold_after:
            return None
        return (f"{topic}: joint states arrive every {period * 1e3:.0f} ms ({1.0 / period:.0f} Hz), so "
                f"watchdog.joint_state_hold_after {self.hold_after:g} s leaves {max(slack, 0.0) * 1e3:.0f} ms for a "
                f"late message before targets are refused and the arm holds: publish them at "
                f">= {2.0 / self.hold_after:.0f} Hz or raise joint_state_hold_after in the safety config")
