"""SafetyFilter behaviour: each limit, each bad input, time misbehaving, watchdogs, e-stop, reports.

Every command of every Rig goes through the independent LimitChecker (test/safety_helpers.py), so each test also
asserts that the whole command stream respected every limit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from safety_helpers import Rig, robot
from vla_ros.core.errors import ConfigError
from vla_ros.core.safety import SafetyConfig, SafetyFilter
from vla_ros.core.safety.config import SafetyLimits, default_safety_config_path
from vla_ros.core.safety.report import LIMITS, Intervention


def _joint(rig: Rig, name: str) -> int:
    return rig.names.index(name)


# --- start-up --------------------------------------------------------------------------------------------------------

def test_not_ready_until_every_joint_is_measured_then_anchored_at_rest():
    franka = robot("franka")
    f = SafetyFilter(franka)
    command = f.tick(0.0)
    assert command.state == "not_ready" and command.positions is None and not command.sendable
    command = f.filter(list(franka.joint_names), franka.home, 0.01)
    assert command.state == "not_ready" and [i.limit for i in command.interventions] == ["not_ready"]
    arm = list(franka.arms[0].joints)
    assert f.update_joint_state(arm, franka.home[:7], 0.02) == ()
    assert f.tick(0.02).state == "not_ready"  # the gripper has not been measured yet
    f.update_joint_state(["panda_finger_joint1", "panda_finger_joint2"], [0.03, 0.03], 0.02)  # + a mimic joint
    command = f.tick(0.03)
    assert command.state == "stopped" and command.segment == 1
    np.testing.assert_array_equal(command.positions, np.r_[franka.home[:7], 0.03])
    assert not command.velocities.any() and not command.accelerations.any()


# --- tracking -------------------------------------------------------------------------------------------------------

def test_smooth_target_stream_passes_through_unchanged():
    rig = Rig("franka")
    for k in range(1, 150):
        t = k * 0.02
        q = rig.robot.home.copy()
        q[0] += 0.3 * (1 - math.cos(2.0 * t))  # starts at rest, like a planned motion
        q[3] += 0.2 * (1 - math.cos(3.0 * t))
        command = rig.target(q)
        assert command.state == "ok"
        np.testing.assert_allclose(command.positions, q, atol=1e-9)
        assert command.interventions == ()


def test_moving_target_is_caught_up_after_a_jump_then_passes_through():
    rig = Rig("ur5")
    outputs = []
    for k in range(1, 200):
        t = k * 0.02
        q = rig.robot.home.copy()
        q[0] += 0.2 + 0.3 * math.sin(2 * t)  # jumps 0.2 rad at the start, then moves at up to 0.6 rad/s
        outputs.append((q, rig.target(q)))
    first = outputs[0][1]
    assert {"velocity", "acceleration", "jerk"} & {i.limit for i in first.interventions}
    assert abs(first.positions[0] - rig.robot.home[0]) < 0.01  # no jump
    for q, command in outputs[-50:]:
        assert abs(command.positions[0] - q[0]) <= rig.config.tracking_tolerance


def test_target_beyond_the_range_is_clamped_to_the_margin_and_reported():
    rig = Rig("franka")
    i = _joint(rig, "panda_joint7")  # turns the hand about its axis: no workspace limit in the way
    q = rig.robot.home.copy()
    q[i] = 1e9
    first = rig.target(q)
    clamp = [x for x in first.interventions if x.limit == "position"]
    upper = rig.robot.limits.upper[i] - rig.config.revolute_margin
    assert clamp[0].joint == "panda_joint7" and clamp[0].arm == "arm"
    assert clamp[0].requested == 1e9 and clamp[0].allowed == pytest.approx(upper)
    for _ in range(150):
        rig.target(q)
    positions = rig.positions()[:, i]
    assert positions.max() <= upper + 1e-9
    assert positions[-1] == pytest.approx(upper, abs=1e-6)


def test_braking_distance_stops_a_fast_joint_exactly_at_the_margined_limit():
    """A target ramping at speed into the limit: passed through, until the joint must brake to stop at the margin
    (look-ahead: braking starts before the target reaches the limit), never beyond."""
    start = robot("widowx").home.copy()
    start[5] = 2.0  # wrist_rotate, range +-pi, rolls the gripper about its own axis (the EE does not move)
    rig = Rig("widowx", start=start)
    upper = rig.robot.limits.upper[5] - 0.05
    for k in range(1, 120):
        t, ramp = k * 0.02, 1.0  # a smooth start to 1.5 rad/s within `ramp` seconds, then constant speed
        q = start.copy()
        q[5] += 0.75 * (t - ramp / np.pi * np.sin(np.pi * t / ramp)) if t < ramp else 0.75 * ramp + 1.5 * (t - ramp)
        command = rig.target(q)
        if q[5] < upper - 0.5:
            assert command.interventions == ()
            assert command.positions[5] == pytest.approx(q[5], abs=rig.config.tracking_tolerance)
    wrist = rig.positions()[:, 5]
    assert (np.diff(wrist) / 0.02).max() == pytest.approx(1.5, abs=1e-6)
    assert wrist.max() <= upper + 1e-9 and wrist[-1] == pytest.approx(upper, abs=1e-9)
    braking = [k for k, c in enumerate(rig.commands)
               if any("can still stop" in x.detail for x in c.interventions if x.limit == "position")]
    assert braking and wrist[braking[0]] < upper - 0.1  # it started braking well before the limit


def test_jump_is_spread_over_steps_within_velocity_acceleration_and_jerk_and_reported():
    rig = Rig("ur5")
    q = rig.robot.home.copy()
    q[5] += 1.0  # wrist_3: turns the tool about its axis, no EE position limit in the way
    first = rig.target(q)
    late = [x for x in first.interventions if x.limit in ("velocity", "acceleration", "jerk")]
    assert [x.joint for x in late] == ["wrist_3_joint"] and late[0].requested == pytest.approx(q[5])
    assert abs(first.positions[5] - rig.robot.home[5]) < 1e-3
    for _ in range(150):
        rig.target(q)
    assert rig.commands[-1].positions[5] == pytest.approx(q[5], abs=1e-9)  # it gets there, checker-approved


# --- bad input ------------------------------------------------------------------------------------------------------

BAD_TARGETS = {
    "nan": (lambda names, q: (names, np.r_[q[:2], np.nan, q[3:]]), "panda_joint3 = nan is not finite"),
    "inf": (lambda names, q: (names, np.r_[q[:5], -np.inf, q[6:]]), "panda_joint6 = -inf is not finite"),
    "short": (lambda names, q: (names, q[:-1]), "8 joint names but 7 positions"),
    "long": (lambda names, q: (names, np.r_[q, 0.0]), "8 joint names but 9 positions"),
    "unknown": (lambda names, q: (names[:-1] + ["elbow"], q), "unknown joint 'elbow'"),
    "duplicate": (lambda names, q: (names[:-1] + [names[0]], q), "joint 'panda_joint1' named twice"),
    "empty": (lambda names, q: ([], []), "no joint of robot franka named"),
    "matrix": (lambda names, q: (names, np.tile(q, (2, 1))), "one flat list"),
    "text": (lambda names, q: (names, ["a"] * len(names)), "not numbers"),
}


@pytest.mark.parametrize("case", sorted(BAD_TARGETS))
def test_bad_target_is_refused_whole_holding_the_last_target(case):
    make, detail = BAD_TARGETS[case]
    rig, reference = Rig("franka"), Rig("franka")
    goal = rig.robot.home + np.r_[0.3, 0, 0, 0, 0, 0, 0, 0]
    for r in (rig, reference):
        r.target(goal)
    changed = goal + 0.2  # every joint valid except the bad field: nothing of it may be applied
    names, values = make(list(rig.names), changed)
    command = rig.target(values, names=names)
    held = reference.tick()
    assert command.state == "hold" and held.state == "hold"
    np.testing.assert_array_equal(command.positions, held.positions)
    (report,) = command.interventions
    assert report.limit == "input" and detail in report.detail and report.detail.startswith("target refused")
    assert rig.filter.intervention_counts()["input"] == 1


def test_bad_joint_state_is_refused_and_returned():
    rig = Rig("franka")
    (report,) = rig.filter.update_joint_state(rig.names, np.r_[np.nan, rig.robot.home[1:]], rig.now)
    assert report.limit == "input" and report.joint == "panda_joint1" and "joint state refused" in report.detail
    (report,) = rig.filter.update_joint_state(rig.names, rig.robot.home, math.inf)
    assert report.detail == "joint state refused: time inf is not finite"


def test_targets_map_by_name_and_unnamed_joints_keep_their_target():
    ordered, shuffled = Rig("franka"), Rig("franka")
    goal = ordered.robot.home + np.r_[0.2, -0.1, 0.1, 0.2, 0.0, 0.1, -0.2, -0.02]
    order = [3, 0, 7, 5, 1, 6, 2, 4]
    for _ in range(60):
        a = ordered.target(goal)
        b = shuffled.target(goal[order], names=[shuffled.names[k] for k in order])
        np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_allclose(a.positions, goal, atol=1e-9)
    for _ in range(60):  # only joint 2 is named from now on: the others stay at their (reached) targets
        command = ordered.target([goal[1] + 0.1], names=["panda_joint2"])
    expected = goal.copy()
    expected[1] += 0.1
    np.testing.assert_allclose(command.positions, expected, atol=1e-9)


# --- time --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dt", [0.0, -0.005, 1e-5])
def test_call_that_does_not_advance_time_repeats_the_command(dt):
    rig = Rig("franka")
    q = rig.robot.home + 0.3
    moving = rig.target(q)
    again = rig.target(q + 0.1, dt=dt)
    # Same point of the filter's timeline; a clock that went back re-stamps it on the new clock.
    assert again.timeline == moving.timeline and again.state == "hold"
    assert again.stamp == (moving.stamp if dt >= 0 else rig.now)
    np.testing.assert_array_equal(again.positions, moving.positions)
    (report,) = again.interventions
    assert report.limit == "time" and ", target refused" in report.detail
    assert ("clock went back 0.005 s" if dt < 0 else "command repeated") in report.detail
    assert rig.target(q).state == "ok"  # and the stream carries on within limits


def test_ten_second_gap_brakes_to_rest_instead_of_a_ten_second_step():
    rig = Rig("franka")
    q = rig.robot.home.copy()
    q[0] += 2.0
    for _ in range(15):
        moving = rig.target(q)
    assert abs(moving.velocities[0]) > 1.0
    late = rig.target(q, dt=10.0)
    assert late.state == "stopped" and not late.velocities.any()
    assert 0 < late.positions[0] - moving.positions[0] < moving.velocities[0] ** 2 / rig.robot.limits.acceleration[0]
    assert "no command for 10.000 s" in " ".join(x.detail for x in late.interventions)
    assert rig.target(q).state == "ok"  # a fresh target after the gap resumes


# --- watchdogs -------------------------------------------------------------------------------------------------------

def test_stale_joint_state_holds_then_stops_within_limits():
    rig = Rig("franka")
    q = rig.robot.home.copy()
    q[0] += 2.0
    for _ in range(10):
        rig.target(q)
    states, reasons = [], []
    for _ in range(40):  # joint states stop arriving
        command = rig.target(q, measure=False)
        states.append(command.state)
        reasons += [x.limit for x in command.interventions]
    # 0.02 s periods: the first two are fresh, then the target is refused and held, then the graded stop.
    assert states[:2] == ["ok", "ok"] and states[2] == "hold"
    assert reasons.count("state_stale") >= 5 and "stopping" in states and states[-1] == "stopped"
    assert not rig.commands[-1].velocities.any()
    assert rig.target(q).state == "ok"  # state fresh again: a new target resumes


def test_no_new_target_holds_then_stops_within_limits_then_resumes():
    rig = Rig("franka")
    q = rig.robot.home.copy()
    q[0] += 2.0
    for _ in range(10):
        rig.target(q)
    states = [rig.tick().state for _ in range(40)]
    hold_steps = int(rig.config.command_stop_after / 0.02)
    assert states[: hold_steps - 1] == ["hold"] * (hold_steps - 1)
    assert "stopping" in states and states[-1] == "stopped"
    # Reported once, on the transition (the EE speed limit also shapes the motion toward the held target).
    assert rig.limits_hit(-40) <= {"command_stale", "ee_linear_speed", "ee_angular_speed"}
    assert [x.limit for c in rig.commands[-40:] for x in c.interventions].count("command_stale") == 1
    assert rig.target(q).state == "ok"


def test_estop_latches_brakes_within_limits_refuses_targets_and_resets_on_the_measured_state():
    rig = Rig("franka")
    q = rig.robot.home.copy()
    q[0] += 2.0
    for _ in range(12):
        rig.target(q)
    rig.filter.estop("operator")
    braking = rig.target(q)
    assert braking.state == "estop" and rig.filter.estopped and rig.filter.estop_reason == "operator"
    assert [x.detail for x in braking.interventions] == [
        "e-stop latched: operator", "target refused: e-stop latched (operator); call reset"]
    refused = rig.filter.reset(rig.now)
    assert not refused and "still braking" in refused.reason
    for _ in range(30):
        assert rig.tick().state == "estop"
    assert not rig.commands[-1].velocities.any()
    refused = rig.filter.reset(rig.now + 0.06)
    assert not refused and "joint state is 0.060 s old" in refused.reason
    pushed = rig.commands[-1].positions + np.r_[[0.01] * 7, 0.0]  # someone moved the arm while it was stopped
    rig.measured = pushed
    rig.measure()
    refused = rig.filter.reset(rig.now)
    assert not refused and "moved 0.0100 rad in the last 0.2 s" in refused.reason  # the measured arm moved
    for _ in range(12):  # the arm stays where it was pushed
        rig.now += 0.02
        rig.measure()
    assert rig.filter.reset(rig.now)
    assert rig.filter.intervention_counts()["reset"] == 3
    anchored = rig.tick()
    assert anchored.segment == braking.segment + 1 and anchored.state == "stopped"
    np.testing.assert_array_equal(anchored.positions, pushed)  # the robot is not moved by the reset
    assert rig.target(q).state == "ok"


# --- end-effector limits -------------------------------------------------------------------------------------------

def test_workspace_box_keeps_the_ee_inside_and_reports_it():
    rig = Rig("franka")
    arm = rig.robot.arms[0]
    q = rig.robot.home.copy()
    q[1] = 1.3  # leaning forward: the hand would go below the table (z < 0.02)
    assert rig.robot.fk(q, arm.ee_frame_id).translation[2] < arm.workspace_min[2]
    for _ in range(150):
        rig.target(q)
    heights = [rig.robot.fk(p, arm.ee_frame_id).translation[2] for p in rig.positions()]
    assert min(heights) >= arm.workspace_min[2] - 1e-9
    assert min(heights) == pytest.approx(arm.workspace_min[2], abs=0.005)  # it goes down to the wall
    reports = [x for c in rig.commands for x in c.interventions if x.limit == "workspace"]
    assert reports and reports[0].arm == "arm" and reports[0].joint is None and "z =" in reports[0].detail


def test_ee_speed_limit_slows_a_fast_joint_motion_and_reports_it():
    rig = Rig("franka")
    arm = rig.robot.arms[0]
    q = rig.robot.home.copy()
    q[0] += 2.5  # the base turns at 2.2 rad/s if allowed: ~1 m/s at the hand
    for _ in range(100):
        rig.target(q)
    points = np.array([rig.robot.fk(p, arm.ee_frame_id).translation for p in rig.positions()])
    speeds = np.linalg.norm(np.diff(points, axis=0), axis=1) / 0.02
    assert speeds.max() <= arm.max_ee_linear_speed * (1 + 1e-6)
    # It rides just under the limit: the bound kept over the stop that would follow (what a brake could reach,
    # the Jacobian changing along it included) is what touches the limit.
    assert speeds.max() > 0.75 * arm.max_ee_linear_speed
    assert "ee_linear_speed" in rig.limits_hit()


def test_joint_and_ee_starting_outside_their_ranges_only_move_inward():
    franka = robot("franka")
    start = franka.home.copy()
    start[0] = franka.limits.upper[0]  # at the hard limit, inside the 0.05 rad margin band; the hand at x = -0.3,
    rig = Rig("franka", start=start)   # behind the box (x >= -0.2)
    q = start.copy()
    q[0] = 1e9  # clamped to the margined range: pulls the joint in
    for _ in range(30):
        rig.target(q)
    assert rig.positions()[:, 0].max() == start[0]  # never further out
    assert rig.positions()[-1, 0] == pytest.approx(start[0] - 0.05)
    q[0] = 2.0
    for _ in range(100):
        rig.target(q)
    assert rig.positions()[-1, 0] == pytest.approx(2.0)
    q[0] = start[0]
    for _ in range(100):
        rig.target(q)
    # Inside now: the configured ranges apply again. The hand stops at the box (x >= -0.2) before the joint
    # reaches its margin, and a chunk back to the start is flagged.
    hand = rig.robot.fk(rig.positions()[-1], rig.robot.arms[0].ee_frame_id).translation
    assert hand[0] == pytest.approx(-0.2, abs=1e-3) and rig.positions()[-1, 0] < 2.3
    assert "workspace" in rig.limits_hit(-100)
    assert {v.limit for v in rig.filter.precheck(np.array([[start[0]]]), 0.02, ["panda_joint1"])} >= {"position"}


# --- reports and configuration ---------------------------------------------------------------------------------------

def test_interventions_are_flat_records_and_counted_by_kind():
    rig = Rig("franka")
    q = rig.robot.home.copy()
    q[0] = 1e9
    command = rig.target(q)
    report = command.interventions[0]
    assert isinstance(report, Intervention)
    assert report.as_dict() == {"limit": "position", "arm": "arm", "joint": "panda_joint1", "requested": 1e9,
                                "allowed": pytest.approx(2.8473), "detail": report.detail}
    counts = rig.filter.intervention_counts()
    assert set(counts) == set(LIMITS)
    assert counts["position"] == sum(x.limit == "position" for x in command.interventions) >= 1
    assert sum(counts.values()) == len(command.interventions)


def test_safety_yaml_defaults_match_the_code_and_bad_files_name_the_field(tmp_path):
    assert SafetyConfig.from_yaml(default_safety_config_path()) == SafetyConfig()
    bad = tmp_path / "safety.yaml"
    bad.write_text("watchdog: {command_timeout: 1.0}\n")
    with pytest.raises(ConfigError, match=r"safety.yaml: watchdog.command_timeout: unknown key"):
        SafetyConfig.from_yaml(bad)
    bad.write_text("position_margin: {joints: {elbow: 0.1}}\n")
    with pytest.raises(ConfigError, match=r"position_margin.joints.elbow: not a commanded joint of robot franka"):
        SafetyConfig.from_yaml(bad, robot("franka"))
    bad.write_text("limit_scale: {velocity: 1.5}\n")
    with pytest.raises(ConfigError, match=r"velocity_scale: must be in \(0, 1\]"):
        SafetyConfig.from_yaml(bad)


def test_margins_per_joint_type_gripper_and_override():
    franka = robot("franka")
    config = SafetyConfig(revolute_margin=0.1, joint_margins={"panda_joint7": 0.2}, max_margin_fraction=0.01)
    limits = SafetyLimits.of(franka, config)
    span = franka.limits.upper - franka.limits.lower
    margin = limits.lower - franka.limits.lower
    np.testing.assert_allclose(margin[:6], np.minimum(0.1, 0.01 * span[:6]))
    assert margin[6] == pytest.approx(min(0.2, 0.01 * span[6]))
    assert margin[7] == 0.0  # the gripper's end stops are its open / closed positions
    np.testing.assert_allclose(limits.upper, franka.limits.upper - margin)
    assert list(limits.prismatic) == [False] * 7 + [True]
