"""Colour-target servo baseline: blob back-projection through the robot config's camera, the approach profile's
bounds, convergence of a kinematic loop, and multi-arm behaviour."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from policies_helpers import franka_with_wrist_camera, observation
from vla_ros.core.errors import ConfigError
from vla_ros.core.policies import ObservationError, make_policy
from vla_ros.core.policies.baseline import ColourTargetServo, approach_profile, find_blob
from vla_ros.core.robot import load_robot
from vla_ros.core.types import Observation


Z = 0.02  # the baseline's default target_z: the centre of a 2 cm ball on a table at z = 0


def pixel(policy, robot, target, q=None, size=None) -> tuple[float, float] | None:
    """Where a base-frame point projects in the policy's camera, or None when outside the image (20 px margin)."""
    spec = next(c for c in robot.cameras if c.name == policy.camera_name)
    width, height = size or (spec.width, spec.height)
    origin, rotation = policy.camera.pose_in_base(robot, robot.home if q is None else q)
    uv = policy.camera.project(np.asarray(target, dtype=float), origin, rotation, width, height)
    if uv is None or not (20 <= uv[0] <= width - 20 and 20 <= uv[1] <= height - 20):
        return None
    return uv


def render(policy, robot, targets, q=None, radius=9, colour=(220, 30, 30), size=None) -> np.ndarray:
    """A grey scene with a disc of `colour` drawn where each base-frame target projects in the policy's camera."""
    spec = next(c for c in robot.cameras if c.name == policy.camera_name)
    width, height = size or (spec.width, spec.height)
    image = np.full((height, width, 3), 110, np.uint8)
    for target in targets:
        uv = pixel(policy, robot, target, q, size)
        assert uv is not None, f"test setup: {target} is outside camera {policy.camera_name}'s view"
        u, v = uv
        # continuous pixel coordinates: pixel i covers [i, i + 1), so its centre is i + 0.5
        cv2.circle(image, (int(round(u - 0.5)), int(round(v - 0.5))), radius, colour, -1)
    return image


@settings(max_examples=25)
@given(st.floats(0.0, 0.7), st.floats(-0.35, 0.35))
def test_table_target_is_recovered_from_the_image(franka, x, y):
    policy = make_policy("baseline", robot=franka)
    target = np.array([x, y, Z])
    assume(pixel(policy, franka, target) is not None)
    chunk = policy.infer(observation(franka, {"primary": render(policy, franka, [target])}))
    assert chunk.info["target_visible"] is True
    # half a pixel of rounding at ~1.2 m and a grazing view: a few millimetres on the table
    np.testing.assert_allclose(chunk.info["target_xyz"], target, atol=4e-3)
    np.testing.assert_allclose(chunk.info["goal_xyz"], target + [0, 0, 0.10], atol=4e-3)


def test_largest_blob_wins_and_other_colours_are_ignored(franka):
    policy = make_policy("baseline", robot=franka)
    target, decoy = np.array([0.45, 0.1, Z]), np.array([0.35, -0.2, Z])
    image = render(policy, franka, [target], radius=10)
    u, v = pixel(policy, franka, decoy)
    cv2.circle(image, (int(u), int(v)), 4, (220, 30, 30), -1)  # a smaller red decoy
    cv2.circle(image, (100, 100), 30, (30, 30, 220), -1)  # a large blue disc
    chunk = policy.infer(observation(franka, {"primary": image}))
    np.testing.assert_allclose(chunk.info["target_xyz"], target, atol=4e-3)


def test_image_size_other_than_the_config_keeps_the_field_of_view(franka):
    policy = make_policy("baseline", robot=franka)
    target = np.array([0.35, -0.1, Z])
    image = render(policy, franka, [target], radius=5, size=(320, 240))
    chunk = policy.infer(observation(franka, {"primary": image}))
    np.testing.assert_allclose(chunk.info["target_xyz"], target, atol=8e-3)


def test_wrist_camera_moves_with_the_hand(tmp_path):
    robot = franka_with_wrist_camera(tmp_path)
    policy = ColourTargetServo(robot, camera="wrist")
    q = robot.home.copy()
    q[0] = 0.3  # turn the base: the wrist camera's pose must follow through FK
    target = np.array([0.28, 0.12, Z])
    chunk = policy.infer(observation(robot, {"wrist": render(policy, robot, [target], q=q, radius=6),
                                             "primary": np.zeros((480, 640, 3), np.uint8)}, q=q))
    np.testing.assert_allclose(chunk.info["target_xyz"], target, atol=4e-3)


