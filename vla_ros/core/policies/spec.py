"""Pieces every backend shares: typed config readers, the action space from a policy YAML, checked ActionChunks."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Mapping

import numpy as np

from vla_ros.core.config import Section
from vla_ros.core.policies.errors import PolicyUnavailableError
from vla_ros.core.policies.preprocess import parse_gripper_convention
from vla_ros.core.types import ACTION_KINDS, FRAMES, ROTATION_WIDTH, ActionChunk, ActionSpace, BadChunkError, \
    GripperConvention, PolicyMetadata


def optional_str(cfg: Section, key: str) -> str | None:
    return cfg.str(key) if cfg.has(key) else None


def positive_int(cfg: Section, key: str, default=None) -> int:
    if default is not None and not cfg.has(key):
        return default
    value = cfg.float(key, positive=True)
    if value != int(value):
        raise cfg.error(key, f"expected a whole number, got {value}")
    return int(value)


def parse_action_space(section: Section, robot=None) -> ActionSpace:
    """An `action_space:` mapping -> ActionSpace, checked against the robot's arms when a robot is given.

        kind: ee_delta | ee_pose | joint_pos | joint_delta | joint_vel
        arms: [arm, ...]            robot arm names, column blocks in this order (default: the robot's arms, or [arm])
        frame: base | ee            EE kinds only (default base)
        rotation: rpy | axis_angle | quat   EE kinds only (default rpy)
        gripper: {open: 1.0, closed: 0.0} | false   policy values for open / closed; false = no gripper column;
                                    optional joint_open / joint_closed: the gripper joint values they stand for,
                                    when the training data's span is not the robot config's gripper range (as the
                                    state side's gripper parts declare it)
        joints_per_arm: [n, ...]    joint kinds; default the robot's arm sizes
    """
    section.unknown_keys({"kind", "arms", "frame", "rotation", "gripper", "joints_per_arm"})
    kind = section.choice("kind", ACTION_KINDS)
    default_arms = [arm.name for arm in robot.arms] if robot is not None else ["arm"]
    arms = tuple(section.strs("arms", default_arms))
    if not arms:
        raise section.error("arms", "expected at least one arm")
    if robot is not None:
        known = [arm.name for arm in robot.arms]
        for name in arms:
            if name not in known:
                raise section.error("arms", f"robot {robot.name} has no arm {name!r} (arms: {', '.join(known)})")
    gripper: GripperConvention | None = GripperConvention()
    raw_gripper = section.data.get("gripper")
    if raw_gripper is False:
        gripper = None
    elif raw_gripper is not None:
        g = section.section("gripper")
        g.unknown_keys({"open", "closed", "joint_open", "joint_closed"})
        gripper = parse_gripper_convention(g, [robot.arm(name) for name in arms] if robot is not None else [],
                                           defaults=None)
    joints_per_arm = None
    if kind not in ("ee_delta", "ee_pose"):
        if section.has("joints_per_arm"):
            counts = section.floats("joints_per_arm", length=len(arms))
            if any(c <= 0 or c != int(c) for c in counts):
                raise section.error("joints_per_arm", f"expected positive whole numbers, got {counts}")
            joints_per_arm = tuple(int(c) for c in counts)
        elif robot is not None:
            joints_per_arm = tuple(len(robot.arm(name).joints) for name in arms)
        else:
            raise section.error("joints_per_arm", f"missing (required for {kind} without a robot model)")
        if robot is not None:
            for name, count in zip(arms, joints_per_arm):
                if count != len(robot.arm(name).joints):
                    raise section.error("joints_per_arm", f"arm {name!r} of robot {robot.name} has "
                                                          f"{len(robot.arm(name).joints)} joints, not {count}")
    return ActionSpace(
        kind=kind, arms=arms, frame=section.choice("frame", FRAMES, "base"),
        rotation=section.choice("rotation", tuple(ROTATION_WIDTH), "rpy"), gripper=gripper,
        joints_per_arm=joints_per_arm,
    )


def checked_chunk(metadata: PolicyMetadata, actions, stamp: float, info: Mapping[str, object] | None = None,
                  exact_horizon: bool = True, transform: "ActionTransform | None" = None) -> ActionChunk:
    """Wrap a backend's raw output as an ActionChunk, raising BadChunkError when its shape or values are wrong;
    `transform` (the peer client's post-processing) runs on the checked actions, so a NaN cannot hide behind a
    clip or a binarised column."""
    name, space = metadata.name, metadata.action_space
    try:
        actions = np.array(actions, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise BadChunkError(f"policy {name}: actions are not a numeric array ({exc})") from None
    expected_t = metadata.horizon if exact_horizon else None
    if actions.ndim != 2 or actions.shape[1] != space.dim or len(actions) == 0 or (
            expected_t is not None and len(actions) != expected_t):
        want = f"({expected_t if expected_t is not None else 'T>0'}, {space.dim})"
        raise BadChunkError(f"policy {name}: actions have shape {actions.shape}, expected {want} for {space.kind} "
                            f"over arms {', '.join(space.arms)} with horizon {metadata.horizon}")
    if not np.all(np.isfinite(actions)):
        step, column = np.argwhere(~np.isfinite(actions))[0]
        raise BadChunkError(f"policy {name}: non-finite action at step {step}, column {column}")
    if transform is not None:
        actions = transform(actions)
    return ActionChunk(actions, space, 1.0 / metadata.rate_hz, float(stamp), dict(info or {}))


@dataclass(frozen=True)
class ActionTransform:
    """What a peer's reference robot client does to the server's actions, in this order: clip every column to
    `clip`, threshold the `binarize` columns (value > threshold -> 1 else 0), multiply by `scale` (e.g. DROID's
    normalised joint velocity -> rad/s). YAML: `actions: {clip: [lo, hi], binarize: {column: threshold}, scale:
    [...]}`."""

    clip: tuple[float, float] | None = None
    binarize: tuple[tuple[int, float], ...] = ()
    scale: np.ndarray | None = None

    def __call__(self, actions: np.ndarray) -> np.ndarray:
        if self.clip is not None:
            actions = np.clip(actions, *self.clip)
        if self.binarize:
            actions = actions.copy()
            for column, threshold in self.binarize:
                actions[:, column] = (actions[:, column] > threshold).astype(actions.dtype)
        return actions * self.scale if self.scale is not None else actions


def parse_action_transform(section: Section, dim: int) -> ActionTransform:
    section.unknown_keys({"clip", "binarize", "scale"})
    clip = None
    if section.has("clip"):
        lo, hi = section.floats("clip", length=2)
        if not lo < hi:
            raise section.error("clip", f"expected [low, high] with low < high, got {[lo, hi]}")
        clip = (lo, hi)
    binarize = []
    for column, threshold in section.raw("binarize", {}).items():
        if not isinstance(column, int) or not 0 <= column < dim:
            raise section.error("binarize", f"column {column!r}: expected an index in [0, {dim})")
        binarize.append((column, section.section("binarize").as_float(str(column), threshold)))
    scale = None
    if section.has("scale"):
        scale = np.array(section.floats("scale", length=dim))
    return ActionTransform(clip, tuple(binarize), scale)


class OneRequestAtATime:
    """Refuses a request while another is in flight. The policy worker abandons a call that outlives its
    inference_timeout and may start the next one while the abandoned call still waits for the server; a client
    whose connection cannot carry two exchanges at once (a ZeroMQ REQ socket, LeRobot's observation / GetActions
    pairing) refuses rather than interleave them."""

    def __init__(self, server: str):
        self.server, self._lock = server, threading.Lock()

    @contextmanager
    def __call__(self) -> Iterator[None]:
        if not self._lock.acquire(blocking=False):
            raise PolicyUnavailableError(f"{self.server}: the previous request is still waiting for its reply")
        try:
            yield
        finally:
            self._lock.release()
