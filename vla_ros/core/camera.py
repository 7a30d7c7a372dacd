"""The robot config's camera model: pinhole, centred principal point, square pixels, vertical field of view.

Used wherever pixels and base-frame points meet: the baseline back-projects what it sees, the demo draws the
predicted chunk on camera frames. (The simulator renders the same model through MuJoCo's camera.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pinocchio as pin


@dataclass(frozen=True)
class PinholeCamera:
    """A robot-config camera: centred principal point, square pixels, vertical field of view, optical frame
    (z forward, x right, y down) at `xyz`, `rpy` (R = Rz Ry Rx) in frame `parent`."""

    fov_y_deg: float
    parent: str
    xyz: np.ndarray
    rotation: np.ndarray

    @classmethod
    def from_spec(cls, spec) -> "PinholeCamera":
        parent, xyz, rpy = spec.pose
        return cls(spec.fov_y_deg, parent, np.array(xyz, dtype=float), pin.rpy.rpyToMatrix(*rpy))

    def focal_px(self, height: int) -> float:
        return 0.5 * height / np.tan(np.radians(self.fov_y_deg) / 2.0)

    def pose_in_base(self, robot, q: np.ndarray, data=None) -> tuple[np.ndarray, np.ndarray]:
        """(origin, rotation) of the optical frame in the robot's base frame."""
        if self.parent == robot.base_frame:
            return self.xyz, self.rotation
        parent = robot.fk(q, self.parent, data)
        return parent.rotation @ self.xyz + parent.translation, parent.rotation @ self.rotation

    def ray(self, u: float, v: float, width: int, height: int) -> np.ndarray:
        """Direction (optical frame, not unit) through continuous pixel coordinates (u, v)."""
        f = self.focal_px(height)
        return np.array([(u - width / 2.0) / f, (v - height / 2.0) / f, 1.0])

    def project(self, point: np.ndarray, origin: np.ndarray, rotation: np.ndarray, width: int,
                height: int) -> tuple[float, float] | None:
        """Continuous pixel coordinates of a base-frame point, or None when it is behind the camera."""
        local = rotation.T @ (np.asarray(point, dtype=float) - origin)
        if local[2] <= 0:
            return None
        f = self.focal_px(height)
        return width / 2.0 + f * local[0] / local[2], height / 2.0 + f * local[1] / local[2]


def intersect_plane_z(origin: np.ndarray, direction: np.ndarray, z: float) -> np.ndarray | None:
    """Where the ray origin + t * direction (t > 0) meets the plane z = const, or None."""
    if abs(direction[2]) < 1e-9:
        return None
    t = (z - origin[2]) / direction[2]
    return origin + t * direction if t > 0 else None
