"""A classical baseline that needs no weights: colour-target visual servoing. Not a VLA.

It finds the largest saturated blob of a colour (default red) in one camera image, back-projects its centroid
through the robot config's pinhole camera onto the horizontal plane z = target_z (the target's centre: a ball of
radius r resting on a table at height h has target_z = h + r), and emits EE-delta chunks that move one arm's end
effector to a point `approach_height` above the target with a bounded, smooth speed profile. The demo uses it as
the default policy because it runs anywhere and its behaviour is predictable enough to test the whole chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from vla_ros.core.camera import PinholeCamera, intersect_plane_z
from vla_ros.core.config import Section
from vla_ros.core.errors import ConfigError
from vla_ros.core.policies.errors import ObservationError
from vla_ros.core.policies.preprocess import camera_image
from vla_ros.core.policies.spec import checked_chunk, optional_str, positive_int
from vla_ros.core.types import ActionChunk, ActionSpace, GripperConvention, Observation, PolicyMetadata

# OpenCV hue runs 0..180; red wraps around 0, hence two ranges. Saturation / value floors reject grey and dark.
RED_HSV = (((0, 120, 70), (10, 255, 255)), ((170, 120, 70), (180, 255, 255)))


@dataclass(frozen=True)
class Blob:
    u: float  # centroid, continuous pixel coordinates (pixel (i, j) covers [i, i + 1) x [j, j + 1))
    v: float
    area_px: int


def find_blob(image: np.ndarray, hsv_ranges: Sequence[tuple[Sequence[int], Sequence[int]]],
              min_area_px: int) -> Blob | None:
    """The largest connected region of an RGB image whose HSV lies in any of `hsv_ranges`, or None."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    mask = np.zeros(image.shape[:2], dtype=np.uint8)
    for lower, upper in hsv_ranges:
        mask |= cv2.inRange(hsv, np.array(lower, dtype=np.uint8), np.array(upper, dtype=np.uint8))
    count, _, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count < 2:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    area = int(stats[largest, cv2.CC_STAT_AREA])
    if area < min_area_px:
        return None
    u, v = centroids[largest] + 0.5  # OpenCV centroids are pixel indices; +0.5 = pixel centres
    return Blob(float(u), float(v), area)


OCCLUDED_FRACTION = 0.5  # a blob smaller than this share of the largest seen is taken as partly hidden


def approach_profile(start: np.ndarray, velocity: np.ndarray, goal: np.ndarray, steps: int, dt: float,
                     max_speed: float, max_accel: float, gain: float) -> np.ndarray:
    """(steps, 3) position increments from `start` (moving at `velocity`) toward `goal`.

    Commanded speed = min(max_speed, gain * distance, sqrt(2 * max_accel * distance)) along the line to the goal
    (cruise, then a braking ramp that stops at the goal), reached under an acceleration bound: a trapezoidal
    profile that starts from the measured velocity, so consecutive chunks join without a jump.
    """
    deltas = np.empty((steps, 3))
    position, velocity = start.astype(float).copy(), velocity.astype(float).copy()
    for k in range(steps):
        offset = goal - position
        distance = float(np.linalg.norm(offset))
        speed = min(max_speed, gain * distance, np.sqrt(2.0 * max_accel * distance))
        desired = offset / distance * speed if distance > 1e-9 else np.zeros(3)
        change = desired - velocity
        limit = max_accel * dt
        norm = float(np.linalg.norm(change))
        velocity = velocity + (change * (limit / norm) if norm > limit else change)
        deltas[k] = velocity * dt
        position += deltas[k]
    return deltas


