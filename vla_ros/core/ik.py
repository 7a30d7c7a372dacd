"""Differential inverse kinematics: end-effector commands -> joint targets, on pinocchio.

One damped-least-squares (DLS) core serves two entry points of `DifferentialIK`:

* `step` streams EE actions at the control rate: one bounded step per call from the *measured* joint state toward
  each arm's stored target pose. The returned target never jumps: every arm joint moves at most
  `velocity_scale * velocity_limit * dt` from its measured value and stays inside its position limits (if a measured
  joint is already outside them, the velocity bound wins and the joint is moved back toward the range).
* `solve` iterates to convergence for absolute targets (position limits only: it computes a configuration, not a
  motion), restarting from a deterministic library of in-limit configurations when an attempt stalls.

Target semantics of `EECommand` (stored per arm, in the robot's base frame):

* kind "delta", frame "base" (the Bridge / WidowX convention): the translation is added in base-frame axes and the
  rotation is applied about the target's own position with base-aligned axes, both onto the previous *target*
  pose (not the measured one), so small tracking errors do not accumulate as drift:
  ``p <- p + dp``, ``R <- dR @ R``.
* kind "delta", frame "ee": the delta is expressed in the target's own axes: ``T <- T * (dR, dp)``, i.e.
  ``p <- p + R @ dp``, ``R <- R @ dR``.
* kind "pose": the absolute pose in the base frame replaces the target.

Integrated delta targets cannot wind up: after each step a delta-driven target is pulled back to within
`max_target_lead_linear` / `max_target_lead_angular` of the pose the step achieves, and the arm is flagged
`target_clamped`. Targets the arm cannot move toward (out of reach, joint limits, singular directions) get
best-effort motion and the `unreachable` flag, never a jump.

The DLS step minimises ``|J dq - e|^2 + lambda |dq - z|^2`` over the arm's joints (LOCAL-frame Jacobian and pose
error ``e = (R^T (p* - p), log3(R^T R*))``), where ``z`` pulls toward the arm's home pose: for a redundant arm that
pull acts in the null space of the task. ``lambda`` grows as the smallest singular value of J falls below
`singular_threshold` (singularity-robust damping) and, in `solve`, with the squared error (Levenberg-Marquardt
style), so far-off iterates take cautious steps and near-converged ones take Newton steps. A joint that a step would
push through a position limit is pinned at the limit and the remaining joints re-solve the residual task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import pinocchio as pin
# LAPACK directly: on 6x6 systems numpy.linalg's wrappers cost 4x the arithmetic (dposv ~1 us vs solve ~4 us).
from scipy.linalg.lapack import dposv, dpotrf, dsyev

from vla_ros.core.errors import ConfigError
from vla_ros.core.robot import ArmSpec, GripperSpec, RobotModel
from vla_ros.core.rotations import to_matrix
from vla_ros.core.types import ActionSpace, BadChunkError

COMMAND_KINDS = ("delta", "pose")
COMMAND_FRAMES = ("base", "ee")
_EE_KIND_TO_COMMAND = {"ee_delta": "delta", "ee_pose": "pose"}
_IDENTITY3 = np.eye(3)
_IDENTITY6 = np.eye(6)  # task space (J J^T is 6 x 6)


@dataclass(frozen=True)
class EECommand:
    """One arm's EE action for one control tick (see the module docstring for the exact semantics).

    translation: (3,) m; rotation: 3x3 rotation matrix; frame: "base" | "ee" (deltas only; poses are in the base
    frame); gripper: normalised opening in [0, 1] (1 = fully open) or None to hold the gripper target.
    """

    kind: str
    translation: np.ndarray
    rotation: np.ndarray
    frame: str = "base"
    gripper: float | None = None

    def __post_init__(self):
        if self.kind not in COMMAND_KINDS:
            raise ValueError(f"EECommand.kind: expected one of {COMMAND_KINDS}, got {self.kind!r}")
        if self.frame not in COMMAND_FRAMES:
            raise ValueError(f"EECommand.frame: expected one of {COMMAND_FRAMES}, got {self.frame!r}")
        if self.kind == "pose" and self.frame != "base":
            raise ValueError("EECommand: an absolute pose must be expressed in the base frame (frame='base')")
        translation = np.asarray(self.translation, dtype=float)
        rotation = np.asarray(self.rotation, dtype=float)
        if translation.shape != (3,) or not np.isfinite(translation).all():
            raise ValueError(f"EECommand.translation: expected 3 finite values, got {translation!r}")
        if rotation.shape != (3, 3):
            raise ValueError(f"EECommand.rotation: expected a 3x3 matrix, got shape {rotation.shape}")
        # NaN fails both comparisons. With R^T R = I to 1e-6, det R is +-1 to ~1e-6, so its sign, from the triple
        # product in Python floats, decides exactly as np.linalg.det would, in a tenth of the time (every control tick).
        if not (np.abs(rotation.T @ rotation - _IDENTITY3).max() <= 1e-6 and _det3(rotation.tolist()) > 0):
            raise ValueError(f"EECommand.rotation: not a rotation matrix (R^T R = I, det R = +1): {rotation.tolist()}")
        if self.gripper is not None and not (math.isfinite(self.gripper) and 0.0 <= self.gripper <= 1.0):
            raise ValueError(f"EECommand.gripper: expected an opening in [0, 1] or None, got {self.gripper!r}")
        object.__setattr__(self, "translation", translation)
        object.__setattr__(self, "rotation", rotation)

    @classmethod
    def from_checked_parts(cls, kind: str, translation: np.ndarray, rotation: np.ndarray, frame: str,
                           gripper: float | None) -> "EECommand":
        """A command from numbers already known valid: a finite float translation (3,), a rotation matrix made by
        `rotations.to_matrix`, an opening from `GripperConvention.robot_opening`. Only kind and frame are checked: the
        numeric checks of the constructor cost more than the rest of turning an action into commands, and
        `ee_commands_from_action` does that at every control tick."""
        if kind not in COMMAND_KINDS or frame not in COMMAND_FRAMES or (kind == "pose" and frame != "base"):
            return cls(kind, translation, rotation, frame, gripper)  # the constructor names the problem
        command = object.__new__(cls)
        for name, value in (("kind", kind), ("translation", translation), ("rotation", rotation), ("frame", frame),
                            ("gripper", gripper)):
            object.__setattr__(command, name, value)
        return command

    def applied_to(self, pose: pin.SE3) -> pin.SE3:
        """The target this command makes of `pose`: a pose replaces it, a base-frame delta composes with
        world-aligned axes about the EE position (Bridge), an EE-frame delta composes in the EE's own axes."""
        if self.kind == "pose":
            return pin.SE3(self.rotation, self.translation)
        if self.frame == "base":
            return pin.SE3(self.rotation @ pose.rotation, pose.translation + self.translation)
        return pose * pin.SE3(self.rotation, self.translation)


