"""Where the simulated target may go: on the table, inside an arm's workspace box, reachable by that arm."""

from __future__ import annotations

from typing import Callable

import numpy as np

from vla_ros.core.errors import ConfigError

# Spots are accepted only this far (m) in front of the arm's first joint, "front" being where its EE points at
# home: beside, behind or just in front of the base is kinematically reachable, but only by folding the arm
# around or over its own base, which no table-top task asks for.
MIN_FORWARD = 0.2
WORKSPACE_MARGIN = 0.03  # keep the target this far inside the workspace box (m)
REACH_TOLERANCE = 0.005  # m
DAMPING = 1e-3  # m^2, damped least squares: bounded steps near singular configurations


def solve_position(robot, arm, point: np.ndarray, iterations: int = 60) -> np.ndarray | None:
    """A configuration (robot.joint_names order) putting `arm`'s EE frame within 5 mm of `point` (base frame,
    position only) inside the joint limits, or None.

    Damped least squares from home, clipped to the limits at every iteration: the same local, Jacobian-based way
    the IK node will approach the point, so a spot it accepts is one a differential-IK controller can get to.
    (pink / the project's DifferentialIK would do; a position-only DLS loop is a few lines and needs no tuning.)
    """
    q = robot.home.copy()
    data = robot.new_data()
    index = arm.index
    lower, upper = robot.limits.lower[index], robot.limits.upper[index]
    for _ in range(iterations + 1):
        error = point - robot.fk(q, arm.ee_frame_id, data).translation
        if np.linalg.norm(error) < REACH_TOLERANCE:
            return q
        jac = robot.frame_jacobian(q, arm.ee_frame_id, data)[:3, index]
        step = jac.T @ np.linalg.solve(jac @ jac.T + DAMPING * np.eye(3), error)
        q[index] = np.clip(q[index] + step, lower, upper)
    return None


def target_height(arm, table_height: float, radius: float) -> float:
    """Centre height of a target resting on the table, raised onto a post to the floor of the arm's workspace box
    when that box keeps the EE higher (a bare UR flange): the EE must be able to reach the target's centre."""
    return max(table_height + radius, float(arm.workspace_min[2]))


def sample_target(robot, arm, rng: np.random.Generator, table_height: float, radius: float,
                  visible: Callable[[np.ndarray], bool], attempts: int = 400) -> np.ndarray:
    """A random target centre (base frame) for `arm`: on the table, inside its workspace box, reachable, and
    accepted by `visible` (in view of the primary camera, not hidden by the arm at home)."""
    z = target_height(arm, table_height, radius)
    lower = arm.workspace_min[:2] + WORKSPACE_MARGIN
    upper = arm.workspace_max[:2] - WORKSPACE_MARGIN
    if z > arm.workspace_max[2] - WORKSPACE_MARGIN or np.any(lower >= upper):
        raise ConfigError(robot.config_path, f"arms.{arm.name}.workspace",
                          f"leaves no room for a simulated target on a table at z = {table_height}")
    base_xy = robot.fk(robot.home, arm.joints[0]).translation[:2]
    forward = robot.fk(robot.home, arm.ee_frame_id).translation[:2] - base_xy
    # A home pose with the EE above the base says nothing about "front": then only keep clear of the base.
    forward = forward / np.linalg.norm(forward) if np.linalg.norm(forward) > 0.05 else None
    for _ in range(attempts):
        point = np.array([*rng.uniform(lower, upper), z])
        offset = point[:2] - base_xy
        if (np.dot(offset, forward) if forward is not None else np.linalg.norm(offset)) < MIN_FORWARD:
            continue
        if visible(point) and solve_position(robot, arm, point) is not None:
            return point
    raise ConfigError(robot.config_path, f"arms.{arm.name}",
                      f"found no table spot in {attempts} tries that the arm can reach and the primary camera sees; "
                      "check the workspace box and the camera pose")
