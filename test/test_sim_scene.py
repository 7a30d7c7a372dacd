"""SimScene: every robot builds and renders its cameras, the camera model matches the configs' pinhole convention,
joints map by name onto the MuJoCo model, and the random target is reachable and in view."""

import xml.etree.ElementTree as ET

import numpy as np
import pinocchio as pin
import pytest
import yaml

from vla_ros.core.sim.scene import SimScene  # first: selects EGL before anything else imports mujoco
from vla_ros.core.errors import ConfigError
from vla_ros.core.robot import load_robot
from vla_ros.core.sim.placement import WORKSPACE_MARGIN, solve_position

ROBOTS = ["franka", "widowx", "ur5", "aloha"]


@pytest.fixture(scope="module")
def scenes():
    built = {}

    def get(name: str, **kwargs) -> SimScene:
        key = (name, tuple(sorted(kwargs.items())))
        if key not in built:
            built[key] = SimScene(load_robot(name), **kwargs)
        return built[key]

    yield get
    for scene in built.values():
        scene.close()


def optical_pose(robot, q, camera) -> pin.SE3:
    """The camera's optical frame in the base frame straight from the config: parent link FK * (xyz, rpy)."""
    parent, xyz, rpy = camera.pose
    return robot.fk(q, parent) * pin.SE3(pin.rpy.rpyToMatrix(*rpy), np.array(xyz))


def pinhole(robot, q, camera, point) -> np.ndarray:
    """Pixel (u right, v down, continuous) of a base-frame point: centred principal point, square pixels."""
    local = optical_pose(robot, q, camera).actInv(point)
    focal = camera.height / 2 / np.tan(np.radians(camera.fov_y_deg) / 2)
    return np.array([camera.width / 2 + focal * local[0] / local[2], camera.height / 2 + focal * local[1] / local[2]])


def red_mask(image: np.ndarray) -> np.ndarray:
    """Saturated red pixels, including the target's shaded side."""
    r, g, b = (image[..., i].astype(int) for i in range(3))
    return (r > 30) & (r > 2.5 * g) & (r > 2.5 * b)


def primary(robot):
    """The first camera fixed to the base (the one the colour-servo baseline uses)."""
    return next(c for c in robot.cameras if robot.model.frames[robot.frame_id(c.pose[0])].parentJoint == 0)


@pytest.mark.parametrize("name", ROBOTS)
def test_every_configured_camera_renders(scenes, name):
    scene = scenes(name)
    assert scene.camera_names == tuple(c.name for c in scene.robot.cameras)
    for camera in scene.robot.cameras:
        image = scene.render(camera.name)
        assert image.shape == (camera.height, camera.width, 3) and image.dtype == np.uint8
        assert image.std() > 10, f"{name} {camera.name}: image is (nearly) uniform"
    assert scene.render(scene.camera_names[0], 224, 224).shape == (224, 224, 3)


@pytest.mark.parametrize("name", ROBOTS)
def test_target_is_red_where_the_config_camera_model_projects_it(scenes, name):
    scene = scenes(name)
    robot, camera = scene.robot, primary(scene.robot)
    target = scene.target_position()
    image = scene.render(camera.name)
    u, v = pinhole(robot, robot.home, camera, target)
    mask = red_mask(image)
    assert mask[int(v), int(u)], f"{name}: no red at the target's projection ({u:.1f}, {v:.1f})"
    rows, cols = np.nonzero(mask)
    # Centroid of the red pixels (pixel centres at +0.5) on the projected centre; area = the projected disc.
    assert np.hypot(cols.mean() + 0.5 - u, rows.mean() + 0.5 - v) < 0.5
    depth = optical_pose(robot, robot.home, camera).actInv(target)[2]
    radius_px = camera.height / 2 / np.tan(np.radians(camera.fov_y_deg) / 2) * scene.target_radius / depth
    assert 0.85 < mask.sum() / (np.pi * radius_px**2) < 1.15


