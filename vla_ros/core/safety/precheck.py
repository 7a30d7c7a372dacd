"""Whole-chunk pre-check: which limits a planned joint trajectory would break, and at which step.

The executor calls this before it starts a chunk, to slow it down (Violation.time_scale) or reject it, instead of
letting the filter clamp it step by step. Derivatives are backward differences at the chunk's dt, starting from the
filter's commanded state (so the jump from where the arm is to the chunk's first point counts), which is what the
filter will be asked to follow. A chunk that ends moving toward a limit faster than it can stop there is reported at
its last step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pinocchio as pin

from vla_ros.core.robot import ArmSpec, RobotModel
from vla_ros.core.safety.braking import stop_extent
from vla_ros.core.safety.config import SafetyLimits
from vla_ros.core.safety.report import Violation

_TOL = 1e-9


@dataclass(frozen=True)
class ArmBox:
    spec: ArmSpec
    lower: np.ndarray  # workspace box in force
    upper: np.ndarray
    translation: np.ndarray | None  # EE pose of the commanded state (None: no commanded state yet)
    rotation: np.ndarray | None


def precheck_trajectory(
    robot: RobotModel,
    limits: SafetyLimits,
    lower: np.ndarray,
    upper: np.ndarray,
    boxes: Sequence[ArmBox],
    start: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    trajectory: np.ndarray,
    dt: float,
    names: Sequence[str],
    data: pin.Data,
) -> list[Violation]:
    """See the module docstring. `lower` / `upper`: position range in force; `start`: commanded (p, v, a)."""
    rows, problem = _full_rows(robot, start, trajectory, dt, names)
    if problem is not None:
        return [Violation("input", None, None, 0, np.nan, np.nan, None, f"chunk refused: {problem}")]
    arm_of = {}
    for arm in robot.arms:
        for i in arm.index:
            arm_of[int(i)] = arm.name
        if arm.gripper is not None:
            arm_of[arm.gripper.index] = arm.name
    findings: list[Violation] = []

    def joint_finding(limit, values, bound, scale_power=None, what=""):
        """One Violation per joint whose |values| (steps x joints) exceed `bound` (per joint)."""
        over = np.abs(values) > bound * (1 + _TOL) + _TOL
        for j in np.flatnonzero(over.any(axis=0)):
            steps = np.flatnonzero(over[:, j])
            worst = steps[np.argmax(np.abs(values[steps, j]))]
            ratio = abs(values[worst, j]) / bound[j]
            findings.append(Violation(
                limit, arm_of.get(int(j)), robot.joint_names[j], int(steps[0]), float(values[worst, j]),
                float(bound[j]), None if scale_power is None else float(ratio ** (1.0 / scale_power)),
                f"{what}{len(steps)} of {len(values)} steps, worst {values[worst, j]:.4g} at step {worst} "
                f"(limit {bound[j]:.4g})",
            ))

    # Position range: the centre of the range and its half width make it one |x| <= bound test.
    centre, half = (lower + upper) / 2, (upper - lower) / 2
    offset = rows - centre
    over = np.abs(offset) > half + _TOL
    for j in np.flatnonzero(over.any(axis=0)):
        steps = np.flatnonzero(over[:, j])
        worst = steps[np.argmax(np.abs(offset[steps, j]))]
        bound = upper[j] if offset[worst, j] > 0 else lower[j]
        findings.append(Violation(
            "position", arm_of.get(int(j)), robot.joint_names[j], int(steps[0]), float(rows[worst, j]), float(bound),
            None, f"{len(steps)} of {len(rows)} steps outside [{lower[j]:.4f}, {upper[j]:.4f}], worst "
                  f"{rows[worst, j]:.4f} at step {worst}",
        ))

    history = _history(start, rows, dt)
    velocity = np.diff(history, axis=0) / dt
    acceleration = np.diff(velocity, axis=0) / dt
    jerk = np.diff(acceleration, axis=0) / dt
    count = len(rows)
    joint_finding("velocity", velocity[-count:], limits.velocity, 1)
    joint_finding("acceleration", acceleration[-count:], limits.acceleration, 2)
    joint_finding("jerk", jerk[-count:], limits.jerk, 3)

    # After the last step the arm must be able to stop inside the range.
    _, high, low = stop_extent(np.clip(velocity[-1], -limits.velocity, limits.velocity),
                               np.clip(acceleration[-1], -limits.acceleration, limits.acceleration),
                               limits.acceleration, limits.jerk)
    end = rows[-1]
    inside = (end <= upper + _TOL) & (end >= lower - _TOL)  # (an end outside is reported above already)
    for j in np.flatnonzero(inside & ((end + high > upper + _TOL) | (end + low < lower - _TOL))):
        reach = end[j] + (high[j] if end[j] + high[j] > upper[j] else low[j])
        bound = upper[j] if reach > upper[j] else lower[j]
        findings.append(Violation(
            "position", arm_of.get(int(j)), robot.joint_names[j], count - 1, float(reach), float(bound), None,
            f"moving at {velocity[-1, j]:.4g} at the last step: stopping at the limits ends at {reach:.4f}, "
            f"beyond {bound:.4f}",
        ))

    for box in boxes:
        _ee_findings(robot, box, rows, dt, data, findings)
    return findings


def _full_rows(robot, start, trajectory, dt, names):
    """Chunk -> (T, nq) positions in robot.joint_names order (joints not named stay at the commanded position)."""
    try:
        chunk = np.asarray(trajectory, dtype=float)
        dt = float(dt)
    except (TypeError, ValueError):
        return None, "trajectory / dt are not numbers"
    names = list(names)
    if chunk.ndim != 2 or chunk.shape[0] == 0 or chunk.shape[1] != len(names):
        return None, f"trajectory shape {chunk.shape}, expected (T > 0, {len(names)}) for {len(names)} joint names"
    if not (np.isfinite(dt) and dt > 0):
        return None, f"dt = {dt!r}, expected a positive number of seconds"
    if len(set(names)) != len(names):
        return None, "a joint is named twice"
    unknown = [n for n in names if n not in robot.joint_names]
    if unknown:
        return None, f"unknown joint {unknown[0]!r} (robot {robot.name})"
    bad = np.argwhere(~np.isfinite(chunk))
    if len(bad):
        return None, f"non-finite value at step {bad[0][0]}, joint {names[bad[0][1]]}"
    if start is None and len(names) != robot.nq:
        return None, "no commanded state yet: the chunk must name every joint"
    rows = np.tile(start[0] if start is not None else np.zeros(robot.nq), (len(chunk), 1))
    rows[:, robot.indices(names)] = chunk
    return rows, None


def _history(start, rows, dt):
    """Positions from three samples before the chunk on: the commanded state's Taylor expansion backwards (so its
    velocity and acceleration carry into the first differences), or the first row held when there is none."""
    if start is None:
        return np.vstack([rows[:1]] * 3 + [rows])
    p, v, a = start
    before = [p - 2 * v * dt + 2 * a * dt**2, p - v * dt + 0.5 * a * dt**2, p]
    return np.vstack(before + [rows])


def _ee_findings(robot, box: ArmBox, rows, dt, data, findings):
    spec = box.spec
    poses = [robot.fk(q, spec.ee_frame_id, data) for q in rows]
    points = np.array([pose.translation for pose in poses])
    over = np.maximum(points - box.upper, box.lower - points).max(axis=1)
    outside = np.flatnonzero(over > _TOL)
    if outside.size:
        worst = outside[np.argmax(over[outside])]
        axis = int(np.argmax(np.maximum(points[worst] - box.upper, box.lower - points[worst])))
        bound = box.upper[axis] if points[worst, axis] > box.upper[axis] else box.lower[axis]
        findings.append(Violation(
            "workspace", spec.name, None, int(outside[0]), float(points[worst, axis]), float(bound), None,
            f"EE outside the workspace box on {outside.size} of {len(rows)} steps, worst {'xyz'[axis]} = "
            f"{points[worst, axis]:.4f} m at step {worst}",
        ))
    previous = [(box.translation, box.rotation)] if box.translation is not None else []
    pairs = previous + [(pose.translation, pose.rotation) for pose in poses]
    linear = np.array([np.linalg.norm(b[0] - a[0]) for a, b in zip(pairs, pairs[1:])]) / dt
    angular = np.array([np.linalg.norm(pin.log3(a[1].T @ b[1])) for a, b in zip(pairs, pairs[1:])]) / dt
    first_row = 1 - len(previous)  # speed k is over the step ending at row k + first_row
    for limit, speeds, allowed, unit in (("ee_linear_speed", linear, spec.max_ee_linear_speed, "m/s"),
                                         ("ee_angular_speed", angular, spec.max_ee_angular_speed, "rad/s")):
        fast = np.flatnonzero(speeds > allowed * (1 + _TOL))
        if fast.size:
            worst = fast[np.argmax(speeds[fast])]
            findings.append(Violation(
                limit, spec.name, None, int(fast[0] + first_row), float(speeds[worst]), allowed,
                float(speeds[worst] / allowed),
                f"{fast.size} of {len(speeds)} steps too fast, worst {speeds[worst]:.3f} {unit} at step "
                f"{worst + first_row}",
            ))