class ColourTargetServo:
    """Baseline policy (not a VLA): servo one arm above a coloured target seen by one camera.

    Emits ee_delta chunks over all of the robot's arms (base frame, rpy zero); the driven arm's gripper is held
    open, the other arms hold still with their grippers at the measured opening.
    """

    def __init__(self, robot, *, camera: str | None = None, arm: str | None = None,
                 hsv_ranges: Sequence[tuple[Sequence[int], Sequence[int]]] = RED_HSV, min_area_px: int = 30,
                 target_z: float = 0.02, approach_height: float = 0.10, horizon: int = 10, rate_hz: float = 10.0,
                 max_speed: float = 0.15, max_accel: float = 0.5, gain: float = 2.0,
                 name: str = "colour_target_servo_baseline"):
        specs = {c.name: c for c in robot.cameras}
        source = f"policy {name}"
        if "baseline" not in name:
            raise ConfigError(source, "name", "a classical baseline's name must say 'baseline' (it is not a VLA)")
        camera = camera or next(iter(specs), "")
        if camera not in specs:
            raise ConfigError(source, "camera", f"robot {robot.name} has no camera {camera!r} "
                                                f"(cameras: {', '.join(specs) or 'none'})")
        if specs[camera].fov_y_deg is None or specs[camera].pose is None:
            raise ConfigError(robot.config_path, f"cameras.{camera}", "the baseline needs fov_y_deg and pose")
        arm_names = [a.name for a in robot.arms]
        arm = arm or arm_names[0]
        if arm not in arm_names:
            raise ConfigError(source, "arm", f"robot {robot.name} has no arm {arm!r} (arms: {', '.join(arm_names)})")
        self.robot, self.camera_name, self.arm = robot, camera, robot.arm(arm)
        self.camera = PinholeCamera.from_spec(specs[camera])
        self.hsv_ranges, self.min_area_px = tuple(hsv_ranges), min_area_px
        self.target_z, self.approach_height = target_z, approach_height
        self.max_speed = min(max_speed, self.arm.max_ee_linear_speed)
        self.max_accel, self.gain = max_accel, gain
        self._data = robot.new_data()
        # Target memory: near the goal the gripper hides part or all of the target. A partial view moves the blob
        # centroid (a wrong target) and no view stops the servo while the IK's integrated delta target may still be
        # ahead of the arm; so a view much smaller than the best one seen keeps the last full-view estimate.
        self._memory: np.ndarray | None = None
        self._best_area = 0
        has_gripper = any(a.gripper is not None for a in robot.arms)
        space = ActionSpace(kind="ee_delta", arms=tuple(arm_names), frame="base", rotation="rpy",
                            gripper=GripperConvention(1.0, 0.0) if has_gripper else None)
        self.metadata = PolicyMetadata(name=name, action_space=space, horizon=horizon, rate_hz=rate_hz,
                                       cameras=(camera,), is_baseline=True)
        # Column offset of each arm's block (xyz, rpy, gripper).
        offsets = np.cumsum([0] + [space.arm_width(i) for i in range(len(arm_names))])
        self._columns = {a: int(offsets[i]) for i, a in enumerate(arm_names)}
        # Joints a chunk depends on: the driven arm (FK, a wrist camera) and the grippers the other arms hold.
        self._required = set(self.arm.joints) | {a.gripper.joint for a in robot.arms
                                                 if a.gripper is not None and a.name != self.arm.name}

    def _configuration(self, observation: Observation) -> tuple[np.ndarray, np.ndarray]:
        """(q, dq) from the observation by joint name; joints the chunk does not depend on default to home."""
        q, dq = self.robot.home.copy(), np.zeros(self.robot.nq)
        for i, name in enumerate(self.robot.joint_names):
            if name in observation.joint_positions:
                q[i] = observation.joint_positions[name]
            elif name in self._required:
                raise ObservationError(f"policy {self.metadata.name}: observation has no position for joint {name!r}")
            dq[i] = observation.joint_velocities.get(name, 0.0)
        return q, dq

    def target(self, image: np.ndarray, q: np.ndarray) -> tuple[Blob | None, np.ndarray | None]:
        """The blob and its back-projection onto the plane z = target_z (base frame), if visible; while the view
        is occluded (no blob, or under OCCLUDED_FRACTION of the largest seen), the last full-view estimate."""
        blob = find_blob(image, self.hsv_ranges, self.min_area_px)
        if blob is None or blob.area_px < OCCLUDED_FRACTION * self._best_area:
            return blob, None if self._memory is None else self._memory.copy()
        origin, rotation = self.camera.pose_in_base(self.robot, q, self._data)
        height, width = image.shape[:2]
        direction = rotation @ self.camera.ray(blob.u, blob.v, width, height)
        estimate = intersect_plane_z(origin, direction, self.target_z)
        if estimate is not None:
            self._memory, self._best_area = estimate, max(self._best_area, blob.area_px)
        return blob, estimate

    def infer(self, observation: Observation) -> ActionChunk:
        meta = self.metadata
        image = camera_image(observation, self.camera_name, meta.name)
        q, dq = self._configuration(observation)
        space = meta.action_space
        actions = np.zeros((meta.horizon, space.dim))
        if space.gripper is not None:
            for i, arm in enumerate(self.robot.arms):
                column = self._columns[arm.name] + space.motion_width(i)
                hold = arm.gripper is not None and arm.name != self.arm.name
                actions[:, column] = arm.gripper.opening(q[arm.gripper.index]) if hold else space.gripper.open
        blob, target = self.target(image, q)
        info: dict[str, object] = {"target_visible": target is not None}
        if blob is not None:
            info["blob_px"] = (blob.u, blob.v)
            info["blob_area_px"] = blob.area_px
        if target is None:
            return checked_chunk(meta, actions, observation.stamp, info)
        goal = np.clip(target + np.array([0.0, 0.0, self.approach_height]), self.arm.workspace_min,
                       self.arm.workspace_max)
        start = self.robot.fk(q, self.arm.ee_frame_id, self._data).translation
        velocity = self.robot.frame_jacobian(q, self.arm.ee_frame_id, self._data)[:3] @ dq
        deltas = approach_profile(start, velocity, goal, meta.horizon, 1.0 / meta.rate_hz, self.max_speed,
                                  self.max_accel, self.gain)
        column = self._columns[self.arm.name]
        actions[:, column : column + 3] = deltas
        info.update(target_xyz=target.tolist(), goal_xyz=goal.tolist(),
                    distance_m=float(np.linalg.norm(goal - start)))
        return checked_chunk(meta, actions, observation.stamp, info)