def test_no_blob_gives_a_zero_motion_chunk_with_the_gripper_open(franka):
    policy = make_policy("baseline", robot=franka)
    chunk = policy.infer(observation(franka, {"primary": np.full((480, 640, 3), 110, np.uint8)}, stamp=3.0))
    assert chunk.info == {"target_visible": False}
    assert chunk.actions.shape == (10, 7) and chunk.stamp == 3.0 and chunk.dt == pytest.approx(0.1)
    np.testing.assert_array_equal(chunk.actions[:, :6], 0.0)
    np.testing.assert_array_equal(chunk.actions[:, 6], 1.0)
    assert policy.metadata.is_baseline and "baseline" in policy.metadata.name
    # blobs below min_area_px do not count
    assert find_blob(render(policy, franka, [[0.3, 0.0, Z]], radius=2), [((0, 120, 70), (10, 255, 255))], 30) is None


def test_profile_respects_speed_and_acceleration_and_stops_at_the_goal():
    dt, vmax, amax = 0.1, 0.15, 0.5
    start, goal = np.zeros(3), np.array([0.3, -0.2, 0.1])
    deltas = approach_profile(start, np.zeros(3), goal, 80, dt, vmax, amax, gain=2.0)
    velocities = np.vstack([np.zeros(3), deltas / dt])
    speeds = np.linalg.norm(velocities, axis=1)
    assert speeds.max() <= vmax + 1e-12 and speeds.max() > 0.99 * vmax
    assert np.linalg.norm(np.diff(velocities, axis=0), axis=1).max() <= amax * dt + 1e-12
    positions = start + np.cumsum(deltas, axis=0)
    distances = np.linalg.norm(goal - positions, axis=1)
    assert np.all(np.diff(distances) <= 1e-12)  # never moves away: no overshoot
    assert distances[-1] < 1e-3
    # starting while moving the wrong way: the measured velocity is braked under the same bound
    moving = approach_profile(start, np.array([-0.1, 0.0, 0.0]), goal, 5, dt, vmax, amax, gain=2.0)
    assert np.linalg.norm(moving[0] / dt - [-0.1, 0.0, 0.0]) <= amax * dt + 1e-12


def _dls_step(robot, q, arm, delta):
    """Apply an EE position delta with damped least squares on the arm joints (the test's stand-in for IK)."""
    jac = robot.frame_jacobian(q, arm.ee_frame_id)[:3][:, arm.index]
    dq = jac.T @ np.linalg.solve(jac @ jac.T + 1e-6 * np.eye(3), delta)
    q = q.copy()
    q[arm.index] += dq
    return q


def test_kinematic_loop_converges_above_the_target(franka):
    policy = make_policy("baseline", robot=franka)
    arm = franka.arm("arm")
    target = np.array([0.45, -0.2, Z])
    image = render(policy, franka, [target])
    goal = target + [0.0, 0.0, 0.10]
    q, dq = franka.home.copy(), np.zeros(franka.nq)
    for i in range(30):
        chunk = policy.infer(observation(franka, {"primary": image}, q=q, dq=dq, stamp=i))
        assert np.all(np.linalg.norm(chunk.actions[:, :3], axis=1) <= policy.max_speed * chunk.dt + 1e-9)
        for action in chunk.actions[:5]:  # execute half the chunk, then replan (receding horizon)
            q_next = _dls_step(franka, q, arm, action[:3])
            dq, q = (q_next - q) / chunk.dt, q_next
    reached = franka.fk(q, arm.ee_frame).translation
    assert np.linalg.norm(reached - goal) < 0.02


