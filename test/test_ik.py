"""Differential IK (vla_ros.core.ik): command semantics, limits, windup, singularities, multi-arm, absolute solves."""

from __future__ import annotations

import math

import numpy as np
import pinocchio as pin
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robot_helpers import dh_config, dh_urdf, write_dh_robot
from vla_ros.core.errors import ConfigError
from vla_ros.core.ik import DifferentialIK, EECommand, IKConfig, ee_commands_from_action
from vla_ros.core.robot import builtin_robot_names, load_robot
from vla_ros.core.rotations import to_matrix
from vla_ros.core.types import ActionSpace, BadChunkError, GripperConvention

BUILTINS = ("franka", "widowx", "ur5", "aloha")
_robots = {}


def robot(name):
    if name not in _robots:
        _robots[name] = load_robot(name)
    return _robots[name]


def delta(translation=(0.0, 0.0, 0.0), rpy=(0.0, 0.0, 0.0), frame="base", gripper=None) -> EECommand:
    return EECommand("delta", np.array(translation, float), to_matrix("rpy", rpy), frame, gripper)


def pose_error(model, q, arm, target: pin.SE3) -> tuple[float, float]:
    offset = model.fk(q, arm.ee_frame_id).actInv(target)
    return float(np.linalg.norm(offset.translation)), float(np.linalg.norm(pin.log3(offset.rotation)))


def run(ik, q, commands, dt, ticks):
    """Perfect tracking: each tick's joint target becomes the next measured state."""
    result = None
    for _ in range(ticks):
        result = ik.step(q, commands, dt)
        q = result.q_target
    return q, result


# --- action -> commands --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form, rotation", [
    ("rpy", [0.1, -0.2, 0.3]),
    ("axis_angle", pin.log3(to_matrix("rpy", [0.1, -0.2, 0.3]))),
    ("quat", pin.Quaternion(to_matrix("rpy", [0.1, -0.2, 0.3])).coeffs()),
])
def test_every_rotation_form_gives_the_same_command(form, rotation):
    space = ActionSpace("ee_delta", arms=("left", "right"), rotation=form)
    left = np.concatenate(([0.01, 0.02, 0.03], rotation, [1.0]))
    right = np.concatenate(([0.0, 0.0, -0.01], np.zeros(3) if form != "quat" else [0, 0, 0, 1], [0.0]))
    commands = ee_commands_from_action(space, np.concatenate((left, right)), ["left", "right"])
    assert commands["left"].kind == "delta" and commands["left"].frame == "base"
    np.testing.assert_allclose(commands["left"].translation, [0.01, 0.02, 0.03])
    np.testing.assert_allclose(commands["left"].rotation, to_matrix("rpy", [0.1, -0.2, 0.3]), atol=1e-12)
    np.testing.assert_allclose(commands["right"].rotation, np.eye(3), atol=1e-12)
    assert commands["left"].gripper == 1.0 and commands["right"].gripper == 0.0


def test_pose_actions_become_pose_commands_and_no_gripper_column_means_hold():
    space = ActionSpace("ee_pose", rotation="rpy", gripper=None)
    command = ee_commands_from_action(space, np.array([0.4, 0.0, 0.3, np.pi, 0.0, 0.0]), ["arm"])["arm"]
    assert command.kind == "pose" and command.gripper is None


@pytest.mark.parametrize("space, action, error, match", [
    (ActionSpace("joint_pos", joints_per_arm=(7,)), np.zeros(8), ConfigError, "joint-space"),
    (ActionSpace("ee_delta", arms=("left",)), np.zeros(7), ConfigError, "not an arm of the robot"),
    (ActionSpace("ee_delta"), np.zeros(6), BadChunkError, "expected shape"),
    (ActionSpace("ee_delta"), np.array([0, 0, np.nan, 0, 0, 0, 1.0]), BadChunkError, "non-finite"),
    (ActionSpace("ee_delta", rotation="quat"), np.zeros(8), BadChunkError, "near-zero norm"),
])
def test_bad_actions_are_rejected_with_a_reason(space, action, error, match):
    with pytest.raises(error, match=match):
        ee_commands_from_action(space, action, ["arm"])


