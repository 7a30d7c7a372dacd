"""Whole-chunk pre-check: the right limit, joint / arm and first step for each kind of violation."""

from __future__ import annotations

import numpy as np
import pytest

from safety_helpers import Rig


def _chunk(rig: Rig, offsets: np.ndarray) -> np.ndarray:
    """Rows of absolute joint targets: the commanded position plus per-row offsets (T x nq)."""
    return rig.commands[-1].positions + np.asarray(offsets)


def _by_limit(violations):
    return {(v.limit, v.joint or v.arm): v for v in violations}


def test_chunk_within_every_limit_has_no_violation():
    rig = Rig("franka")
    t = np.arange(1, 26) * 0.02
    offsets = np.zeros((25, 8))
    offsets[:, 0] = 0.1 * (1 - np.cos(2 * t))  # smooth, slow, from rest
    assert rig.filter.precheck(_chunk(rig, offsets), 0.02, rig.names) == []


def test_position_velocity_acceleration_jerk_report_joint_and_first_step():
    rig = Rig("franka")
    chunk = _chunk(rig, np.zeros((10, 8)))
    i4, i6 = rig.names.index("panda_joint4"), rig.names.index("panda_joint6")
    chunk[6:, i4] = rig.robot.limits.upper[i4]  # into the margin band from step 6 on (a jump, too)
    chunk[3:, i6] += np.arange(1, 8) * 0.1  # 5 rad/s from step 3 on
    found = _by_limit(rig.filter.precheck(chunk, 0.02, rig.names))
    position = found[("position", "panda_joint4")]
    assert position.step == 6 and position.requested == pytest.approx(rig.robot.limits.upper[i4])
    assert position.allowed == pytest.approx(rig.robot.limits.upper[i4] - 0.05) and position.time_scale is None
    velocity = found[("velocity", "panda_joint6")]
    assert velocity.step == 3 and velocity.requested == pytest.approx(5.0) and velocity.arm == "arm"
    assert velocity.time_scale == pytest.approx(5.0 / rig.robot.limits.velocity[i6])
    acceleration = found[("acceleration", "panda_joint6")]
    assert acceleration.step == 3 and acceleration.time_scale == pytest.approx(np.sqrt(250 / 20))
    assert found[("jerk", "panda_joint6")].step == 3
    assert "1 of 10 steps" in acceleration.detail or "2 of 10 steps" in acceleration.detail


def test_the_jump_from_the_commanded_state_to_the_first_row_counts():
    rig = Rig("franka")
    chunk = _chunk(rig, np.zeros((5, 8)))
    chunk[:, 1] += 0.5  # every row at the new place: only the first step moves
    found = _by_limit(rig.filter.precheck(chunk, 0.02, rig.names))
    assert found[("velocity", "panda_joint2")].step == 0
    assert found[("velocity", "panda_joint2")].requested == pytest.approx(25.0)


def test_chunk_ending_too_fast_toward_a_limit_is_reported_at_its_last_step():
    franka = Rig("franka").robot
    i = franka.joint_names.index("panda_joint7")
    upper = franka.limits.upper[i] - 0.05
    start = franka.home.copy()
    start[i] = upper - 0.01 - 8 * 0.02
    rig = Rig("franka", start=start)
    chunk = _chunk(rig, np.zeros((8, 8)))
    chunk[:, i] += np.arange(1, 9) * 0.02  # 1 rad/s up to 1 cm before the margin: too close to stop there
    stop = [v for v in rig.filter.precheck(chunk, 0.02, rig.names) if v.limit == "position"]
    assert [(v.joint, v.step) for v in stop] == [("panda_joint7", 7)]
    assert stop[0].requested > upper and stop[0].allowed == pytest.approx(upper)
    assert "moving at 1 at the last step: stopping at the limits ends at" in stop[0].detail


def test_workspace_and_ee_speed_name_the_arm():
    rig = Rig("franka")
    chunk = np.tile(rig.robot.home, (10, 1))
    chunk[:, 1] = np.linspace(rig.robot.home[1], 1.3, 10)  # leaning forward: hand below the table at the end
    found = _by_limit(rig.filter.precheck(chunk, 0.02, rig.names))
    workspace = found[("workspace", "arm")]
    assert workspace.joint is None and 0 < workspace.step < 10 and workspace.allowed == pytest.approx(0.02)
    speed = found[("ee_linear_speed", "arm")]
    assert speed.step == 1 and speed.requested > 0.5 and speed.time_scale == pytest.approx(speed.requested / 0.5)


@pytest.mark.parametrize("trajectory, dt, names, problem", [
    (np.full((3, 8), np.nan), 0.02, None, "non-finite value at step 0, joint panda_joint1"),
    (np.zeros((3, 7)), 0.02, None, "trajectory shape (3, 7), expected (T > 0, 8)"),
    (np.zeros((0, 8)), 0.02, None, "expected (T > 0, 8)"),
    (np.zeros((3, 8)), 0.0, None, "dt = 0.0, expected a positive number"),
    (np.zeros((3, 2)), 0.02, ["panda_joint1", "wrist"], "unknown joint 'wrist'"),
    (np.zeros((3, 2)), 0.02, ["panda_joint1", "panda_joint1"], "a joint is named twice"),
])
def test_bad_chunk_is_one_input_violation(trajectory, dt, names, problem):
    rig = Rig("franka")
    (violation,) = rig.filter.precheck(trajectory, dt, names or rig.names)
    assert violation.limit == "input" and problem in violation.detail


def test_subset_of_joints_keeps_the_others_at_their_commanded_position():
    rig = Rig("franka")
    chunk = rig.robot.home[[6]][None, :] + np.linspace(0.001, 0.005, 5)[:, None]
    assert rig.filter.precheck(chunk, 0.02, ["panda_joint7"]) == []
    assert [v.as_dict()["limit"] for v in rig.filter.precheck(chunk + 1.0, 0.02, ["panda_joint7"])][:1] == ["velocity"]
