"""Observation preprocessing shared by every learned backend: camera images and the joint-state vector.

Images in an `Observation` are RGB, HxWx3 uint8 (what the ROS node decodes from `rgb8` / `bgr8` / compressed
frames). Each backend asks for its image size, resize mode, channel layout and dtype here, so every backend
resizes the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from vla_ros.core.config import Section
from vla_ros.core.errors import ConfigError
from vla_ros.core.policies.errors import ObservationError
from vla_ros.core.types import GripperConvention, Observation

# stretch: resize to the exact size (OpenVLA's processor, ACT);
# pad: keep the aspect ratio and pad with black, as tf.image.resize_with_pad (openpi's clients do this).
RESIZE_MODES = ("stretch", "pad")
LAYOUTS = ("hwc", "chw")


def camera_image(observation: Observation, camera: str, policy: str) -> np.ndarray:
    """The observation's image from `camera`, checked to be RGB HxWx3 uint8."""
    image = observation.images.get(camera)
    if image is None:
        have = ", ".join(sorted(observation.images)) or "none"
        raise ObservationError(f"policy {policy}: observation has no image from camera {camera!r} (cameras: {have})")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ObservationError(
            f"policy {policy}: camera {camera!r} image is {image.dtype} {image.shape}, expected uint8 (H, W, 3) RGB"
        )
    return image


def _interpolation(source_hw: tuple[int, int], target_hw: tuple[int, int]) -> int:
    # Area averaging when shrinking avoids the aliasing of plain bilinear sampling (PIL and TF antialias too);
    # bilinear when enlarging.
    shrinking = target_hw[0] < source_hw[0] or target_hw[1] < source_hw[1]
    return cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR


def resize_image(image: np.ndarray, size: tuple[int, int], mode: str = "stretch") -> np.ndarray:
    """Resize an HxWx3 uint8 image to `size` = (height, width) by `mode` (see RESIZE_MODES)."""
    height, width = size
    src_h, src_w = image.shape[:2]
    if (src_h, src_w) == (height, width):
        return image
    if mode == "stretch":
        return cv2.resize(image, (width, height), interpolation=_interpolation((src_h, src_w), size))
    if mode != "pad":
        raise ValueError(f"resize mode {mode!r}: expected one of {RESIZE_MODES}")
    # Same size and offsets as tf.image.resize_with_pad / openpi_client.image_tools.resize_with_pad, so a server
    # trained on padded frames sees identical geometry.
    ratio = max(src_w / width, src_h / height)
    inner_h, inner_w = int(src_h / ratio), int(src_w / ratio)
    inner = cv2.resize(image, (inner_w, inner_h), interpolation=_interpolation((src_h, src_w), (inner_h, inner_w)))
    out = np.zeros((height, width, 3), dtype=np.uint8)
    top, left = (height - inner_h) // 2, (width - inner_w) // 2
    out[top : top + inner_h, left : left + inner_w] = inner
    return out


def prepare_image(image: np.ndarray, size: tuple[int, int] | None, mode: str, layout: str,
                  as_float: bool) -> np.ndarray:
    """Resize (unless size is None), lay out as HWC or CHW, and optionally scale uint8 to float32 in [0, 1]."""
    if size is not None:
        image = resize_image(image, size, mode)
    if layout == "chw":
        image = image.transpose(2, 0, 1)
    image = np.ascontiguousarray(image)
    return image.astype(np.float32) / 255.0 if as_float else image


@dataclass(frozen=True)
class StateColumn:
    """One entry of a policy's state vector: a joint position, or a gripper opening in the policy's convention."""

    joint: str
    gripper_open: float | None = None  # joint value when the gripper is fully open (gripper columns only)
    gripper_closed: float | None = None
    convention: GripperConvention | None = None  # the policy's values for open / closed

    def value(self, position: float) -> float:
        if self.convention is None:
            return position
        span = self.gripper_open - self.gripper_closed
        opening = float(np.clip((position - self.gripper_closed) / span, 0.0, 1.0))
        return self.convention.closed + opening * (self.convention.open - self.convention.closed)


