"""What a trajectory controller (ros2_control's JointTrajectoryController) is sent after each filter command, so that
what it executes is the motion the filter checked, whatever the spacing of the calls.

A one-point trajectory reaching each command one control period later asks the controller for the distance the
filter covered over the real call interval in one period: late calls (a hold timer, jitter, a stall) became
proportionally faster motion, and a stall left it holding at speed. Instead the controller runs the filter's own
trajectory `delay` seconds late (SafetyConfig.controller_delay_periods control periods), and each message carries:
  - the filter's commands of the last `delay` seconds and the new one, as points (position, velocity, acceleration)
    at `time_from_start` = (command time - new command time) + delay;
  - then the time-optimal stop from the new command, sampled at its breakpoints, ending at rest.
Consecutive messages overlap on the same timeline, so the controller's switch from one to the next is seamless as
long as each arrives within `delay` of the previous one; when none arrives it completes the stop within the limits
and ends at rest (a JointTrajectoryController rejects trajectories ending with a non-zero velocity). The filter keeps
its side of this promise: a call later than `delay` first brakes for the excess (filter.py).

Between the breakpoints of the stop every joint moves along one cubic, which the controller's quintic interpolation
through (position, velocity, acceleration) reproduces exactly; between two commands the quintic approximates the
filter's jerk-limited piece (both share position, velocity and acceleration at the ends).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vla_ros.core.safety.braking import stop_breakpoints, stop_samples

# Points closer than this in time are merged: the controller takes time_from_start in nanoseconds, strictly increasing.
_MIN_SPACING = 1e-6


@dataclass(frozen=True)
class ControllerTrajectory:
    """Points for the controller after the command stamped `stamp`: times (K,) in seconds after that stamp,
    positions / velocities / accelerations (K, nq) in robot.joint_names order. The last point is at rest."""

    stamp: float
    times: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray
    accelerations: np.ndarray


def controller_trajectory(stamp: float, recent: list[tuple[float, list, list, list]], delay: float,
                          acceleration: list[float], jerk: list[float]) -> ControllerTrajectory:
    """`recent`: the filter's commands of the current segment, oldest first, as (timeline time, p, v, a); the last
    is the command stamped `stamp`."""
    now, p, v, a = recent[-1]
    rows = [(t - now + delay, q, qd, qdd) for t, q, qd, qdd in recent[:-1] if t - now + delay > _MIN_SPACING]
    rows.append((delay, p, v, a))
    breaks = stop_breakpoints(v, a, acceleration, jerk)
    if breaks:
        dx, vs, acc = stop_samples(v, a, acceleration, jerk, breaks)
        base = np.asarray(p)
        for tau, d, vel, ac in zip(breaks, dx, vs, acc):
            if tau > _MIN_SPACING:
                rows.append((delay + tau, base + d, vel, ac))
    kept = [rows[0]]
    for row in rows[1:]:
        if row[0] - kept[-1][0] > _MIN_SPACING:
            kept.append(row)
        elif row is rows[-1]:  # the final rest point wins over a point just before it
            kept[-1] = row
    times, positions, velocities, accelerations = (np.array(x) for x in zip(*kept))
    return ControllerTrajectory(stamp, times, positions, velocities, accelerations)