def _det3(m: list[list[float]]) -> float:
    (a, b, c), (d, e, f), (g, h, i) = m
    return a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)


def ee_commands_from_action(space: ActionSpace, action: np.ndarray, arm_names: Sequence[str],
                            grippers: Mapping[str, GripperSpec | None] | None = None) -> dict[str, EECommand]:
    """One EE action vector of `space` -> {arm: EECommand}. Arms are matched by name against the robot's `arm_names`;
    the gripper column goes through the space's GripperConvention to a normalised opening over the robot's gripper
    range (1 = open). `grippers` (arm name -> the robot's GripperSpec) is needed when the convention declares its
    own joint span."""
    if not space.is_ee:
        raise ConfigError("action space", "kind",
                          f"{space.kind!r} is a joint-space action; IK takes {tuple(_EE_KIND_TO_COMMAND)}")
    unknown = [arm for arm in space.arms if arm not in arm_names]
    if unknown:
        raise ConfigError("action space", "arms",
                          f"arm {unknown[0]!r} is not an arm of the robot (arms: {', '.join(arm_names)})")
    action = np.asarray(action, dtype=float)
    if action.shape != (space.dim,):
        raise BadChunkError(
            f"EE action: expected shape ({space.dim},) for {space.kind} {space.rotation}, got {action.shape}")
    if not np.isfinite(action).all():
        raise BadChunkError(f"EE action: non-finite value at column {int(np.flatnonzero(~np.isfinite(action))[0])}")
    kind = _EE_KIND_TO_COMMAND[space.kind]
    commands = {}
    for arm, motion, grip in space.split(action):
        try:
            rotation = to_matrix(space.rotation, motion[3:])
        except ValueError as exc:
            raise BadChunkError(f"EE action for arm {arm!r}: {exc}") from None
        opening = None
        if grip is not None:
            gripper = (grippers or {}).get(arm)
            if gripper is None and space.gripper.joint_open is not None:
                raise ConfigError("action space", "gripper", f"the gripper convention declares a joint span but arm "
                                                             f"{arm!r} has no gripper spec to map it onto")
            opening = space.gripper.robot_opening(grip, gripper)
        commands[arm] = EECommand.from_checked_parts(kind, motion[:3], rotation, space.frame, opening)
    return commands