def from_config(cfg: Section, robot=None) -> ColourTargetServo:
    """YAML keys: name, camera (default: the robot's first), arm (default: the first),
    hsv_ranges [[[h, s, v], [h, s, v]], ...], min_area_px, target_z, approach_height, horizon, rate_hz,
    max_speed, max_accel, gain."""
    cfg.unknown_keys({"backend", "name", "camera", "arm", "hsv_ranges", "min_area_px", "target_z",
                      "approach_height", "horizon", "rate_hz", "max_speed", "max_accel", "gain"})
    if robot is None:
        raise cfg.error("backend", "the colour-target baseline needs the robot model (camera pose, FK); pass robot=")
    ranges = RED_HSV
    if cfg.has("hsv_ranges"):
        raw = cfg.raw("hsv_ranges")
        if not isinstance(raw, list):
            raise cfg.error("hsv_ranges", f"expected a list of [[h, s, v], [h, s, v]] ranges, got {raw!r}")
        ranges = []
        for i, pair in enumerate(raw):
            field = f"hsv_ranges[{i}]"
            ok = (isinstance(pair, list) and len(pair) == 2 and all(
                isinstance(bound, list) and len(bound) == 3 and all(isinstance(x, int) and 0 <= x <= 255 for x in bound)
                for bound in pair))
            if not ok or pair[0][0] > 180 or pair[1][0] > 180:
                raise cfg.error(field, f"expected [[h, s, v], [h, s, v]] with h in 0..180, s, v in 0..255; "
                                       f"got {pair!r}")
            ranges.append((tuple(pair[0]), tuple(pair[1])))
        if not ranges:
            raise cfg.error("hsv_ranges", "expected at least one [lower, upper] range")
    return ColourTargetServo(
        robot, camera=optional_str(cfg, "camera"), arm=optional_str(cfg, "arm"), hsv_ranges=ranges,
        min_area_px=positive_int(cfg, "min_area_px", 30), target_z=cfg.float("target_z", 0.02),
        approach_height=cfg.float("approach_height", 0.10), horizon=positive_int(cfg, "horizon", 10),
        rate_hz=cfg.float("rate_hz", 10.0, positive=True), max_speed=cfg.float("max_speed", 0.15, positive=True),
        max_accel=cfg.float("max_accel", 0.5, positive=True), gain=cfg.float("gain", 2.0, positive=True),
        name=cfg.str("name", "colour_target_servo_baseline"),
    )