def test_commands_made_from_actions_equal_checked_commands():
    """ee_commands_from_action skips re-checking what it already checked; the commands are the constructor's."""
    action = np.array([0.01, -0.02, 0.03, 0.1, -0.2, 0.3, 0.7])
    made = ee_commands_from_action(ActionSpace("ee_delta"), action, ["arm"])["arm"]
    checked = EECommand("delta", action[:3], to_matrix("rpy", action[3:6]), "base", 0.7)
    assert (made.kind, made.frame, made.gripper) == (checked.kind, checked.frame, checked.gripper)
    np.testing.assert_array_equal(made.translation, checked.translation)
    np.testing.assert_array_equal(made.rotation, checked.rotation)
    with pytest.raises(ValueError, match="base frame"):  # still refused
        ee_commands_from_action(ActionSpace("ee_pose", frame="ee"), np.zeros(7), ["arm"])


def test_ee_command_rejects_non_rotations_and_ee_frame_poses():
    with pytest.raises(ValueError, match="not a rotation"):
        EECommand("delta", np.zeros(3), np.diag([1.0, 1.0, -1.0]))
    with pytest.raises(ValueError, match="base frame"):
        EECommand("pose", np.zeros(3), np.eye(3), frame="ee")
    with pytest.raises(ValueError, match="opening"):
        EECommand("delta", np.zeros(3), np.eye(3), gripper=1.5)


@pytest.mark.parametrize("convention, value, expected", [
    (GripperConvention(open=1.0, closed=0.0), 1.0, "open"),  # Bridge / OpenVLA / ALOHA
    (GripperConvention(open=1.0, closed=0.0), 0.0, "closed"),
    (GripperConvention(open=0.0, closed=1.0), 1.0, "closed"),  # DROID gripper_position
    (GripperConvention(open=0.0, closed=1.0), 0.0, "open"),
])
def test_gripper_conventions_map_to_the_joint_range(convention, value, expected):
    model = robot("widowx")
    arm = model.arms[0]
    space = ActionSpace("ee_delta", gripper=convention)
    ik = DifferentialIK(model)
    q = model.home.copy()
    q[arm.gripper.index] = 0.5 * (arm.gripper.open + arm.gripper.closed)
    ik.reset(q)
    commands = ee_commands_from_action(space, np.r_[np.zeros(6), value], ["arm"])
    dt, bound = 0.02, model.limits.velocity[arm.gripper.index] * 0.02
    first = ik.step(q, commands, dt).q_target[arm.gripper.index]
    assert abs(first - q[arm.gripper.index]) <= bound + 1e-12  # rate-limited, no jump
    q, _ = run(ik, q, commands, dt, 50)
    assert q[arm.gripper.index] == pytest.approx(getattr(arm.gripper, expected))


def test_gripper_target_keeps_closing_while_the_fingers_are_blocked():
    model = robot("franka")
    arm = model.arms[0]
    ik = DifferentialIK(model)
    q = model.home.copy()  # fingers open
    ik.reset(q)
    for _ in range(30):  # the measured fingers never move: an object is in the way
        target = ik.step(q, {"arm": delta(gripper=0.0)}, 0.02).q_target
    assert target[arm.gripper.index] == pytest.approx(arm.gripper.closed)


# --- streaming target semantics ------------------------------------------------------------------------------------


