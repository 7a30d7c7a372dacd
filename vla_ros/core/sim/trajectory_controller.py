"""What a ros2_control JointTrajectoryController (Jazzy) makes of the trajectories it receives: the desired joint
state over time. The sim follows it, and the controller-timing audit (test_safety_audit, bench safety) measures it.

Modelled as the controller does it (joint_trajectory_controller/src/trajectory.cpp, spline interpolation):
  - a trajectory starts at header.stamp, or on receipt when the stamp is zero;
  - on receipt the desired state at that moment becomes the point before the trajectory (the controller's
    `interpolate_from_desired_state`; its default closed-loop mode uses the measured state instead);
  - before the first point: interpolation from that state to the first point; between points: quintic when both
    carry velocities and accelerations, cubic with velocities only, linear with positions only;
  - after the last point: its positions held, velocity and acceleration zero.
Time is injected (`now`, seconds); nothing here reads a clock.
"""

from __future__ import annotations

import numpy as np


def _interpolate(t0: float, a: tuple, t1: float, b: tuple, t: float):
    """(p, v, acc) at t between states a = (p, v|None, acc|None) at t0 and b at t1, as the controller interpolates."""
    (p0, v0, a0), (p1, v1, a1) = a, b
    h, s = t1 - t0, t - t0
    if h <= 0.0:
        return p1.copy(), np.zeros_like(p1), np.zeros_like(p1)
    if not 0.0 <= s <= h:  # outside the segment the controller clamps the time and drops the derivatives
        s, v0 = min(max(s, 0.0), h), None
    if v0 is None or v1 is None:
        slope = (p1 - p0) / h
        return p0 + slope * s, slope, np.zeros_like(p0)
    if a0 is None or a1 is None:
        c2 = (-3.0 * p0 + 3.0 * p1 - 2.0 * v0 * h - v1 * h) / h**2
        c3 = (2.0 * p0 - 2.0 * p1 + v0 * h + v1 * h) / h**3
        return (p0 + v0 * s + c2 * s**2 + c3 * s**3, v0 + 2.0 * c2 * s + 3.0 * c3 * s**2, 2.0 * c2 + 6.0 * c3 * s)
    c2 = 0.5 * a0
    c3 = (-20.0 * p0 + 20.0 * p1 - 3.0 * a0 * h**2 + a1 * h**2 - 12.0 * v0 * h - 8.0 * v1 * h) / (2.0 * h**3)
    c4 = (30.0 * p0 - 30.0 * p1 + 3.0 * a0 * h**2 - 2.0 * a1 * h**2 + 16.0 * v0 * h + 14.0 * v1 * h) / (2.0 * h**4)
    c5 = (-12.0 * p0 + 12.0 * p1 - a0 * h**2 + a1 * h**2 - 6.0 * v0 * h - 6.0 * v1 * h) / (2.0 * h**5)
    return (p0 + s * (v0 + s * (c2 + s * (c3 + s * (c4 + s * c5)))),
            v0 + s * (2.0 * c2 + s * (3.0 * c3 + s * (4.0 * c4 + s * 5.0 * c5))),
            2.0 * c2 + s * (6.0 * c3 + s * (12.0 * c4 + s * 20.0 * c5)))


class TrajectoryController:
    """The desired state of `n` joints (the controller's joint order) under the trajectories received so far."""

    def __init__(self, initial: np.ndarray):
        self._before = (np.asarray(initial, dtype=float).copy(), np.zeros(len(initial)), np.zeros(len(initial)))
        self._received = -np.inf
        self._start = 0.0
        self._times = np.zeros(0)
        self._points: list[tuple] = []

    def receive(self, now: float, times, positions, velocities=None, accelerations=None,
                start: float | None = None) -> None:
        """A trajectory received at `now`: point times (s from its start, strictly increasing), positions (K, n),
        optional velocities / accelerations (K, n); `start` = header.stamp, None = on receipt."""
        self._before = self.sample(now)
        self._received = now
        self._start = now if start is None else start
        self._times = np.asarray(times, dtype=float)
        positions = np.asarray(positions, dtype=float)
        velocities = None if velocities is None else np.asarray(velocities, dtype=float)
        accelerations = None if accelerations is None else np.asarray(accelerations, dtype=float)
        self._points = [(positions[k], None if velocities is None else velocities[k],
                         None if accelerations is None else accelerations[k]) for k in range(len(positions))]

    def sample(self, now: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Desired (positions, velocities, accelerations) at `now`."""
        if not self._points:
            p, _, _ = self._before
            return p.copy(), np.zeros_like(p), np.zeros_like(p)
        times = self._start + self._times
        if now < times[0]:
            return _interpolate(self._received, self._before, times[0], self._points[0], now)
        k = int(np.searchsorted(times, now, side="right"))
        if k >= len(times):
            p = self._points[-1][0]
            return p.copy(), np.zeros_like(p), np.zeros_like(p)
        return _interpolate(times[k - 1], self._points[k - 1], times[k], self._points[k], now)
