"""An independent re-check of a stream of safety-filter commands: shares no code with the filter but the robot model.

Velocity, acceleration and jerk are recomputed from consecutive commands as divided differences over their stamps
(v = f[t1, t2], a = 2 f[t0, t1, t2], jerk = 6 f[t0..t3]): for equal spacing exactly the backward differences, and
for unequal spacing, unlike backward differences divided by the last interval, within the derivative bounds of any
smooth trajectory through the points. Positions are checked against the configured ranges minus margins (relaxed to
a segment's start where that is outside), each arm's EE against its workspace box and EE speed limits; also
finiteness, repeated stamps, "stopped" = at rest, segments starting at rest and, given the call, that bad input was
refused and reported. Tolerances cover floating-point rounding only. Used by `vla-ros bench safety` (fuzzing) and by
the demo (every command it sent). `controller_trajectory_problems` checks what a trajectory controller is sent for a
command against what ros2_control's JointTrajectoryController accepts and the filter promises.
"""

from __future__ import annotations

import math

import numpy as np

from vla_ros.core.robot import RobotModel
from vla_ros.core.safety.config import SafetyConfig

_EPS = np.finfo(float).eps


class LimitChecker:
    """Independent re-check of a command stream (see the module docstring). `check` returns the problems found in
    one command, given the call that produced it."""

    def __init__(self, robot: RobotModel, config: SafetyConfig):
        self.robot, self.config = robot, config
        limits = robot.limits
        margin = np.empty(robot.nq)
        prismatic = ("JointModelPX", "JointModelPY", "JointModelPZ", "JointModelPrismaticUnaligned")
        for i, joint in enumerate(robot.model.joints[1:]):
            margin[i] = config.prismatic_margin if joint.shortname() in prismatic else config.revolute_margin
        for arm in robot.arms:
            if arm.gripper is not None:
                margin[arm.gripper.index] = config.gripper_margin
        for name, value in config.joint_margins.items():
            margin[robot.joint_names.index(name)] = value
        margin = np.minimum(margin, config.max_margin_fraction * (limits.upper - limits.lower))
        self.lower, self.upper = limits.lower + margin, limits.upper - margin
        self.v_max = limits.velocity * config.velocity_scale
        self.a_max = limits.acceleration * config.acceleration_scale
        self.j_max = limits.jerk * config.jerk_scale
        self.data = robot.new_data()
        self.segment = None
        self.times: list[float] = []
        self.points: list[np.ndarray] = []
        self.poses: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def check(self, command, call: tuple | None = None) -> list[str]:
        problems = []
        if call is not None:
            problems += self._check_call(command, call)
        if command.positions is None:
            if command.state != "not_ready":
                problems.append(f"state {command.state} without positions")
            return problems
        p = np.array(command.positions, dtype=float)
        if p.shape != (self.robot.nq,) or not np.isfinite(p).all() or not np.isfinite(command.velocities).all():
            return problems + ["non-finite or mis-shaped command"]
        if command.state == "stopped" and (np.any(command.velocities) or np.any(command.accelerations)):
            problems.append("state stopped while moving")
        stamp = command.timeline  # the filter's timeline: smooth across clock jumps (the stamp is the clock's)
        if command.segment != self.segment:
            return problems + self._start_segment(command, p)
        if stamp == self.times[-1]:
            if not np.array_equal(p, self.points[-1]):
                problems.append("a repeated stamp changed the command")
            return problems
        if not stamp > self.times[-1]:
            return problems + [f"stamp went back from {self.times[-1]} to {stamp}"]
        self.times, self.points = self.times[-3:] + [stamp], self.points[-3:] + [p]
        problems += self._check_position(p)
        problems += self._check_derivatives()
        problems += self._check_ee(p, stamp - self.times[-2])
        return problems

    def _start_segment(self, command, p) -> list[str]:
        """A segment starts at the measured position at rest: earlier history is that position held."""
        self.segment = command.segment
        self.seg_lower, self.seg_upper = np.minimum(self.lower, p), np.maximum(self.upper, p)
        stamp = command.timeline
        self.times = [stamp - 3.0, stamp - 2.0, stamp - 1.0, stamp]
        self.points = [p] * 4
        self.boxes = {}
        for arm in self.robot.arms:
            pose = self.robot.fk(p, arm.ee_frame_id, self.data)
            self.boxes[arm.name] = (np.minimum(arm.workspace_min, pose.translation),
                                    np.maximum(arm.workspace_max, pose.translation))
            self.poses[arm.name] = (pose.translation.copy(), pose.rotation.copy())
        if np.any(command.velocities) or np.any(command.accelerations):
            return ["a segment does not start at rest"]
        return []

    def _check_position(self, p) -> list[str]:
        tol = 1e-9
        bad = np.flatnonzero((p < self.seg_lower - tol) | (p > self.seg_upper + tol))
        return [f"position {self.robot.joint_names[i]} = {p[i]:.6f} outside [{self.seg_lower[i]:.6f}, "
                f"{self.seg_upper[i]:.6f}]" for i in bad]

    def _check_derivatives(self) -> list[str]:
        t0, t1, t2, t3 = self.times
        x0, x1, x2, x3 = self.points
        d01, d12, d23 = (x1 - x0) / (t1 - t0), (x2 - x1) / (t2 - t1), (x3 - x2) / (t3 - t2)
        d012, d123 = (d12 - d01) / (t2 - t0), (d23 - d12) / (t3 - t1)
        d0123 = (d123 - d012) / (t3 - t0)
        # Rounding of the positions (a few ulps) amplified by the differences at the smallest interval.
        rounding = 8 * _EPS * max(1.0, float(np.abs(self.points).max()))
        h = min(t1 - t0, t2 - t1, t3 - t2)
        problems = []
        for name, value, bound, slack in (("velocity", d23, self.v_max, 2 * rounding / h),
                                          ("acceleration", 2 * d123, self.a_max, 8 * rounding / h**2),
                                          ("jerk", 6 * d0123, self.j_max, 48 * rounding / h**3)):
            over = np.flatnonzero(np.abs(value) > bound * (1 + 1e-6) + slack)
            problems += [f"{name} {self.robot.joint_names[i]} = {value[i]:.6g} > {bound[i]:.6g}" for i in over]
        return problems

    def _check_ee(self, p, dt) -> list[str]:
        problems = []
        for arm in self.robot.arms:
            pose = self.robot.fk(p, arm.ee_frame_id, self.data)
            lower, upper = self.boxes[arm.name]
            x = pose.translation
            if np.any(x < lower - 1e-9) or np.any(x > upper + 1e-9):
                problems.append(f"workspace {arm.name}: EE {np.round(x, 4).tolist()} outside the box")
            previous_x, previous_r = self.poses[arm.name]
            linear = np.linalg.norm(x - previous_x) / dt
            relative = previous_r.T @ pose.rotation
            # angle = atan2(|axis| sin, cos): accurate at small angles (unlike arccos of the trace)
            sine = np.linalg.norm([relative[2, 1] - relative[1, 2], relative[0, 2] - relative[2, 0],
                                   relative[1, 0] - relative[0, 1]]) / 2
            angular = math.atan2(sine, (np.trace(relative) - 1) / 2) / dt
            if linear > arm.max_ee_linear_speed * (1 + 1e-6) + 1e-12 / dt:
                problems.append(f"ee_linear_speed {arm.name}: {linear:.4f} > {arm.max_ee_linear_speed}")
            if angular > arm.max_ee_angular_speed * (1 + 1e-6) + 1e-9 / dt:
                problems.append(f"ee_angular_speed {arm.name}: {angular:.4f} > {arm.max_ee_angular_speed}")
            self.poses[arm.name] = (x.copy(), pose.rotation.copy())
        return problems

    def _check_call(self, command, call) -> list[str]:
        """Bad input must be refused and reported; an unreported command must be the target, by name."""
        names, values = call
        limits = {i.limit for i in command.interventions}
        valid = self._valid(names, values)
        if not valid:
            if command.state == "ok" or "input" not in limits:
                return [f"bad target accepted or unreported (state {command.state}, reported {sorted(limits)})"]
            return []
        moved = limits & {"position", "velocity", "acceleration", "jerk", "trajectory", "workspace", "ee_linear_speed",
                          "ee_angular_speed"}
        if command.state == "ok" and not moved and command.positions is not None:
            index = [self.robot.joint_names.index(n) for n in names]
            off = np.abs(np.asarray(command.positions)[index] - np.asarray(values, dtype=float))
            if off.max() > self.config.tracking_tolerance + 1e-9:
                k = int(np.argmax(off))
                return [f"target of {names[k]} changed by {off[k]:.3g} without an intervention"]
        return []

    def _valid(self, names, values) -> bool:
        if names is None or isinstance(names, (str, bytes)) or values is None:
            return False
        try:
            raw = np.asarray(values)
            if raw.dtype.kind not in "iuf":  # complex, bool, text, objects (e.g. ints beyond float range)
                return False
            values = raw.astype(float)
            names = list(names)
        except (TypeError, ValueError, OverflowError):
            return False
        return (values.ndim == 1 and len(names) == len(values) and len(names) > 0
                and all(isinstance(n, str) and n in self.robot.joint_names for n in names)
                and len(set(names)) == len(names) and bool(np.isfinite(values).all()))


def controller_trajectory_problems(f, command) -> list[str]:
    """What a JointTrajectoryController would refuse or misread in the message for `command` (filter `f` keeps the
    controller trajectory): times not strictly increasing from > 0, the command not at controller_delay, a last point
    not exactly at rest (the JTC refuses one moving by more than float epsilon; we promise rest)."""
    if not f.keep_trajectory or not command.sendable:
        return []
    sent = f.controller_trajectory()
    problems = []
    if sent.times[0] <= 0 or np.any(np.diff(sent.times) <= 0):
        problems.append("controller_trajectory times not strictly increasing from > 0")
    at = np.flatnonzero(np.isclose(sent.times, f.controller_delay, rtol=0, atol=1e-9))
    if not at.size or not np.array_equal(sent.positions[at[0]], command.positions):
        problems.append("controller_trajectory does not carry the command at controller_delay")
    if sent.velocities[-1].any() or sent.accelerations[-1].any():
        problems.append("controller_trajectory does not end at rest")
    return problems
