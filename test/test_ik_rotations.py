"""Rotation forms of action spaces <-> matrices (vla_ros.core.rotations)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vla_ros.core.rotations import from_matrix, to_matrix

FORMS = ("rpy", "axis_angle", "quat")
angle = st.floats(-np.pi, np.pi, allow_nan=False)


def unit_vectors(size: int):
    return (
        st.lists(st.floats(-1.0, 1.0, allow_nan=False), min_size=size, max_size=size)
        .map(np.array)
        .filter(lambda v: np.linalg.norm(v) > 0.1)
        .map(lambda v: v / np.linalg.norm(v))
    )


unit_quaternions = unit_vectors(4)


def elementary(axis: int, theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    i, j = (axis + 1) % 3, (axis + 2) % 3  # cyclic, so each is right-handed
    rot = np.eye(3)
    rot[i, i], rot[i, j], rot[j, i], rot[j, j] = c, -s, s, c
    return rot


def quaternion_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """Textbook unit-quaternion rotation matrix, written out independently of pinocchio."""
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


@given(roll=angle, pitch=angle, yaw=angle)
def test_rpy_is_z_y_x(roll, pitch, yaw):
    expected = elementary(2, yaw) @ elementary(1, pitch) @ elementary(0, roll)
    np.testing.assert_allclose(to_matrix("rpy", [roll, pitch, yaw]), expected, atol=1e-12)


@given(quaternion=unit_quaternions)
def test_quaternion_order_is_xyzw(quaternion):
    np.testing.assert_allclose(to_matrix("quat", quaternion), quaternion_matrix(*quaternion), atol=1e-12)


@given(quaternion=unit_quaternions, form=st.sampled_from(FORMS))
def test_matrix_round_trips_through_every_form(quaternion, form):
    rotation = quaternion_matrix(*quaternion)
    np.testing.assert_allclose(to_matrix(form, from_matrix(form, rotation)), rotation, atol=1e-9)


@given(roll=angle, pitch=st.floats(-1.5, 1.5), yaw=angle)
def test_rpy_values_round_trip_away_from_gimbal_lock(roll, pitch, yaw):
    values = from_matrix("rpy", to_matrix("rpy", [roll, pitch, yaw]))
    # roll / yaw of +-pi are the same angle
    np.testing.assert_allclose(np.angle(np.exp(1j * (values - [roll, pitch, yaw]))), 0.0, atol=1e-9)


@given(axis=unit_vectors(3), theta=st.floats(0.0, 3.1))
def test_axis_angle_values_round_trip_below_pi(axis, theta):
    vector = axis * theta
    np.testing.assert_allclose(from_matrix("axis_angle", to_matrix("axis_angle", vector)), vector, atol=1e-9)


@given(quaternion=unit_quaternions, scale=st.floats(0.01, 100.0))
def test_quaternion_is_normalised_and_canonical(quaternion, scale):
    canonical = quaternion if quaternion[3] >= 0 else -quaternion
    np.testing.assert_allclose(to_matrix("quat", scale * quaternion), to_matrix("quat", quaternion), atol=1e-9)
    back = from_matrix("quat", to_matrix("quat", quaternion))
    if abs(canonical[3]) > 1e-6:  # at w = 0, q and -q are both canonical
        np.testing.assert_allclose(back, canonical, atol=1e-9)
    assert back[3] >= 0.0 and np.isclose(np.linalg.norm(back), 1.0)


@pytest.mark.parametrize(
    "form, values, match",
    [
        ("quat", [0.0, 0.0, 0.0, 0.0], "near-zero norm"),
        ("quat", [0.0, 0.0, 1.0], "expected 4 values"),
        ("rpy", [0.0, np.nan, 0.0], "non-finite"),
        ("euler", [0.0, 0.0, 0.0], "rotation form"),
    ],
)
def test_bad_rotations_are_rejected(form, values, match):
    with pytest.raises(ValueError, match=match):
        to_matrix(form, values)
