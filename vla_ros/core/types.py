"""The policy contract: observations in, action chunks out, with explicit action semantics.

Action semantics are the #1 source of "random motion" reports against VLA deployments (units, frames,
delta vs absolute, gripper sign). Every chunk therefore carries its `ActionSpace`, and the executor rejects a
chunk whose space differs from the one the policy declared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol, runtime_checkable

import numpy as np

ACTION_KINDS = ("ee_delta", "ee_pose", "joint_pos", "joint_delta", "joint_vel")
EE_KINDS = ("ee_delta", "ee_pose")
FRAMES = ("base", "ee")
# rotation form -> number of columns; quaternions are (x, y, z, w) like geometry_msgs.
ROTATION_WIDTH = {"rpy": 3, "axis_angle": 3, "quat": 4}


class BadChunkError(ValueError):
    """A policy returned a chunk that must not be executed (NaN, wrong shape / space, stale stamp).

    `reason` is a short key for counting rejections (type, space, shape, non_finite, dt, stale, ...).
    """

    def __init__(self, message: str, reason: str = "invalid"):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class GripperConvention:
    """How a policy encodes the gripper: the values meaning fully open and fully closed, and the gripper joint
    values they stand for.

    Bridge / OpenVLA / ALOHA use open=1, closed=0; DROID's gripper_position uses open=0, closed=1. `joint_open` /
    `joint_closed` are the joint values (the robot config's units) the policy's open / closed mean: the span its
    training data normalised over, when that is not the robot config's gripper range (ALOHA datasets normalise the
    finger over 0.01844..0.058 m; the vx300s finger travels 0.021..0.057 m). None: the robot config's open / closed.
    The observation side (a state part) and the action side must use the same span, or a policy that holds still
    moves the gripper.
    """

    open: float = 1.0
    closed: float = 0.0
    joint_open: float | None = None
    joint_closed: float | None = None

    def opening(self, value: float) -> float:
        """Policy value -> normalised opening in [0, 1] over the policy's span (1 = fully open), clipped."""
        span = self.open - self.closed
        return min(max((float(value) - self.closed) / span, 0.0), 1.0)  # scalar: cheaper than np.clip

    def value(self, opening: float) -> float:
        """Normalised opening over the policy's span -> policy value (the inverse of `opening`)."""
        return self.closed + float(opening) * (self.open - self.closed)

    def joint_span(self, gripper) -> tuple[float, float]:
        """(joint value at open, at closed): the declared span, else the robot's `gripper` (a GripperSpec)."""
        if self.joint_open is None:
            return gripper.open, gripper.closed
        return self.joint_open, self.joint_closed

    def encode(self, position: float, gripper) -> float:
        """A measured gripper joint position -> the policy value, over the policy's span (clipped to open..closed)."""
        joint_open, joint_closed = self.joint_span(gripper)
        return self.value(min(max((float(position) - joint_closed) / (joint_open - joint_closed), 0.0), 1.0))

    def to_joint(self, value: float, gripper) -> float:
        """Policy value -> gripper joint target over the policy's span, inside the robot's gripper range."""
        if self.joint_open is None:
            return gripper.to_joint(self.opening(value))
        joint = self.joint_closed + self.opening(value) * (self.joint_open - self.joint_closed)
        return gripper.to_joint(gripper.opening(joint))

    def robot_opening(self, value: float, gripper) -> float:
        """Policy value -> normalised opening over the robot's gripper range (what an EE command carries)."""
        if self.joint_open is None:
            return self.opening(value)
        return gripper.opening(self.to_joint(value, gripper))