@pytest.mark.parametrize("name", ROBOTS)
def test_camera_poses_follow_the_parent_links(scenes, name):
    scene = scenes(name)
    robot = scene.robot
    for q in robot.random_configurations(3, np.random.default_rng(4)):
        scene.set_joint_positions(q)
        for camera in robot.cameras:
            expected = optical_pose(robot, q, camera)
            actual = scene.camera_pose(camera.name)
            np.testing.assert_allclose(actual.translation, expected.translation, atol=1e-6)
            np.testing.assert_allclose(actual.rotation, expected.rotation, atol=1e-6)
            point = expected.act(np.array([0.05, -0.03, 0.5]))  # in front of the camera
            np.testing.assert_allclose(scene.project(camera.name, point), pinhole(robot, q, camera, point), atol=1e-6)
    scene.set_joint_positions(robot.home)


def test_wrist_cameras_move_with_their_arm(scenes):
    scene = scenes("aloha")
    robot = scene.robot
    before = scene.render("cam_left_wrist")
    q = robot.home.copy()
    q[robot.arm("left").index[0]] += 0.5  # left waist
    scene.set_joint_positions(q)
    moved = scene.render("cam_left_wrist")
    right_pose = scene.camera_pose("cam_right_wrist")
    scene.set_joint_positions(robot.home)
    assert np.abs(moved.astype(int) - before).mean() > 5
    assert right_pose.isApprox(scene.camera_pose("cam_right_wrist"), 1e-12)


def _non_mimic_links(scene):
    """MuJoCo bodies that are URDF links placed only by commanded joints (not below a mimic / locked joint)."""
    model, robot = scene.model, scene.robot
    links = []
    for body in range(1, model.nbody):
        chain, ok = body, True
        while chain:
            for j in range(model.body_jntadr[chain], model.body_jntadr[chain] + model.body_jntnum[chain]):
                ok &= model.joint(j).name in robot.joint_names
            chain = model.body_parentid[chain]
        name = model.body(body).name
        if ok and robot.model.existFrame(name, pin.FrameType.BODY):
            links.append(name)
    return links


@pytest.mark.parametrize("name", ROBOTS)
def test_joints_map_by_name_so_every_link_matches_fk(scenes, name):
    scene = scenes(name)
    robot = scene.robot
    links = _non_mimic_links(scene)
    assert all(arm.ee_frame in links for arm in robot.arms)
    for q in robot.random_configurations(4, np.random.default_rng(9)):
        scene.set_joint_positions(q)
        for link in links:
            expected, actual = robot.fk(q, link), scene.link_pose(link)
            np.testing.assert_allclose(actual.translation, expected.translation, atol=1e-6, err_msg=link)
            np.testing.assert_allclose(actual.rotation, expected.rotation, atol=1e-6, err_msg=link)
    # One joint at a time: only the links below it move.
    scene.set_joint_positions(robot.home)
    rest = {link: scene.link_pose(link).translation for link in links}
    for i, joint in enumerate(robot.joint_names):
        q = robot.home.copy()
        q[i] += 0.01 if q[i] + 0.01 <= robot.limits.upper[i] else -0.01
        scene.set_joint_positions(q)
        moved = {link for link in links if not np.allclose(scene.link_pose(link).translation, rest[link], atol=1e-9)}
        expected = {link for link in links if not np.allclose(robot.fk(q, link).translation, rest[link], atol=1e-9)}
        assert moved == expected, joint
    scene.set_joint_positions(robot.home)


@pytest.mark.parametrize("name", ["franka", "widowx", "aloha"])
def test_mimic_fingers_follow_the_commanded_finger(scenes, name):
    scene = scenes(name)
    robot = scene.robot
    mimics = {j.get("name"): (j.find("mimic").get("joint"), float(j.find("mimic").get("multiplier", 1)))
              for j in ET.parse(robot.urdf_path).getroot().iter("joint") if j.find("mimic") is not None}
    assert mimics
    q = robot.home.copy()
    for arm in robot.arms:
        q[arm.gripper.index] = arm.gripper.closed + 0.3 * (arm.gripper.open - arm.gripper.closed)
    scene.set_joint_positions(q)
    for follower, (leader, multiplier) in mimics.items():
        qpos = scene.data.qpos[scene.model.jnt_qposadr[scene.model.joint(follower).id]]
        assert qpos == pytest.approx(multiplier * q[robot.joint_names.index(leader)])
    if name == "franka":  # both fingers slide apart from the hand centre: separation = 2 x finger joint
        gap = scene.link_pose("panda_leftfinger").translation - scene.link_pose("panda_rightfinger").translation
        assert np.linalg.norm(gap) == pytest.approx(2 * q[robot.arms[0].gripper.index])
    scene.set_joint_positions(robot.home)