def parse_state(items: Sequence[Section], robot) -> tuple[StateColumn, ...]:
    """State parts from a policy YAML, each one of:
        {arm: NAME}                          the arm's joints, in the robot config's order
        {joints: [NAME, ...]}                named joints
        {gripper: ARM, open: 1.0, closed: 0.0}   the arm's gripper opening, as the policy encodes open / closed;
            optional joint_open / joint_closed: the joint values the *training data* normalised over, when they
            differ from the robot config's gripper range (ALOHA datasets use their own finger span)
    """
    columns: list[StateColumn] = []
    for item in items:
        item.unknown_keys({"arm", "joints", "gripper", "open", "closed", "joint_open", "joint_closed"})
        kinds = [key for key in ("arm", "joints", "gripper") if item.has(key)]
        if len(kinds) != 1:
            raise ConfigError(item.source, item.field, "expected exactly one of arm, joints, gripper")
        kind = kinds[0]
        if kind == "joints":
            names = item.strs("joints")
            if robot is not None:
                for name in names:
                    if name not in robot.joint_names:
                        raise item.error("joints", f"joint {name!r} is not a joint of robot {robot.name}")
            columns.extend(StateColumn(name) for name in names)
            continue
        if robot is None:
            raise item.error(kind, "needs a robot model to resolve arm names; pass robot= to make_policy")
        arm = _arm(item, kind, robot)
        if kind == "arm":
            columns.extend(StateColumn(name) for name in arm.joints)
            continue
        if arm.gripper is None:
            raise item.error("gripper", f"arm {arm.name!r} of robot {robot.name} has no gripper")
        convention = GripperConvention(item.float("open", 1.0), item.float("closed", 0.0))
        if convention.open == convention.closed:
            raise item.error("open", "open and closed must differ")
        joint_open = item.float("joint_open", arm.gripper.open)
        joint_closed = item.float("joint_closed", arm.gripper.closed)
        if joint_open == joint_closed:
            raise item.error("joint_open", "joint_open and joint_closed must differ")
        columns.append(StateColumn(arm.gripper.joint, joint_open, joint_closed, convention))
    return tuple(columns)


def _arm(item: Section, key: str, robot):
    name = item.str(key)
    try:
        return robot.arm(name)
    except KeyError:
        raise item.error(key, f"robot {robot.name} has no arm {name!r} (arms: "
                              f"{', '.join(a.name for a in robot.arms)})") from None


def state_vector(columns: Sequence[StateColumn], observation: Observation, policy: str) -> np.ndarray:
    """The policy's state vector (float32) from the observation's joint positions, mapped by name."""
    values = np.empty(len(columns), dtype=np.float32)
    positions = observation.joint_positions
    for i, column in enumerate(columns):
        position = positions.get(column.joint)
        if position is None:
            raise ObservationError(f"policy {policy}: observation has no position for joint {column.joint!r}")
        values[i] = column.value(float(position))
    return values


def parse_image_size(section: Section, key: str = "image_size", default=None) -> tuple[int, int] | None:
    """`[height, width]` in whole pixels."""
    if not section.has(key):
        return default
    values = section.floats(key, length=2)
    if any(v <= 0 or v != int(v) for v in values):
        raise section.error(key, f"expected [height, width] in whole positive pixels, got {values}")
    return int(values[0]), int(values[1])


def check_cameras(cameras: Sequence[str], robot, source, field: str) -> None:
    """When a robot is known, every camera a policy reads must be one of the robot's cameras."""
    if robot is None:
        return
    known = {camera.name for camera in robot.cameras}
    for camera in cameras:
        if camera not in known:
            raise ConfigError(source, field, f"camera {camera!r} is not a camera of robot {robot.name} "
                                             f"(cameras: {', '.join(sorted(known)) or 'none'})")
