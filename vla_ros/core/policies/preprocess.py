"""Observation preprocessing shared by every learned backend: camera images and the joint-state vector.

Images in an `Observation` are RGB, HxWx3 uint8 (what the ROS node decodes from `rgb8` / `bgr8` / compressed
frames). Each backend asks for its image size, resize mode, channel layout and dtype here, so every backend
resizes the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import cv2
import numpy as np

from vla_ros.core.config import Section
from vla_ros.core.errors import ConfigError
from vla_ros.core.policies.errors import ObservationError
from vla_ros.core.rotations import from_matrix
from vla_ros.core.types import ROTATION_WIDTH, GripperConvention, Observation

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
    """One entry of a policy's state vector: a joint position (times `scale`), or a gripper opening in the policy's
    convention (`convention`, its joint span always given)."""

    joint: str
    convention: GripperConvention | None = None  # gripper columns only
    scale: float = 1.0

    width = 1

    def value(self, position: float) -> float:
        if self.convention is None:
            return position * self.scale
        return self.convention.encode(position, None)


@dataclass(frozen=True)
class ConstantColumn:
    """A fixed entry of the state vector (a dataset's padding column, e.g. GR00T Bridge's `pad`)."""

    constant: float

    width = 1


# Column names of an end-effector pose part: position, then the rotation form's components.
EE_COMPONENTS = {"rpy": ("roll", "pitch", "yaw"), "axis_angle": ("rx", "ry", "rz"), "quat": ("qx", "qy", "qz", "qw")}


@dataclass(frozen=True)
class EEPoseColumns:
    """An arm's end-effector pose in the robot's base frame, by forward kinematics of its measured joints:
    x, y, z (m) then the rotation in `rotation` form (rad) — or the `components` subset of those columns."""

    robot: object = field(repr=False, compare=False)
    arm: str
    joints: tuple[str, ...]
    frame: str
    rotation: str
    components: tuple[int, ...]
    data: object = field(repr=False, compare=False)  # this part's own pinocchio Data: FK here never races the IK's

    @property
    def width(self) -> int:
        return len(self.components)

    def values(self, positions: Mapping[str, float], policy: str) -> np.ndarray:
        measured = []
        for joint in self.joints:
            position = positions.get(joint)
            if position is None:
                raise ObservationError(f"policy {policy}: observation has no position for joint {joint!r}")
            measured.append(float(position))
        q = self.robot.vector_from(self.joints, measured, default=self.robot.home)
        pose = self.robot.fk(q, self.frame, self.data)
        full = np.concatenate([pose.translation, from_matrix(self.rotation, pose.rotation)])
        return full[list(self.components)]


def state_width(columns: Sequence[StateColumn | ConstantColumn | EEPoseColumns]) -> int:
    """Length of the state vector built from `columns`."""
    return sum(column.width for column in columns)


def parse_state(items: Sequence[Section], robot) -> tuple[StateColumn | ConstantColumn | EEPoseColumns, ...]:
    """State parts from a policy YAML, each one of:
        {arm: NAME}                          the arm's joints, in the robot config's order
        {joints: [NAME, ...]}                named joints; optional scale (e.g. -1 for a mirrored finger)
        {gripper: ARM, open: 1.0, closed: 0.0}   the arm's gripper opening, as the policy encodes open / closed;
            optional joint_open / joint_closed: the joint values the *training data* normalised over, when they
            differ from the robot config's gripper range (ALOHA datasets use their own finger span)
        {ee: ARM, rotation: rpy, components: [x, y, z, roll, ...]}   the EE pose in the base frame by forward
            kinematics (rotation rpy | axis_angle | quat; components default: all, in that order)
        {constant: VALUE}                    a fixed value (a dataset's padding column)
    """
    columns: list[StateColumn | ConstantColumn | EEPoseColumns] = []
    for item in items:
        item.unknown_keys({"arm", "joints", "scale", "gripper", "open", "closed", "joint_open", "joint_closed", "ee",
                           "rotation", "components", "constant"})
        kinds = [key for key in ("arm", "joints", "gripper", "ee", "constant") if item.has(key)]
        if len(kinds) != 1:
            raise ConfigError(item.source, item.field, "expected exactly one of arm, joints, gripper, ee, constant")
        kind = kinds[0]
        if kind == "constant":
            columns.append(ConstantColumn(item.float("constant")))
            continue
        if kind == "joints":
            names = item.strs("joints")
            if robot is not None:
                for name in names:
                    if name not in robot.joint_names:
                        raise item.error("joints", f"joint {name!r} is not a joint of robot {robot.name}")
            scale = item.float("scale", 1.0)
            columns.extend(StateColumn(name, scale=scale) for name in names)
            continue
        if robot is None:
            raise item.error(kind, "needs a robot model to resolve arm names; pass robot= to make_policy")
        arm = _arm(item, kind, robot)
        if kind == "arm":
            columns.extend(StateColumn(name) for name in arm.joints)
            continue
        if kind == "ee":
            columns.append(_ee_pose(item, arm, robot))
            continue
        if arm.gripper is None:
            raise item.error("gripper", f"arm {arm.name!r} of robot {robot.name} has no gripper")
        convention = parse_gripper_convention(item, [arm])
        joint_open, joint_closed = convention.joint_span(arm.gripper)
        columns.append(StateColumn(arm.gripper.joint, replace(convention, joint_open=joint_open,
                                                              joint_closed=joint_closed)))
    return tuple(columns)


def parse_gripper_convention(section: Section, arms, defaults: tuple[float, float] | None = (1.0, 0.0)) \
        -> GripperConvention:
    """`open`, `closed` (the policy's values) and optional `joint_open`, `joint_closed` (the gripper joint values
    they stand for, in the joint's units) of `section`, checked against the grippers of `arms` (ArmSpecs; may be
    empty when no robot is known): both joint values or neither, a span that runs the way the robot's gripper opens
    and lies at least half inside its range (a span in other units, e.g. a motor angle for a finger joint, does
    not)."""
    opened = section.float("open") if defaults is None else section.float("open", defaults[0])
    closed = section.float("closed") if defaults is None else section.float("closed", defaults[1])
    if opened == closed:
        raise section.error("open", "open and closed must differ")
    if section.has("joint_open") != section.has("joint_closed"):
        missing = "joint_closed" if section.has("joint_open") else "joint_open"
        raise section.error(missing, "give both joint_open and joint_closed (the joint values the policy's open and "
                                     "closed stand for) or neither")
    if not section.has("joint_open"):
        return GripperConvention(opened, closed)
    joint_open, joint_closed = section.float("joint_open"), section.float("joint_closed")
    if joint_open == joint_closed:
        raise section.error("joint_open", "joint_open and joint_closed must differ")
    for arm in arms:
        gripper = arm.gripper
        if gripper is None:
            continue
        where = f"arm {arm.name!r} gripper {gripper.joint} (open {gripper.open:g}, closed {gripper.closed:g})"
        if (joint_open > joint_closed) != (gripper.open > gripper.closed):
            raise section.error("joint_open", f"the span {joint_closed:g}..{joint_open:g} (closed..open) runs the "
                                              f"other way than {where}")
        low, high = sorted((joint_open, joint_closed))
        inside = min(high, max(gripper.open, gripper.closed)) - max(low, min(gripper.open, gripper.closed))
        if inside < 0.5 * (high - low):  # a dataset's span differs from the robot's by end-stop calibration only
            raise section.error("joint_open", f"the span {joint_closed:g}..{joint_open:g} (closed..open) lies mostly "
                                              f"outside the range of {where}; give it in that joint's units")
    return GripperConvention(opened, closed, joint_open, joint_closed)


def _ee_pose(item: Section, arm, robot) -> EEPoseColumns:
    rotation = item.choice("rotation", tuple(ROTATION_WIDTH), "rpy")
    names = ("x", "y", "z") + EE_COMPONENTS[rotation]
    wanted = item.strs("components", list(names))
    unknown = [name for name in wanted if name not in names]
    if unknown or not wanted:
        raise item.error("components", f"expected a non-empty list of {', '.join(names)} (rotation {rotation}), "
                                       f"got {wanted}")
    return EEPoseColumns(robot, arm.name, arm.joints, arm.ee_frame, rotation,
                         tuple(names.index(name) for name in wanted), robot.new_data())


def _arm(item: Section, key: str, robot):
    name = item.str(key)
    try:
        return robot.arm(name)
    except KeyError:
        raise item.error(key, f"robot {robot.name} has no arm {name!r} (arms: "
                              f"{', '.join(a.name for a in robot.arms)})") from None


def state_vector(columns: Sequence[StateColumn | ConstantColumn | EEPoseColumns], observation: Observation,
                 policy: str) -> np.ndarray:
    """The policy's state vector (float32) from the observation's joint positions, mapped by name."""
    values = np.empty(state_width(columns), dtype=np.float32)
    positions = observation.joint_positions
    i = 0
    for column in columns:
        if isinstance(column, StateColumn):
            position = positions.get(column.joint)
            if position is None:
                raise ObservationError(f"policy {policy}: observation has no position for joint {column.joint!r}")
            values[i] = column.value(float(position))
        elif isinstance(column, ConstantColumn):
            values[i] = column.constant
        else:
            values[i : i + column.width] = column.values(positions, policy)
        i += column.width
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