@dataclass(frozen=True)
class IKConfig:
    """Tuning of `DifferentialIK`. Units: m, rad, s."""

    # Success tolerances: `reached` in results, convergence in `solve`.
    position_tolerance: float = 1e-3
    rotation_tolerance: float = 1e-2
    # DLS damping (lambda, in the squared units of J): a floor, plus a ramp up to `singular_damping` as the smallest
    # singular value of the arm's Jacobian falls below `singular_threshold` (step only; solve uses `error_damping`).
    # Below 0.02 a 0.5 m/s EE twist can need > 25 rad/s at the joints; at sigma = 0 a lambda of 1e-3 caps the
    # joint motion per unit of task error at 1 / (2 sqrt(lambda)) ~= 16.
    damping: float = 1e-6
    singular_threshold: float = 0.02
    singular_damping: float = 1e-3
    # --- step (streaming) ---
    velocity_scale: float = 1.0  # fraction of each joint's velocity limit a step may use
    posture_gain: float = 0.5  # 1/s: null-space pull toward home, on redundant (> 6 joint) arms only
    # Windup bound of integrated delta targets (m, rad): also how far ahead of the arm a target may run, so it must
    # exceed one policy step's delta (Bridge q99: 0.04 m, 0.2 rad), and how long a reversal takes to bite.
    max_target_lead_linear: float = 0.05
    max_target_lead_angular: float = 0.25
    # Steps start from the previous joint command, not the measured state: a position-controlled arm lags its
    # command, and stepping from the lagging measurement caps the arm's speed at (step bound / lag) while the
    # integrated target runs ahead and overshoots. Once the measured arm is further than this (rad or m, any arm
    # joint) from the previous command — blocked, or re-anchored elsewhere — the step re-starts from the measurement.
    max_command_divergence: float = 0.2
    # --- solve (absolute targets) ---
    max_iterations: int = 500  # total budget over all attempts, per arm
    attempt_iterations: int = 30  # an attempt that has not converged by then restarts
    stall_iterations: int = 3  # ... as does one whose error has not dropped 5 % for this many iterations
    error_damping: float = 1e-2  # lambda += error_damping * |e|^2 (Levenberg-Marquardt style)
    max_joint_step: float = 2.0  # joint-space step length per iteration (rad, m)
    # Fraction of the home-pose offset pulled in per solve iteration (null space). Off by default: it slows
    # convergence ~10 % and does not change the success rate; set it to prefer home-like solutions on redundant arms.
    solve_posture_weight: float = 0.0
    seed_library_size: int = 1024  # in-limit arm configurations to start / restart from; 0: one attempt, q_start
    seed_rotation_weight: float = 0.1  # m^2 per rad^2 when ranking seeds by EE pose distance to the target
    seed: int = 0  # of the seed library (solve is deterministic)

    def __post_init__(self):
        for name in ("position_tolerance", "rotation_tolerance", "damping", "singular_threshold", "velocity_scale",
                     "max_target_lead_linear", "max_target_lead_angular", "max_command_divergence", "max_joint_step",
                     "seed_rotation_weight"):
            if not getattr(self, name) > 0:
                raise ValueError(f"IKConfig.{name}: must be > 0, got {getattr(self, name)!r}")
        for name in ("singular_damping", "posture_gain", "error_damping", "solve_posture_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"IKConfig.{name}: must be >= 0, got {getattr(self, name)!r}")
        for name in ("max_iterations", "attempt_iterations", "stall_iterations"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"IKConfig.{name}: must be >= 1, got {getattr(self, name)!r}")
        if not self.seed_library_size >= 0:
            raise ValueError(f"IKConfig.seed_library_size: must be >= 0, got {self.seed_library_size!r}")


class ArmIKStatus(NamedTuple):
    """How one arm's IK went. Errors are between the target and the pose of the returned joint target."""

    position_error: float  # m
    rotation_error: float  # rad
    reached: bool  # both errors within tolerance
    # step: the arm cannot move toward the target (reach, joint limits, singularity) or its target was clamped;
    # solve: not reached within the iteration budget. Either way the motion / answer is best effort.
    unreachable: bool
    # step: a joint position / velocity limit or the EE speed limit shaped the step;
    # solve: a joint of the answer sits at a position limit.
    limited: bool
    near_singular: bool  # smallest singular value of the arm's Jacobian below IKConfig.singular_threshold
    target_clamped: bool = False  # step: an integrated delta target was pulled back to the windup bound


class IKResult(NamedTuple):
    q_target: np.ndarray  # (nq,), robot.joint_names order
    arms: Mapping[str, ArmIKStatus]
    iterations: int  # DLS iterations over all arms (step: one per arm)

    @property
    def reached(self) -> bool:
        return all(status.reached for status in self.arms.values())


class _Arm:
    """Per-arm constants the hot loops need, and the lazily built seed library for `solve` restarts."""

    def __init__(self, robot: RobotModel, spec: ArmSpec, velocity_scale: float):
        self.name = spec.name
        self.frame_id = spec.ee_frame_id
        index = np.asarray(spec.index)
        contiguous = bool(np.all(np.diff(index) == 1))
        # A slice keeps Jacobian column extraction and q updates views (5x cheaper than fancy indexing).
        self.cols = slice(int(index[0]), int(index[-1]) + 1) if contiguous else index
        self.size = index.size
        self.lower = robot.limits.lower[index].copy()
        self.upper = robot.limits.upper[index].copy()
        self.velocity = robot.limits.velocity[index].copy()
        self._step_velocity = velocity_scale * self.velocity  # what a streaming step may use
        self._step_dt, self._step_bound = math.nan, None  # velocity_bound's last dt and bounds
        self.home = np.asarray(spec.home, dtype=float).copy()
        self.gripper = spec.gripper
        self.gripper_velocity = self.gripper_lower = self.gripper_upper = math.nan  # no gripper: never read
        if spec.gripper is not None:
            g = spec.gripper.index
            self.gripper_velocity = float(robot.limits.velocity[g])
            self.gripper_lower, self.gripper_upper = float(robot.limits.lower[g]), float(robot.limits.upper[g])
        self.max_linear_speed = spec.max_ee_linear_speed
        self.max_angular_speed = spec.max_ee_angular_speed
        # Seed library for solve restarts (DifferentialIK._build_seed_library), built on first use.
        self.seeds: np.ndarray | None = None  # (K, size) arm configurations
        self.seed_poses: np.ndarray | None = None  # (K, 12) weighted EE poses
        self.seed_offsets: np.ndarray | None = None  # (K,)
        self.pose_weights: np.ndarray | None = None  # (12,)

    def velocity_bound(self, dt: float) -> tuple[np.ndarray, list[float]]:
        """Per joint, the most a streaming step of dt may move it, as an array and a list (cached: the control period
        rarely changes)."""
        if dt != self._step_dt:
            bound = self._step_velocity * dt
            self._step_dt, self._step_bound = dt, (bound, bound.tolist())
        return self._step_bound


class DifferentialIK:
    """Stateful differential IK over a RobotModel: per-arm target poses, streamed `step`s and absolute `solve`s.

    Not thread-safe (it owns one pinocchio Data); give each thread its own instance.
    """

    def __init__(self, robot: RobotModel, config: IKConfig | None = None):
        self.robot = robot
        self.config = config or IKConfig()
        self._model = robot.model
        self._data = robot.new_data()
        self._arms = {spec.name: _Arm(robot, spec, self.config.velocity_scale) for spec in robot.arms}
        self._singular_shift = self.config.singular_threshold**2 * _IDENTITY6  # see _sigma_min_sq_if_below
        base_id = self._model.getFrameId(robot.base_frame)
        pin.framesForwardKinematics(self._model, self._data, pin.neutral(self._model))
        base = self._data.oMf[base_id].copy()
        # Targets live in the base frame; the model's world is the URDF root. Skip the conversion when they agree.
        self._base = None if base.isIdentity(1e-12) else base
        self._targets: dict[str, pin.SE3] | None = None
        self._target_from_delta: dict[str, bool] = {}
        self._gripper_targets: dict[str, float] = {}

    # --- state --------------------------------------------------------------------------------------------------

    def reset(self, q: np.ndarray) -> None:
        """Targets := the EE poses at `q` (hold still); gripper targets := the gripper joints of `q`."""
        q = self._checked_q(q, "q")
        self._targets = {name: self.robot.fk(q, arm.frame_id, self._data) for name, arm in self._arms.items()}
        self._target_from_delta = {name: False for name in self._arms}
        self._gripper_targets = {name: float(q[arm.gripper.index]) for name, arm in self._arms.items() if arm.gripper}
        self._last_command = q.copy()

    @property
    def targets(self) -> dict[str, pin.SE3]:
        """Current target pose per arm, base frame (copies)."""
        if self._targets is None:
            raise RuntimeError("DifferentialIK: call reset(q) before reading targets")
        return {name: pose.copy() for name, pose in self._targets.items()}

    # --- streaming ----------------------------------------------------------------------------------------------

    def step(self, q_measured: np.ndarray, commands: Mapping[str, EECommand], dt: float) -> IKResult:
        """Apply `commands` to the stored targets, then one bounded DLS step per arm from the previous joint command
        (from `q_measured` where the arm is more than `max_command_divergence` away from that command).

        Arms without a command keep tracking their stored target. Gripper targets move toward the commanded opening
        at the gripper joint's velocity limit from the previous gripper target (not the measured one, so a gripper
        blocked by a grasped object is still commanded closed).
        """
        if self._targets is None:
            raise RuntimeError("DifferentialIK: call reset(q) before step()")
        q_measured = self._checked_q(q_measured, "q_measured")
        if not (math.isfinite(dt) and dt > 0):
            raise ValueError(f"DifferentialIK.step: dt must be > 0, got {dt!r}")
        for name, command in commands.items():  # all checked before any target changes
            if name not in self._arms:
                raise ValueError(f"DifferentialIK.step: no arm named {name!r} (arms: {', '.join(self._arms)})")
            if command.gripper is not None and self._arms[name].gripper is None:
                raise ValueError(f"DifferentialIK.step: arm {name!r} has no gripper but the command sets one")
        q_target = q_measured.copy()
        statuses = {}
        for name, arm in self._arms.items():
            command = commands.get(name)
            if command is not None:
                self._apply_command(arm, command)
            self._step_gripper(arm, None if command is None else command.gripper, dt, q_target)
            divergence = max(map(abs, (self._last_command[arm.cols] - q_measured[arm.cols]).tolist()))
            diverged = divergence > self.config.max_command_divergence
            q_from = q_measured if diverged else self._last_command
            statuses[name] = self._step_arm(arm, q_from, q_target, dt)
        self._last_command = q_target.copy()
        return IKResult(q_target, statuses, len(self._arms))

    def _apply_command(self, arm: _Arm, command: EECommand) -> None:
        target = self._targets[arm.name]
        if command.kind == "delta" and command.frame == "base":
            # EECommand.applied_to done in place (the stored targets are this object's own): the per-tick hot path
            target.rotation = command.rotation @ target.rotation
            target.translation = target.translation + command.translation
        else:
            self._targets[arm.name] = command.applied_to(target)
        self._target_from_delta[arm.name] = command.kind == "delta"

    def _step_gripper(self, arm: _Arm, opening: float | None, dt: float, q_target: np.ndarray) -> None:
        if arm.gripper is None:
            return
        previous = self._gripper_targets[arm.name]
        if opening is not None:
            bound = self.config.velocity_scale * arm.gripper_velocity * dt
            wanted = min(max(arm.gripper.to_joint(opening), arm.gripper_lower), arm.gripper_upper)  # rounding
            change = wanted - previous
            # `wanted` itself once within reach: previous + change could round past the joint limit
            new = wanted if abs(change) <= bound else previous + math.copysign(bound, change)
            self._gripper_targets[arm.name] = new
        q_target[arm.gripper.index] = self._gripper_targets[arm.name]

    def _step_arm(self, arm: _Arm, q_from: np.ndarray, q_target: np.ndarray, dt: float) -> ArmIKStatus:
        cfg, model, data = self.config, self._model, self._data
        target_world = self._world(self._targets[arm.name])
        pin.computeJointJacobians(model, data, q_from)  # forward kinematics and joint Jacobians in one call
        delta = pin.updateFramePlacement(model, data, arm.frame_id).actInv(target_world)
        # The pose error, asking for at most the arm's EE speed this tick: the EE then heads straight for a far
        # target, and the linearisation stays valid.
        linear, linear_sq, linear_limited = _clamped(delta.translation.tolist(), arm.max_linear_speed * dt)
        angular, angular_sq, angular_limited = _clamped(pin.log3(delta.rotation).tolist(), arm.max_angular_speed * dt)
        speed_limited = linear_limited or angular_limited
        request = np.array(linear + angular)

        jac = pin.getFrameJacobian(model, data, arm.frame_id, pin.LOCAL)[:, arm.cols]
        gram = jac @ jac.T
        threshold_sq = cfg.singular_threshold**2
        sigma_min_sq = _sigma_min_sq_if_below(gram, threshold_sq, self._singular_shift)
        near_singular = sigma_min_sq is not None
        damping = cfg.damping
        if near_singular:
            damping += cfg.singular_damping * (1.0 - sigma_min_sq / threshold_sq)
        q_arm = q_from[arm.cols]
        # Only a redundant arm has a null space for the posture pull; on a 6-joint arm it would only fight the task.
        posture = cfg.posture_gain * dt * (arm.home - q_arm) if cfg.posture_gain and arm.size > 6 else None
        dq, pinned = _dls_within_limits(jac, request, posture, damping, q_arm, arm.lower, arm.upper, gram=gram)

        # Progress test before the velocity scaling (a slow arm is not an unreachable target): what fraction of the
        # requested task motion the limited, damped step achieves in the linear model.
        requested_sq = linear_sq + angular_sq
        progress = float(request @ (jac @ dq)) / requested_sq if requested_sq > 0 else 1.0

        bound, bound_list = arm.velocity_bound(dt)
        peak = max([abs(x) / b for x, b in zip(dq.tolist(), bound_list)])
        if peak > 1.0:
            dq /= peak
        # Clipped into the position limits, then the velocity bound, which wins if q_from is off-limits.
        q_new = (q_arm + dq).clip(arm.lower, arm.upper).clip(q_arm - bound, q_arm + bound)
        q_target[arm.cols] = q_new

        # What is left between the pose this step reaches and the target. Anti-windup: an integrated delta target
        # further ahead than the lead bounds is pulled back onto them (and the clamped offset is what is left).
        achieved = self.robot.fk(q_target, arm.frame_id, self._data)
        remaining = achieved.actInv(self._targets[arm.name])
        lead_linear, lead_angular = ((cfg.max_target_lead_linear, cfg.max_target_lead_angular)
                                     if self._target_from_delta[arm.name] else (math.inf, math.inf))
        linear, position_sq, linear_clamped = _clamped(remaining.translation.tolist(), lead_linear)
        angular, rotation_sq, angular_clamped = _clamped(pin.log3(remaining.rotation).tolist(), lead_angular)
        target_clamped = linear_clamped or angular_clamped
        if target_clamped:
            self._targets[arm.name] = achieved * pin.SE3(pin.exp3(np.array(angular)), np.array(linear))
        position_error, rotation_error = math.sqrt(position_sq), math.sqrt(rotation_sq)
        reached = position_error <= cfg.position_tolerance and rotation_error <= cfg.rotation_tolerance
        return ArmIKStatus(
            position_error=position_error,
            rotation_error=rotation_error,
            reached=reached,
            unreachable=target_clamped or (not reached and progress < 0.5),
            limited=speed_limited or pinned or peak > 1.0,
            near_singular=near_singular,
            target_clamped=target_clamped,
        )

    # --- absolute targets ---------------------------------------------------------------------------------------

    def solve(
        self,
        q_start: np.ndarray,
        targets: Mapping[str, pin.SE3],
        *,
        max_iterations: int | None = None,
        position_tolerance: float | None = None,
        rotation_tolerance: float | None = None,
    ) -> IKResult:
        """Joint configuration reaching each arm's target pose (base frame); arms not named keep `q_start`.

        The first attempt starts from whichever is closer in EE pose to the target: `q_start` (clipped into the
        position limits) or the nearest configuration of a fixed library of in-limit seeds; stalled attempts restart
        from the next-nearest seeds. Deterministic. Does not touch the streaming targets. If no attempt converges
        within `max_iterations`, the best configuration found is returned with `reached` False (best effort).
        """
        cfg = self.config
        q = self._checked_q(q_start, "q_start").clip(self.robot.limits.lower, self.robot.limits.upper)
        budget = cfg.max_iterations if max_iterations is None else int(max_iterations)
        tol_p = cfg.position_tolerance if position_tolerance is None else float(position_tolerance)
        tol_r = cfg.rotation_tolerance if rotation_tolerance is None else float(rotation_tolerance)
        if not (budget >= 1 and tol_p > 0 and tol_r > 0):
            raise ValueError(f"DifferentialIK.solve: max_iterations must be >= 1 and tolerances > 0, got {budget}, "
                             f"{tol_p}, {tol_r}")
        statuses, iterations = {}, 0
        for name, target in targets.items():
            if name not in self._arms:
                raise ValueError(f"DifferentialIK.solve: no arm named {name!r} (arms: {', '.join(self._arms)})")
            arm = self._arms[name]
            status, used = self._solve_arm(arm, q, self._world(target), budget, tol_p, tol_r)
            statuses[name] = status
            iterations += used
        return IKResult(q, statuses, iterations)

    def _solve_arm(
        self, arm: _Arm, q: np.ndarray, target: pin.SE3, budget: int, tol_p: float, tol_r: float
    ) -> tuple[ArmIKStatus, int]:
        """Converge arm `arm` of `q` (in place) onto `target` (world frame); restarts as described in `solve`."""
        if arm.seeds is None:
            self._build_seed_library(arm)
        model, data, cols = self._model, self._data, arm.cols
        start_from_seed = False
        if len(arm.seeds):
            # Squared pose distances to the target, up to a common constant: see _build_seed_library.
            target_pose = target.homogeneous[:3].ravel()
            seed_distance = arm.seed_offsets - 2.0 * (arm.seed_poses @ target_pose)
            pin.forwardKinematics(model, data, q)
            start_pose = pin.updateFramePlacement(model, data, arm.frame_id).homogeneous[:3].ravel()
            start_distance = float((arm.pose_weights * start_pose) @ (start_pose - 2.0 * target_pose))
            nearest = int(seed_distance.argmin())
            start_from_seed = start_distance > seed_distance[nearest]
            if start_from_seed:
                q[cols] = arm.seeds[nearest]

        best_q, best_errors, best_sum = None, (math.inf, math.inf), math.inf
        order, next_seed, used = None, 0, 0
        tol_p_sq, tol_r_sq = tol_p * tol_p, tol_r * tol_r
        while used < budget:
            converged, its, lin_sq, ang_sq = self._converge(
                arm, q, target, min(self.config.attempt_iterations, budget - used), tol_p_sq, tol_r_sq
            )
            used += its
            if converged:
                best_q, best_errors = None, (lin_sq, ang_sq)  # q holds it; its joint Jacobians are current
                break
            if lin_sq + ang_sq < best_sum:
                best_q, best_errors, best_sum = q[cols].copy(), (lin_sq, ang_sq), lin_sq + ang_sq
            if not len(arm.seeds):
                break
            if order is None:  # sorted only once a restart is needed: argsort costs as much as an iteration
                order = np.argsort(seed_distance)
                next_seed = 1 if start_from_seed else 0
            if next_seed >= len(order) or used >= budget:
                break
            q[cols] = arm.seeds[order[next_seed]]
            next_seed += 1
        if best_q is not None:
            q[cols] = best_q
            pin.computeJointJacobians(model, data, q)
        position_error, rotation_error = math.sqrt(best_errors[0]), math.sqrt(best_errors[1])
        reached = position_error <= tol_p and rotation_error <= tol_r
        q_arm = q[cols]
        jac = pin.getFrameJacobian(model, data, arm.frame_id, pin.LOCAL)[:, cols]
        sigma_min_sq = _sigma_min_sq_if_below(jac @ jac.T, self.config.singular_threshold**2, self._singular_shift)
        status = ArmIKStatus(
            position_error=position_error,
            rotation_error=rotation_error,
            reached=reached,
            unreachable=not reached,
            limited=bool(((q_arm <= arm.lower) | (q_arm >= arm.upper)).any()),
            near_singular=sigma_min_sq is not None,
        )
        return status, used

    def _converge(
        self, arm: _Arm, q: np.ndarray, target: pin.SE3, iterations: int, tol_p_sq: float, tol_r_sq: float
    ) -> tuple[bool, int, float, float]:
        """Up to `iterations` DLS iterations on arm `arm` of `q` (in place), stopping early on convergence or a
        stall. Returns (converged, iterations done, squared position error, squared rotation error) of the final q,
        whose joint Jacobians are left computed in the Data."""
        cfg, model, data, fid, cols = self.config, self._model, self._data, arm.frame_id, arm.cols
        lower, upper, home, posture_weight = arm.lower, arm.upper, arm.home, cfg.solve_posture_weight
        damping, error_damping, max_step = cfg.damping, cfg.error_damping, cfg.max_joint_step
        best, stalled, it = math.inf, 0, 0
        while True:
            pin.computeJointJacobians(model, data, q)  # forward kinematics and every joint's Jacobian in one call
            delta = pin.updateFramePlacement(model, data, fid).actInv(target)
            linear, angular = delta.translation, pin.log3(delta.rotation)
            lin_sq, ang_sq = float(linear @ linear), float(angular @ angular)
            if lin_sq <= tol_p_sq and ang_sq <= tol_r_sq:
                return True, it, lin_sq, ang_sq
            error_sq = lin_sq + ang_sq
            if error_sq < 0.95 * best:
                best, stalled = error_sq, 0
            else:
                stalled += 1
            if it == iterations or stalled >= cfg.stall_iterations:
                return False, it, lin_sq, ang_sq
            jac = pin.getFrameJacobian(model, data, fid, pin.LOCAL)[:, cols]
            q_arm = q[cols]
            posture = posture_weight * (home - q_arm) if posture_weight else None
            dq, _ = _dls_within_limits(jac, np.concatenate((linear, angular)), posture,
                                       damping + error_damping * error_sq, q_arm, lower, upper, max_step)
            q_arm += dq  # a view into q when the arm's joints are contiguous
            if not isinstance(cols, slice):
                q[cols] = q_arm
            it += 1

    def _build_seed_library(self, arm: _Arm) -> None:
        """In-limit arm configurations and their EE poses, flattened as the top 3 rows of the homogeneous matrix.

        Poses are ranked by sum(w * (h_seed - h_target)^2) with w = 1 on positions and seed_rotation_weight / 2 on
        rotation entries (|dR|_F^2 = 2 (3 - trace) ~= 2 angle^2, so this is |dp|^2 + seed_rotation_weight angle^2).
        Expanding the square, each seed needs one dot product per query: offsets - 2 (w * h_seed) . h_target.
        """
        # Salted with the arm's name so the library is not the stream a caller gets from default_rng(seed) (a
        # benchmark drawing its targets that way would find them all in the library).
        rng = np.random.default_rng([self.config.seed, *arm.name.encode()])
        seeds = rng.uniform(arm.lower, arm.upper, size=(self.config.seed_library_size, arm.size))
        q = self.robot.home.copy()
        poses = np.empty((len(seeds), 12))
        for i, seed in enumerate(seeds):
            q[arm.cols] = seed
            pin.forwardKinematics(self._model, self._data, q)
            poses[i] = pin.updateFramePlacement(self._model, self._data, arm.frame_id).homogeneous[:3].ravel()
        weights = np.full((3, 4), self.config.seed_rotation_weight / 2.0)
        weights[:, 3] = 1.0
        arm.pose_weights = weights.ravel()
        arm.seed_poses = poses * arm.pose_weights
        arm.seed_offsets = np.einsum("ij,ij->i", arm.seed_poses, poses)
        arm.seeds = seeds

    # --- helpers ------------------------------------------------------------------------------------------------

    def _world(self, pose_in_base: pin.SE3) -> pin.SE3:
        return pose_in_base if self._base is None else self._base * pose_in_base

    def _checked_q(self, q: np.ndarray, what: str) -> np.ndarray:
        q = np.array(q, dtype=float)  # a copy: callers' arrays are never modified
        if q.shape != (self.robot.nq,):
            raise ValueError(f"{what}: expected shape ({self.robot.nq},) in robot.joint_names order, got {q.shape}")
        if not all(map(math.isfinite, q.tolist())):  # per value in floats: a few times cheaper than numpy here
            bad = int(np.flatnonzero(~np.isfinite(q))[0])
            raise ValueError(f"{what}: non-finite value for joint {self.robot.joint_names[bad]!r}")
        return q


def _dls_within_limits(
    jac: np.ndarray,
    error: np.ndarray,
    posture: np.ndarray | None,
    damping: float,
    q: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    max_step: float = math.inf,
    gram: np.ndarray | None = None,
) -> tuple[np.ndarray, bool]:
    """dq minimising |J dq - e|^2 + damping |dq - posture|^2 with q + dq inside [lower, upper].

    Joints the unconstrained step pushes through a limit are pinned at it and the others re-solve what is left of
    the task (one pass of the saturation-in-the-null-space idea: cheap, and enough for the limit a step first hits).
    Steps longer than `max_step` (joint-space norm) are shortened. Returns (dq, whether any joint was pinned).
    `gram`: J J^T if the caller has it already.
    """
    dq = _dls(jac, error, posture, damping, max_step, jac @ jac.T if gram is None else gram)
    q_new = q + dq
    # Per joint in floats first: for a handful of joints, cheaper than numpy's comparisons, and usually all inside.
    if not any(x < lo or x > hi for x, lo, hi in zip(q_new.tolist(), lower.tolist(), upper.tolist())):
        return dq, False
    outside = (q_new < lower) | (q_new > upper)
    pinned = np.where(outside, q_new.clip(lower, upper) - q, 0.0)
    free = ~outside
    free_posture = None if posture is None else posture * free
    free_jac = jac * free
    dq = pinned + _dls(free_jac, error - jac @ pinned, free_posture, damping, max_step, free_jac @ free_jac.T)
    return (q + dq).clip(lower, upper) - q, True


def _dls(jac: np.ndarray, error: np.ndarray, posture: np.ndarray | None, damping: float, max_step: float,
         gram: np.ndarray) -> np.ndarray:
    """argmin |J dq - e|^2 + damping |dq - z|^2 = z + J^T (J J^T + damping I)^-1 (e - J z), shortened to
    `max_step`; z = `posture` (None: 0); gram = J J^T."""
    system = gram + damping * _IDENTITY6
    _, solution, info = dposv(system, error if posture is None else error - jac @ posture, overwrite_a=1)
    if info != 0:  # only for non-finite input: J J^T + damping I is positive definite
        raise FloatingPointError(f"DLS system not positive definite (LAPACK dposv info={info})")
    dq = jac.T @ solution
    if posture is not None:
        dq += posture
    if max_step < math.inf:
        length_sq = float(dq @ dq)
        if length_sq > max_step * max_step:
            dq *= max_step / math.sqrt(length_sq)
    return dq


def _sigma_min_sq(gram: np.ndarray) -> float:
    """Squared smallest singular value of a wide Jacobian J from gram = J J^T: its smallest eigenvalue."""
    # LAPACK dsyev directly: numpy's eigvalsh wrapper costs twice as much on a 6x6.
    return max(float(dsyev(gram, compute_v=0)[0][0]), 0.0)


def _sigma_min_sq_if_below(gram: np.ndarray, threshold_sq: float, shift: np.ndarray) -> float | None:
    """The squared smallest singular value of J (gram = J J^T) if it is below threshold_sq (> 0), else None.
    `shift`: threshold_sq * I."""
    # A Cholesky factorisation of J J^T - threshold_sq I succeeds exactly when every eigenvalue of J J^T exceeds
    # threshold_sq: several times cheaper than the eigenvalues, which only a near-singular arm needs.
    if dpotrf(gram - shift, overwrite_a=1)[1] == 0:
        return None
    sigma_min_sq = _sigma_min_sq(gram)
    return sigma_min_sq if sigma_min_sq < threshold_sq else None


def _clamped(vector: list[float], limit: float) -> tuple[list[float], float, bool]:
    """A 3-vector scaled down to norm <= limit: (vector, its squared norm, whether it was scaled). Plain floats: on
    3-vectors numpy's per-call overhead is most of the cost."""
    x, y, z = vector
    norm_sq = x * x + y * y + z * z
    norm = math.sqrt(norm_sq)
    if not norm > limit:
        return vector, norm_sq, False
    scale = limit / norm
    x, y, z = x * scale, y * scale, z * scale
    return [x, y, z], x * x + y * y + z * z, True
