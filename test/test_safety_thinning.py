"""The points sent for each command's piece (controller_trajectory.thin): a bound on the segment checks per piece
keeps every point of the stretches left unchecked, so the result is still one the controller reproduces within the
tolerance and limits, and a superset of the unbounded thinning."""

import numpy as np
import pytest

import vla_ros.core.safety.filter as filter_module
from vla_ros.core.safety import SafetyFilter
from vla_ros.core.safety.controller_trajectory import _segment_fits, thin


@pytest.fixture(scope="module")
def pieces(franka):
    """Pieces of a Franka filter run toward a far target and back (several with dozens of breakpoints)."""
    captured = []
    original = filter_module.thin_piece

    def capture(points, velocity, acceleration, *args, **kwargs):
        captured.append((points, np.asarray(velocity), np.asarray(acceleration)))
        return original(points, velocity, acceleration, *args, **kwargs)

    names = list(franka.joint_names)
    safety = SafetyFilter(franka, keep_trajectory=True)
    safety.update_joint_state(names, franka.home, 0.0)
    safety.tick(0.0)
    far = franka.home + np.array([0.8, -0.5, 0.6, -0.7, 0.9, 0.8, -0.9, 0.0])
    filter_module.thin_piece = capture
    try:
        for k in range(1, 60):
            target = far if k < 30 else franka.home
            safety.update_joint_state(names, safety.last_command.positions, k * 0.02)
            safety.filter(names, target, k * 0.02)
    finally:
        filter_module.thin_piece = original
    return [(np.array([p[0] for p in points]), *(np.array([p[k] for p in points]) for k in (1, 2, 3)), v, a)
            for points, v, a in captured]


def test_bounded_thinning_keeps_unchecked_stretches_whole(pieces):
    bound_applied = 0
    for times, positions, velocities, accelerations, vmax, amax in pieces:
        ends = (0, len(times) - 1)
        unbounded = thin(times, positions, velocities, accelerations, vmax, amax, 1e-5, ends)
        assert thin(times, positions, velocities, accelerations, vmax, amax, 1e-5, ends, max_checks=0) == \
            list(range(len(times)))
        for budget in (1, 2, 4):
            kept = thin(times, positions, velocities, accelerations, vmax, amax, 1e-5, ends, max_checks=budget)
            assert set(unbounded) <= set(kept)
            bound_applied += kept != unbounded
            for i, j in zip(kept, kept[1:]):  # every segment sent was checked, or is exact (no point between)
                assert j == i + 1 or _segment_fits(times, positions, velocities, accelerations, i, j, vmax, amax,
                                                   1e-5)[0], (budget, i, j)
    assert bound_applied > 0 and len(pieces) > 40  # the run had pieces that need more checks than the bounds