@pytest.mark.parametrize("name", ROBOTS)
def test_random_targets_are_seeded_on_the_table_reachable_and_in_view(scenes, name):
    robot = scenes(name).robot
    arm = robot.arms[0]
    camera = primary(robot)
    targets = []
    for seed in (1, 2):
        scene = scenes(name, seed=seed)
        target = scene.target_position()
        targets.append(target)
        assert np.all(target[:2] >= arm.workspace_min[:2] + WORKSPACE_MARGIN - 1e-12)
        assert np.all(target[:2] <= arm.workspace_max[:2] - WORKSPACE_MARGIN + 1e-12)
        assert target[2] >= scene.table_height + scene.target_radius - 1e-12
        assert arm.workspace_min[2] <= target[2] <= arm.workspace_max[2]
        q = solve_position(robot, arm, target)
        assert q is not None and np.all((q >= robot.limits.lower) & (q <= robot.limits.upper))
        assert scene.ee_distance_to_target(q) < 0.02
        u, v = pinhole(robot, robot.home, camera, target)
        assert red_mask(scene.render(camera.name))[int(v), int(u)]
    assert not np.allclose(targets[0], targets[1])
    again = SimScene(robot, seed=2)
    np.testing.assert_array_equal(again.target_position(), targets[1])
    np.testing.assert_array_equal(again.render(camera.name), scenes(name, seed=2).render(camera.name))
    again.close()


def test_explicit_target_and_distance(scenes):
    scene = scenes("franka", target_xyz=(0.5, 0.1, 0.02))
    robot = scene.robot
    np.testing.assert_array_equal(scene.target_position(), [0.5, 0.1, 0.02])
    ee = robot.fk(robot.home, robot.arms[0].ee_frame).translation
    assert scene.ee_distance_to_target(robot.home, "arm") == pytest.approx(np.linalg.norm(ee - [0.5, 0.1, 0.02]))
    u, v = pinhole(robot, robot.home, primary(robot), scene.target_position())
    assert red_mask(scene.render("primary"))[int(v), int(u)]
    with pytest.raises(ValueError, match="target_xyz"):
        SimScene(robot, target_xyz=(0.5, np.nan, 0.0))


def test_ur5_target_stands_on_a_post_within_reach_of_the_bare_flange(scenes):
    scene = scenes("ur5")
    arm = scene.robot.arms[0]
    assert scene.target_position()[2] > scene.table_height + scene.target_radius  # raised
    assert scene.target_position()[2] - arm.workspace_min[2] < 0.02
    assert "target_post" in [scene.model.geom(i).name for i in range(scene.model.ngeom)]


def test_camera_subset_and_config_errors(scenes, tmp_path):
    robot = load_robot("aloha")
    scene = SimScene(robot, cameras=["cam_left_wrist"])
    assert scene.camera_names == ("cam_left_wrist",)
    with pytest.raises(KeyError, match="cam_high"):
        scene.render("cam_high")
    # The target does not depend on which cameras are rendered.
    np.testing.assert_array_equal(scene.target_position(), scenes("aloha").target_position())
    scene.close()
    with pytest.raises(ConfigError, match="no camera 'cam_top'"):
        SimScene(robot, cameras=["cam_top"])
    franka = load_robot("franka")
    config = yaml.safe_load(franka.config_path.read_text())
    config["urdf"] = str(franka.urdf_path)
    del config["cameras"][0]["pose"]
    path = tmp_path / "posefree.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"cameras\[0\]\.pose: required by the simulator"):
        SimScene(load_robot(path))
    config = yaml.safe_load(franka.config_path.read_text())
    config["urdf"] = str(franka.urdf_path)
    config["arms"][0]["workspace"] = {"min": [1.6, -0.2, 0.02], "max": [2.0, 0.2, 1.0]}  # out of reach
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"arms\.arm: found no table spot"):
        SimScene(load_robot(path))
