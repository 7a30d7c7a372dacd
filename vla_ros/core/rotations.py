"""Rotation forms of action spaces (rpy, axis-angle, quaternion xyzw) <-> 3x3 rotation matrices, via pinocchio.

Conventions (docs/CONVENTIONS.md): rpy is R = Rz(yaw) Ry(pitch) Rx(roll) (pinocchio's `rpy` module uses the same);
axis-angle is the rotation vector axis * angle (pinocchio's exp3 / log3); quaternions are (x, y, z, w) like
geometry_msgs. A quaternion need not be unit length (policies emit slightly denormalised ones): it is normalised,
and a near-zero one is rejected because it names no rotation.
"""

from __future__ import annotations

import numpy as np
import pinocchio as pin

from vla_ros.core.types import ROTATION_WIDTH

_MIN_QUATERNION_NORM = 1e-6


def to_matrix(form: str, values: np.ndarray) -> np.ndarray:
    """Rotation in `form` ("rpy" | "axis_angle" | "quat") -> 3x3 rotation matrix."""
    values = _checked(form, values)
    if form == "rpy":
        return pin.rpy.rpyToMatrix(values)
    if form == "axis_angle":
        return pin.exp3(values)
    norm = float(np.linalg.norm(values))
    if not norm > _MIN_QUATERNION_NORM:
        raise ValueError(f"quaternion (x, y, z, w) {values.tolist()} has near-zero norm; it names no rotation")
    # pin.Quaternion built from a 4-vector reads it as coefficients (x, y, z, w), the geometry_msgs order.
    return pin.Quaternion(values / norm).toRotationMatrix()


def from_matrix(form: str, rotation: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix -> `form`: rpy with pitch in [-pi/2, pi/2], axis-angle with angle in [0, pi], unit
    quaternion (x, y, z, w) with w >= 0."""
    rotation = np.asarray(rotation, dtype=float)
    if rotation.shape != (3, 3):
        raise ValueError(f"rotation matrix: expected shape (3, 3), got {rotation.shape}")
    if form == "rpy":
        return pin.rpy.matrixToRpy(rotation)
    if form == "axis_angle":
        return pin.log3(rotation)
    if form == "quat":
        coeffs = pin.Quaternion(rotation).coeffs()  # (x, y, z, w)
        return -coeffs if coeffs[3] < 0 else coeffs
    raise ValueError(f"rotation form: expected one of {tuple(ROTATION_WIDTH)}, got {form!r}")


def _checked(form: str, values: np.ndarray) -> np.ndarray:
    if form not in ROTATION_WIDTH:
        raise ValueError(f"rotation form: expected one of {tuple(ROTATION_WIDTH)}, got {form!r}")
    values = np.asarray(values, dtype=float)
    if values.shape != (ROTATION_WIDTH[form],):
        raise ValueError(f"{form} rotation: expected {ROTATION_WIDTH[form]} values, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"{form} rotation: non-finite value in {values.tolist()}")
    return values