@dataclass(frozen=True)
class ActionSpace:
    """Layout and meaning of one action vector.

    Columns are laid out arm by arm in `arms` order. Per arm:
      ee_delta / ee_pose: xyz (m), rotation (`rotation` form, rad), then the gripper column if any;
      joint_*:            one column per arm joint (the robot config's order), then the gripper column if any.
    `frame` says which axes an EE action is expressed in: "base" (world-aligned axes about the current EE
    position — the Bridge convention) or "ee" (the end-effector's own axes).
    """

    kind: str
    arms: tuple[str, ...] = ("arm",)
    frame: str = "base"
    rotation: str = "rpy"
    gripper: GripperConvention | None = field(default_factory=GripperConvention)
    joints_per_arm: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.kind not in ACTION_KINDS:
            raise ValueError(f"action space kind: expected one of {ACTION_KINDS}, got {self.kind!r}")
        if self.frame not in FRAMES:
            raise ValueError(f"action space frame: expected one of {FRAMES}, got {self.frame!r}")
        if self.rotation not in ROTATION_WIDTH:
            raise ValueError(f"action space rotation: expected one of {tuple(ROTATION_WIDTH)}, got {self.rotation!r}")
        if not self.is_ee and (self.joints_per_arm is None or len(self.joints_per_arm) != len(self.arms)):
            raise ValueError(f"action space {self.kind}: joints_per_arm must give one count per arm {self.arms}")

    @property
    def is_ee(self) -> bool:
        return self.kind in EE_KINDS

    def motion_width(self, arm_index: int) -> int:
        if self.is_ee:
            return 3 + ROTATION_WIDTH[self.rotation]
        return self.joints_per_arm[arm_index]

    def arm_width(self, arm_index: int) -> int:
        return self.motion_width(arm_index) + (1 if self.gripper is not None else 0)

    @property
    def dim(self) -> int:
        return sum(self.arm_width(i) for i in range(len(self.arms)))

    def split(self, action: np.ndarray) -> list[tuple[str, np.ndarray, float | None]]:
        """One action vector -> [(arm, motion columns, gripper value or None)] in arm order."""
        parts, start = [], 0
        for i, arm in enumerate(self.arms):
            width = self.motion_width(i)
            motion = action[start : start + width]
            start += width
            grip = None
            if self.gripper is not None:
                grip = float(action[start])
                start += 1
            parts.append((arm, motion, grip))
        return parts


@dataclass(frozen=True)
class Observation:
    """What a policy sees. `stamp` is the capture time of the images (camera header.stamp), in seconds."""

    images: Mapping[str, np.ndarray]
    joint_positions: Mapping[str, float]
    instruction: str
    stamp: float
    joint_velocities: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ActionChunk:
    """T actions, action i meant for time `stamp + i * dt` (stamp = the answered observation's capture stamp)."""

    actions: np.ndarray
    space: ActionSpace
    dt: float
    stamp: float
    info: Mapping[str, object] = field(default_factory=dict)

    @property
    def horizon(self) -> int:
        return int(self.actions.shape[0])

    def times(self) -> np.ndarray:
        return self.stamp + self.dt * np.arange(self.horizon)


@dataclass(frozen=True)
class PolicyMetadata:
    """What a policy declares about itself; checked against every chunk it returns."""

    name: str
    action_space: ActionSpace
    horizon: int
    rate_hz: float
    cameras: tuple[str, ...] = ()
    image_size: tuple[int, int] | None = None  # (height, width) the policy expects
    normalization: Mapping[str, object] | None = None
    supports_prefix: bool = False  # can condition on a frozen action prefix (real-time chunking)
    is_baseline: bool = False  # a classical controller, not a learned VLA
    # executor settings the policy itself prescribes (e.g. a LeRobot checkpoint's n_action_steps or temporal
    # ensembling, as ExecutorConfig fields); settings the user gives the node explicitly win
    executor: Mapping[str, object] = field(default_factory=dict)


@runtime_checkable
class Policy(Protocol):
    metadata: PolicyMetadata

    def infer(self, observation: Observation) -> ActionChunk: ...


def validate_chunk(chunk: object, metadata: PolicyMetadata, now: float, max_age: float) -> ActionChunk:
    """Return `chunk` if it may be executed, else raise BadChunkError naming what is wrong."""
    if not isinstance(chunk, ActionChunk):
        raise BadChunkError(f"policy {metadata.name}: returned {type(chunk).__name__}, expected ActionChunk", "type")
    actions = chunk.actions
    expected = metadata.action_space
    if chunk.space != expected:
        raise BadChunkError(f"policy {metadata.name}: chunk action space {chunk.space} != declared {expected}", "space")
    if not isinstance(actions, np.ndarray) or actions.ndim != 2 or actions.shape[1] != expected.dim or len(actions) == 0:
        shape = getattr(actions, "shape", None)
        raise BadChunkError(f"policy {metadata.name}: chunk actions shape {shape}, expected (T>0, {expected.dim})", "shape")
    if not np.all(np.isfinite(actions)):
        bad = np.argwhere(~np.isfinite(actions))[0]
        raise BadChunkError(f"policy {metadata.name}: non-finite action at step {bad[0]}, column {bad[1]}", "non_finite")
    if not (np.isfinite(chunk.dt) and chunk.dt > 0):
        raise BadChunkError(f"policy {metadata.name}: chunk dt {chunk.dt!r}, expected > 0", "dt")
    if not np.isfinite(chunk.stamp) or now - chunk.stamp > max_age:
        raise BadChunkError(
            f"policy {metadata.name}: stale chunk, observation stamp {chunk.stamp:.3f} is {now - chunk.stamp:.3f} s old "
            f"(max {max_age:.3f} s)",
            "stale",
        )
    return chunk