def test_aloha_drives_one_arm_and_holds_the_other():
    aloha = load_robot("aloha")
    policy = make_policy({"backend": "colour_target_baseline", "name": "servo_baseline", "arm": "right",
                          "camera": "cam_high"}, robot=aloha)
    q = aloha.home.copy()
    left_gripper = aloha.arm("left").gripper
    q[left_gripper.index] = left_gripper.to_joint(0.25)
    target = np.array([0.2, 0.45, Z])
    chunk_images = {"cam_high": render(policy, aloha, [target], q=q)}
    chunk = policy.infer(observation(aloha, chunk_images, q=q))
    assert chunk.actions.shape == (10, 14) and chunk.space.arms == ("left", "right")
    np.testing.assert_array_equal(chunk.actions[:, :6], 0.0)  # left arm holds still
    np.testing.assert_allclose(chunk.actions[:, 6], 0.25)  # at its measured opening
    assert np.linalg.norm(chunk.actions[-1, 7:10]) > 0  # right arm moves
    np.testing.assert_array_equal(chunk.actions[:, 13], 1.0)
    np.testing.assert_allclose(chunk.info["target_xyz"], target, atol=5e-3)
    # the held gripper's reading is needed (a default would open it); a held arm's joints are not
    positions = dict(zip(aloha.joint_names, q))
    del positions["follower_left/waist"]
    policy.infer(Observation(chunk_images, positions, "", 0.0))
    del positions["follower_left/left_finger"]
    with pytest.raises(ObservationError, match="no position for joint 'follower_left/left_finger'"):
        policy.infer(Observation(chunk_images, positions, "", 0.0))


@pytest.mark.parametrize("robot_name", ["franka", "widowx", "ur5", "aloha"])
def test_target_found_in_the_simulator_render(robot_name):
    """End to end with the MuJoCo scene the demo uses: its camera conventions must be the baseline's."""
    from vla_ros.core.sim.scene import SimRenderError, SimScene

    robot = load_robot(robot_name)
    with SimScene(robot, seed=0) as scene:
        target = scene.target_position()
        policy = make_policy({"backend": "colour_target_baseline", "arm": scene.target_arm,
                              "target_z": float(target[2])}, robot=robot)
        try:
            image = scene.render(policy.camera_name)
        except SimRenderError as exc:
            pytest.skip(str(exc))
    chunk = policy.infer(observation(robot, {policy.camera_name: image}))
    np.testing.assert_allclose(chunk.info["target_xyz"], target, atol=5e-3)
    moving = {arm: np.linalg.norm(motion[:3]) > 0 for arm, motion, _ in chunk.space.split(chunk.actions[-1])}
    assert moving == {arm.name: arm.name == scene.target_arm for arm in robot.arms}


@pytest.mark.parametrize("robot_name", ["franka", "aloha"])
def test_closed_loop_in_the_simulator_reaches_above_the_target(robot_name):
    """Render, infer, apply the chunk's first half with a DLS step, re-render: the EE ends above the target."""
    from vla_ros.core.sim.scene import SimRenderError, SimScene

    robot = load_robot(robot_name)
    with SimScene(robot, seed=1) as scene:
        target = scene.target_position()
        policy = make_policy({"backend": "colour_target_baseline", "arm": scene.target_arm,
                              "target_z": float(target[2])}, robot=robot)
        arm = robot.arm(scene.target_arm)
        q, dq = robot.home.copy(), np.zeros(robot.nq)
        for i in range(25):
            scene.set_joint_positions(q)
            try:
                image = scene.render(policy.camera_name)
            except SimRenderError as exc:
                pytest.skip(str(exc))
            chunk = policy.infer(observation(robot, {policy.camera_name: image}, q=q, dq=dq, stamp=i))
            assert chunk.info["target_visible"], f"target lost at step {i}"
            for action in chunk.actions[:5]:
                motion = next(m for name, m, _ in chunk.space.split(action) if name == arm.name)
                q_next = np.clip(_dls_step(robot, q, arm, motion[:3]), robot.limits.lower, robot.limits.upper)
                dq, q = (q_next - q) / chunk.dt, q_next
    goal = np.clip(target + [0.0, 0.0, 0.10], arm.workspace_min, arm.workspace_max)
    assert np.linalg.norm(robot.fk(q, arm.ee_frame).translation - goal) < 0.01


def test_config_errors(franka):
    with pytest.raises(ConfigError, match="needs the robot model"):
        make_policy("baseline")
    with pytest.raises(ConfigError, match="name must say 'baseline'"):
        make_policy({"backend": "colour_target_baseline", "name": "colour_vla"}, robot=franka)
    with pytest.raises(ConfigError, match="camera: robot franka has no camera 'wrist'"):
        make_policy({"backend": "colour_target_baseline", "camera": "wrist"}, robot=franka)
    with pytest.raises(ConfigError, match=r"hsv_ranges\[0\]: expected \[\[h, s, v\], \[h, s, v\]\]"):
        make_policy({"backend": "colour_target_baseline", "hsv_ranges": [[[200, 0, 0], [10, 255, 255]]]},
                    robot=franka)