def test_base_frame_delta_translates_in_base_axes_and_rotates_about_the_ee_position():
    model = robot("franka")
    ik = DifferentialIK(model)
    ik.reset(model.home)
    start = ik.targets["arm"]
    assert not np.allclose(start.rotation, np.eye(3))  # the hand points down: frames differ
    rotation = to_matrix("rpy", [0.0, 0.0, 0.2])
    ik.step(model.home, {"arm": EECommand("delta", np.array([0.01, 0.0, 0.0]), rotation, "base")}, 0.02)
    target = ik.targets["arm"]
    np.testing.assert_allclose(target.translation, start.translation + [0.01, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(target.rotation, rotation @ start.rotation, atol=1e-12)


def test_ee_frame_delta_acts_in_the_targets_own_axes():
    model = robot("franka")
    ik = DifferentialIK(model)
    ik.reset(model.home)
    start = ik.targets["arm"]
    rotation = to_matrix("rpy", [0.0, 0.0, 0.2])
    ik.step(model.home, {"arm": EECommand("delta", np.array([0.01, 0.0, 0.02]), rotation, "ee")}, 0.02)
    target = ik.targets["arm"]
    np.testing.assert_allclose(target.translation, start.translation + start.rotation @ [0.01, 0.0, 0.02], atol=1e-12)
    np.testing.assert_allclose(target.rotation, start.rotation @ rotation, atol=1e-12)
    # z of the hand points down on the Panda at home: +2 cm along it is 2 cm lower in the base frame
    assert target.translation[2] == pytest.approx(start.translation[2] - 0.02)


def test_bridge_deltas_compose_on_the_previous_target_not_the_measured_pose():
    model = robot("widowx")
    ik = DifferentialIK(model)
    q = model.home.copy()
    ik.reset(q)
    start = ik.targets["arm"]
    step = delta([0.02, 0.0, 0.0], [0.0, 0.0, 0.1])
    lagging = q.copy()
    for _ in range(3):  # the measured state lags far behind: the arm has not moved at all
        ik.step(lagging, {"arm": step}, 0.2)
    target = ik.targets["arm"]
    np.testing.assert_allclose(target.translation, start.translation + [0.06, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(target.rotation, to_matrix("rpy", [0.0, 0.0, 0.3]) @ start.rotation, atol=1e-12)
    # Deltas that sum to zero bring the target back exactly, whatever the tracking error was.
    for _ in range(3):
        ik.step(lagging + 0.01, {"arm": delta([-0.02, 0.0, 0.0], [0.0, 0.0, -0.1])}, 0.2)
    np.testing.assert_allclose(ik.targets["arm"].homogeneous, start.homogeneous, atol=1e-12)


@pytest.mark.parametrize("name", BUILTINS)
def test_streamed_pose_is_tracked_to_tolerance(name):
    model = robot(name)
    arm = model.arms[-1]
    rng = np.random.default_rng(3)
    ik = DifferentialIK(model)
    q = model.home.copy()
    ik.reset(q)
    # a nearby reachable pose: from a small joint-space move away from home
    goal_q = model.home.copy()
    goal_q[arm.index] += rng.uniform(-0.2, 0.2, arm.index.size)
    goal = model.fk(goal_q, arm.ee_frame_id)
    command = {arm.name: EECommand("pose", goal.translation, goal.rotation)}
    q, result = run(ik, q, command, 1.0 / model.control_rate_hz, 200)
    status = result.arms[arm.name]
    assert status.reached and not status.unreachable, status
    assert pose_error(model, q, arm, goal)[0] <= 1e-3


def test_far_pose_is_approached_at_the_ee_speed_limit_in_a_straight_line():
    model = robot("franka")
    arm = model.arms[0]
    ik = DifferentialIK(model)
    q = model.home.copy()
    ik.reset(q)
    start = model.fk(q, arm.ee_frame_id)
    goal = pin.SE3(start.rotation, start.translation + np.array([0.0, 0.25, -0.1]))
    dt = 0.02
    positions = [start.translation]
    for _ in range(40):
        q = ik.step(q, {"arm": EECommand("pose", goal.translation, goal.rotation)}, dt).q_target
        positions.append(model.fk(q, arm.ee_frame_id).translation)
    steps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
    assert steps.max() <= arm.max_ee_linear_speed * dt * 1.05
    direction = (goal.translation - start.translation) / np.linalg.norm(goal.translation - start.translation)
    offsets = np.array(positions) - start.translation
    off_line = np.linalg.norm(offsets - np.outer(offsets @ direction, direction), axis=1)
    assert off_line.max() < 0.005


# --- limits, windup, singularities ---------------------------------------------------------------------------------

huge = st.floats(-5.0, 5.0, allow_nan=False)
commands_strategy = st.fixed_dictionaries({
    "kind": st.sampled_from(["delta", "pose"]),
    "frame": st.sampled_from(["base", "ee"]),
    "translation": st.lists(huge, min_size=3, max_size=3),
    "rpy": st.lists(st.floats(-math.pi, math.pi), min_size=3, max_size=3),
    "gripper": st.none() | st.floats(0.0, 1.0),
})


def make_command(spec) -> EECommand:
    frame = "base" if spec["kind"] == "pose" else spec["frame"]
    return EECommand(spec["kind"], np.array(spec["translation"]), to_matrix("rpy", spec["rpy"]), frame, spec["gripper"])


@settings(max_examples=40)
@given(
    name=st.sampled_from(["franka", "aloha"]),
    start=st.lists(st.floats(0.0, 1.0), min_size=14, max_size=14),
    sequence=st.lists(st.dictionaries(st.sampled_from(["arm", "left", "right"]), commands_strategy, max_size=2),
                      min_size=1, max_size=6),
    dt=st.floats(0.001, 0.2),
)
def test_joint_targets_stay_in_limits_and_never_jump(name, start, sequence, dt):
    model = robot(name)
    lower, upper, velocity = model.limits.lower, model.limits.upper, model.limits.velocity
    q = np.clip(lower + np.array(start[: model.nq]) * (upper - lower), lower, upper)
    ik = DifferentialIK(model)
    ik.reset(q)
    arm_joints = np.concatenate([arm.index for arm in model.arms])
    gripper_joints = np.array([arm.gripper.index for arm in model.arms])
    previous = q.copy()
    for commands in sequence:
        commands = {arm: make_command(spec) for arm, spec in commands.items() if arm in {a.name for a in model.arms}}
        result = ik.step(q, commands, dt)
        target = result.q_target
        assert np.all(np.isfinite(target))
        assert np.all(target >= lower) and np.all(target <= upper)
        bound = velocity * dt * (1 + 1e-9) + 1e-15
        assert np.all(np.abs(target - q)[arm_joints] <= bound[arm_joints])
        assert np.all(np.abs(target - previous)[gripper_joints] <= bound[gripper_joints])  # from the last target
        for status in result.arms.values():
            assert math.isfinite(status.position_error) and math.isfinite(status.rotation_error)
        previous = target
        q = target  # perfect tracking


def test_measured_state_outside_the_limits_is_walked_back_without_a_jump():
    model = robot("franka")
    ik = DifferentialIK(model)
    q = np.zeros(model.nq)  # joint 4 = 0 is above its upper limit -0.0698
    ik.reset(q)
    dt = 0.01
    result = ik.step(q, {}, dt)
    step = result.q_target - q
    assert np.all(np.abs(step) <= model.limits.velocity * dt + 1e-15)
    assert result.q_target[3] < q[3]  # toward the range
    q, _ = run(ik, q, {}, dt, 20)
    assert model.limits.lower[3] <= q[3] <= model.limits.upper[3]


def test_delta_targets_do_not_wind_up_beyond_reach():
    model = robot("franka")
    arm = model.arms[0]
    cfg = IKConfig()
    ik = DifferentialIK(model, cfg)
    q = model.home.copy()
    ik.reset(q)
    dt = 0.02
    for _ in range(150):  # +5 cm per tick straight out: far past the 0.855 m reach
        result = ik.step(q, {"arm": delta([0.05, 0.0, 0.0])}, dt)
        q = result.q_target
        lead = model.fk(q, arm.ee_frame_id).actInv(ik.targets["arm"])
        assert np.linalg.norm(lead.translation) <= cfg.max_target_lead_linear + 1e-9
    status = result.arms["arm"]
    assert status.target_clamped and status.unreachable and not status.reached
    # Reversing bites as soon as the bounded lead is used up, not after unwinding 150 ticks of deltas (7.5 m).
    x_before = model.fk(q, arm.ee_frame_id).translation[0]
    ticks = math.ceil(cfg.max_target_lead_linear / 0.02) + 8  # + the slow start out of the stretched pose
    q, _ = run(ik, q, {"arm": delta([-0.02, 0.0, 0.0])}, dt, ticks)
    assert model.fk(q, arm.ee_frame_id).translation[0] < x_before - 0.005


def test_unreachable_pose_gets_best_effort_motion_and_a_flag():
    model = robot("widowx")
    arm = model.arms[0]
    ik = DifferentialIK(model)
    q = model.home.copy()
    ik.reset(q)
    far = pin.SE3(np.eye(3), np.array([2.0, 0.0, 0.3]))
    dt = 0.02
    distances = []
    for _ in range(200):
        result = ik.step(q, {"arm": EECommand("pose", far.translation, far.rotation)}, dt)
        assert np.all(np.abs(result.q_target - q) <= model.limits.velocity * dt + 1e-15)
        q = result.q_target
        distances.append(np.linalg.norm(model.fk(q, arm.ee_frame_id).translation - far.translation))
    assert distances[-1] < distances[0] - 0.1  # it did move toward the target
    assert result.arms["arm"].unreachable and not result.arms["arm"].reached


def test_wrist_singularity_is_damped_not_amplified():
    model = robot("ur5")
    ik = DifferentialIK(model)
    q = np.array([0.0, -1.2, 1.2, -1.5, 0.0, 0.0])  # wrist_2 = 0: wrist_1 and wrist_3 axes aligned
    ik.reset(q)
    dt = 0.002  # UR5e servo rate: a small joint-step bound makes amplification visible as limiting
    result = ik.step(q, {"arm": delta([0.0, 0.001, 0.0], [0.002, 0.0, 0.0])}, dt)
    status = result.arms["arm"]
    assert status.near_singular
    step = result.q_target - q
    assert np.all(np.isfinite(step)) and np.all(np.abs(step) <= model.limits.velocity * dt + 1e-15)
    # Without damping a 1 mm / 2 mrad request would need rad-scale joint motion along the singular direction.
    assert np.abs(step).max() < 0.05
    q, result = run(ik, q, {}, dt, 200)  # keep tracking: it must settle, not oscillate or blow up
    assert np.all(np.isfinite(q)) and result.arms["arm"].position_error < 0.002


# --- multi-arm -----------------------------------------------------------------------------------------------------


def test_aloha_arms_are_independent():
    model = robot("aloha")
    left, right = model.arm("left"), model.arm("right")
    ik_commanded, ik_idle = DifferentialIK(model), DifferentialIK(model)
    q = model.home.copy()
    q[right.index] += 0.1
    ik_commanded.reset(q)
    ik_idle.reset(q)
    commanded = ik_commanded.step(q, {"left": delta([0.0, 0.01, 0.01], [0.05, 0.0, 0.0], gripper=0.0)}, 0.02)
    idle = ik_idle.step(q, {}, 0.02)
    np.testing.assert_array_equal(commanded.q_target[right.index], idle.q_target[right.index])
    np.testing.assert_allclose(commanded.q_target[right.index], q[right.index], atol=1e-9)
    assert commanded.q_target[right.gripper.index] == q[right.gripper.index]
    assert np.abs(commanded.q_target[left.index] - q[left.index]).max() > 1e-3
    solved = DifferentialIK(model).solve(q, {"left": model.fk(model.home, left.ee_frame_id)})
    np.testing.assert_array_equal(solved.q_target[right.index], q[right.index])
    assert set(solved.arms) == {"left"} and solved.reached


# --- absolute solves -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", builtin_robot_names())  # every shipped robot, including ones added later
def test_solve_reaches_random_reachable_targets(name):
    model = robot(name)
    rng = np.random.default_rng(7)
    ik = DifferentialIK(model)
    for goal, start in zip(model.random_configurations(15, rng), model.random_configurations(15, rng)):
        targets = {arm.name: model.fk(goal, arm.ee_frame_id) for arm in model.arms}
        result = ik.solve(start, targets)
        assert result.reached, result.arms
        assert np.all(result.q_target >= model.limits.lower) and np.all(result.q_target <= model.limits.upper)
        for arm in model.arms:
            position, rotation = pose_error(model, result.q_target, arm, targets[arm.name])
            assert position <= 1e-3 and rotation <= 1e-2
            assert result.arms[arm.name].position_error == pytest.approx(position, abs=1e-12)


def test_solve_is_deterministic_and_honours_tolerances():
    model = robot("franka")
    arm = model.arms[0]
    rng = np.random.default_rng(11)
    goal, start = model.random_configurations(2, rng)
    target = {"arm": model.fk(goal, arm.ee_frame_id)}
    first = DifferentialIK(model).solve(start, target, position_tolerance=1e-6, rotation_tolerance=1e-6)
    second = DifferentialIK(model).solve(start, target, position_tolerance=1e-6, rotation_tolerance=1e-6)
    np.testing.assert_array_equal(first.q_target, second.q_target)
    assert first.reached and first.arms["arm"].position_error <= 1e-6 and first.arms["arm"].rotation_error <= 1e-6


def test_solve_of_an_unreachable_target_is_best_effort_inside_limits():
    model = robot("ur5")
    result = DifferentialIK(model, IKConfig(max_iterations=100)).solve(
        model.home, {"arm": pin.SE3(np.eye(3), np.array([3.0, 0.0, 0.5]))})
    status = result.arms["arm"]
    assert not result.reached and status.unreachable and result.iterations <= 100
    assert np.all(result.q_target >= model.limits.lower) and np.all(result.q_target <= model.limits.upper)
    assert 2.0 < status.position_error < 2.5  # stretched toward it: 3 m away, 0.85 m reach


def test_targets_are_in_the_base_frame_when_it_is_not_the_urdf_root(tmp_path):
    # The DH robot mounted on a root link "floor", offset and turned: base_frame stays the mount plate.
    urdf = dh_urdf().replace(
        "<robot name=\"dh_six\">",
        "<robot name=\"dh_six\">\n  <link name=\"floor\"/>\n  <joint name=\"floor_mount\" type=\"fixed\">"
        "<parent link=\"floor\"/><child link=\"mount_plate\"/><origin xyz=\"0.3 -0.2 0.1\" rpy=\"0.2 0 0.7\"/></joint>",
    )
    model = load_robot(write_dh_robot(tmp_path, dh_config(), urdf))
    arm = model.arms[0]
    rng = np.random.default_rng(5)
    goal, start = model.random_configurations(2, rng)
    target = model.fk(goal, arm.ee_frame_id)  # base frame
    ik = DifferentialIK(model)
    result = ik.solve(start, {arm.name: target})
    assert result.reached and pose_error(model, result.q_target, arm, target)[0] <= 1e-3
    ik.reset(model.home)
    before = model.fk(model.home, arm.ee_frame_id).translation
    q, _ = run(ik, model.home.copy(), {arm.name: delta([0.0, 0.0, 0.02])}, 0.01, 1)
    q, _ = run(ik, q, {}, 0.01, 50)
    np.testing.assert_allclose(model.fk(q, arm.ee_frame_id).translation - before, [0.0, 0.0, 0.02], atol=1e-4)


# --- misuse --------------------------------------------------------------------------------------------------------


def test_misuse_is_reported_clearly():
    model = robot("ur5")
    ik = DifferentialIK(model)
    with pytest.raises(RuntimeError, match="reset"):
        ik.step(model.home, {}, 0.01)
    with pytest.raises(ValueError, match=r"expected shape \(6,\)"):
        ik.reset(np.zeros(5))
    ik.reset(model.home)
    with pytest.raises(ValueError, match="no arm named 'left'"):
        ik.step(model.home, {"left": delta()}, 0.01)
    with pytest.raises(ValueError, match="has no gripper"):
        ik.step(model.home, {"arm": delta(gripper=1.0)}, 0.01)
    with pytest.raises(ValueError, match="non-finite value for joint 'elbow_joint'"):
        ik.step(np.array([0, 0, np.nan, 0, 0, 0.0]), {}, 0.01)
    with pytest.raises(ValueError, match="dt must be > 0"):
        ik.step(model.home, {}, 0.0)
    with pytest.raises(ValueError, match="max_iterations must be >= 1"):
        ik.solve(model.home, {"arm": ik.targets["arm"]}, max_iterations=0)
    with pytest.raises(ValueError, match="velocity_scale"):
        IKConfig(velocity_scale=0.0)


def test_a_users_own_robot_works_without_code(tmp_path):
    model = load_robot(write_dh_robot(tmp_path))  # arm "main", frames and joints unlike any built-in
    rng = np.random.default_rng(2)
    goal, start = model.random_configurations(2, rng)
    assert DifferentialIK(model).solve(start, {"main": model.fk(goal, "flange_tool")}).reached


def test_steps_follow_the_previous_command_of_a_lagging_arm_and_reanchor_when_it_diverges():
    model = robot("franka")
    arm = model.arms[0]
    cfg = IKConfig()
    ik = DifferentialIK(model, cfg)
    q = model.home.copy()
    ik.reset(q)
    dt = 0.02
    commanded = q.copy()
    for _ in range(10):  # the arm never moves (a huge lag): commands still advance at the requested 0.1 m/s
        commanded = ik.step(q, {"arm": delta([0.002, 0.0, 0.0])}, dt).q_target
    moved = model.fk(commanded, arm.ee_frame_id).translation[0] - model.fk(q, arm.ee_frame_id).translation[0]
    assert moved == pytest.approx(0.02, abs=1e-3)
    # Once the measured arm is further than max_command_divergence from the command, steps restart from it.
    far = q.copy()
    far[arm.index[0]] += cfg.max_command_divergence + 0.05
    result = ik.step(far, {}, dt)
    assert np.all(np.abs(result.q_target - far)[arm.index] <= model.limits.velocity[arm.index] * dt + 1e-12)
