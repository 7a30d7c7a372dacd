"""Forward kinematics of the built-in robots against models and figures we did not write.

The URDFs under urdf/ were written from published parameters, so each is pinned to an independent source:
- franka, ur5: example-robot-data's URDFs (franka_ros / ros-industrial descriptions), loaded with pinocchio;
  ur5 also against the standard DH table of Universal_Robots_ROS2_Description (shared reference robots.md).
- aloha: gym-aloha's bimanual vx300s MJCF, through MuJoCo.
- widowx (and the aloha arms): interbotix's product-of-exponentials home pose M and screw axes (robots.md
  section 3), and configurations worked out by hand.
Then what the simulated robot and the safety layer rely on: MuJoCo loads each URDF with the same kinematics,
without self-contact at home, the configs carry the published limits, home lies inside each workspace box,
and every configured camera sees its arm.
"""

from __future__ import annotations

import importlib.metadata
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pinocchio as pin
import pytest

from vla_ros.core.robot import CameraSpec, RobotModel, load_robot

POSITION_TOL = 1e-6  # m
ROTATION_TOL = 1e-6  # rad
CONFIGS = 200  # random in-limit configurations per comparison
ROBOTS = ("franka", "widowx", "ur5", "aloha")
OUR_URDF_ROBOTS = ("widowx", "ur5", "aloha")


def third_party_file(distribution: str, suffix: str) -> Path:
    """A data file shipped by an installed pip distribution (these ship no importable module to importorskip)."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{distribution} is not installed")
    matches = [f for f in dist.files or () if str(f).endswith(suffix)]
    assert len(matches) == 1, f"{distribution} {dist.version}: expected one file ending {suffix}, found {matches}"
    return Path(dist.locate_file(matches[0]))


def assert_same_pose(actual: pin.SE3, expected: pin.SE3, what: str) -> None:
    position_error = np.linalg.norm(actual.translation - expected.translation)
    rotation_error = np.linalg.norm(pin.log3(actual.rotation.T @ expected.rotation))
    assert position_error < POSITION_TOL and rotation_error < ROTATION_TOL, (
        f"{what}: position off by {position_error:.3g} m, rotation by {rotation_error:.3g} rad"
    )


def relative(base: pin.SE3, pose: pin.SE3) -> pin.SE3:
    return base.inverse() * pose


class UrdfKinematics:
    """A URDF loaded with pinocchio as-is (every movable joint free, mimic joints included), joints set by name."""

    def __init__(self, urdf: Path):
        self.model = pin.buildModelFromUrdf(str(urdf))
        self.data = self.model.createData()

    def poses(self, joint_values: dict[str, float], frames: list[str]) -> dict[str, pin.SE3]:
        q = pin.neutral(self.model)
        for name, value in joint_values.items():
            assert self.model.existJointName(name), f"reference model has no joint {name!r}"
            q[self.model.joints[self.model.getJointId(name)].idx_q] = value
        pin.framesForwardKinematics(self.model, self.data, q)
        for frame in frames:
            assert self.model.existFrame(frame), f"reference model has no frame {frame!r}"
        return {frame: self.data.oMf[self.model.getFrameId(frame)].copy() for frame in frames}


def mimic_joints(urdf: Path) -> dict[str, tuple[str, float, float]]:
    """URDF <mimic> joints: name -> (leader, multiplier, offset)."""
    mimics = {}
    for joint in ET.parse(urdf).getroot().iter("joint"):
        mimic = joint.find("mimic")
        if mimic is not None:
            mimics[joint.get("name")] = (
                mimic.get("joint"), float(mimic.get("multiplier", 1.0)), float(mimic.get("offset", 0.0)),
            )
    return mimics


def with_mimics(robot: RobotModel, q: np.ndarray) -> dict[str, float]:
    """Commanded joint values by name, plus the URDF's mimic joints following their leaders."""
    values = dict(zip(robot.joint_names, q))
    for name, (leader, multiplier, offset) in mimic_joints(robot.urdf_path).items():
        values[name] = multiplier * values[leader] + offset
    return values


def rotation(axis: str, angle: float) -> np.ndarray:
    return pin.exp3(angle * np.eye(3)["xyz".index(axis)])


# --- franka and ur5 against example-robot-data -----------------------------------------------------------------

EXAMPLE_ROBOT_DATA = {
    # robot: (URDF inside example-robot-data, frame both models express poses in, frames compared)
    "franka": ("panda_description/urdf/panda.urdf", "panda_link0", ["panda_hand_tcp", "panda_link8"]),
    "ur5": ("ur_description/urdf/ur5_robot.urdf", "base_link", ["tool0", "wrist_3_link"]),
}


@pytest.mark.parametrize("name", sorted(EXAMPLE_ROBOT_DATA))
def test_fk_matches_example_robot_data(name):
    suffix, base, frames = EXAMPLE_ROBOT_DATA[name]
    reference = UrdfKinematics(third_party_file("example-robot-data", suffix))
    robot = load_robot(name)
    assert robot.base_frame == base
    for q in robot.random_configurations(CONFIGS, np.random.default_rng(1)):
        expected = reference.poses(dict(zip(robot.joint_names, q)), [base, *frames])
        for frame in frames:
            assert_same_pose(
                robot.fk(q, frame), relative(expected[base], expected[frame]), f"{name} {frame} at q={q.tolist()}"
            )


@pytest.mark.parametrize("name", sorted(EXAMPLE_ROBOT_DATA))
def test_position_limits_match_example_robot_data(name):
    reference = UrdfKinematics(third_party_file("example-robot-data", EXAMPLE_ROBOT_DATA[name][0])).model
    robot = load_robot(name)
    for i, joint in enumerate(robot.joint_names):
        idx = reference.joints[reference.getJointId(joint)].idx_q
        assert (robot.limits.lower[i], robot.limits.upper[i]) == pytest.approx(
            (reference.lowerPositionLimit[idx], reference.upperPositionLimit[idx]), abs=1e-9
        ), joint


# Standard DH of the UR5 (robots.md section 2, from Universal_Robots_ROS2_Description default_kinematics.yaml).
UR5_DH = {
    "d": [0.089159, 0.0, 0.0, 0.10915, 0.09465, 0.0823],
    "a": [0.0, -0.425, -0.39225, 0.0, 0.0, 0.0],
    "alpha": [math.pi / 2, 0.0, 0.0, math.pi / 2, -math.pi / 2, 0.0],
}


def standard_dh(q: np.ndarray, d, a, alpha) -> pin.SE3:
    """Rz(q) Tz(d) Tx(a) Rx(alpha) per joint: the textbook chain, independent of any URDF."""
    pose = pin.SE3.Identity()
    for qi, di, ai, al in zip(q, d, a, alpha):
        pose = pose * pin.SE3(rotation("z", qi), np.array([ai * math.cos(qi), ai * math.sin(qi), di]))
        pose = pose * pin.SE3(rotation("x", al), np.zeros(3))
    return pose


def test_ur5_tool0_matches_published_dh_in_controller_base_frame():
    robot = load_robot("ur5")
    for q in robot.random_configurations(CONFIGS, np.random.default_rng(2)):
        actual = relative(robot.fk(q, "base"), robot.fk(q, "tool0"))
        assert_same_pose(actual, standard_dh(q, **UR5_DH), f"ur5 tool0 in base at q={q.tolist()}")


def test_ur5_flange_is_tool0_with_x_out_of_the_flange():
    robot = load_robot("ur5")
    for q in robot.random_configurations(20, np.random.default_rng(3)):
        flange, tool0 = robot.fk(q, "flange"), robot.fk(q, "tool0")
        np.testing.assert_allclose(flange.translation, tool0.translation, atol=POSITION_TOL)
        np.testing.assert_allclose(flange.rotation[:, 0], tool0.rotation[:, 2], atol=ROTATION_TOL)


# --- interbotix arms against the published product-of-exponentials description -----------------------------------

# Joint origins along the arm at home (all rpy 0; the wrist_rotate axis is the forearm_roll axis, so its offset
# only enters M) and the PoE home pose M of ee_gripper_link, robots.md section 3.
XSARM = {
    "wx250s": {"waist": 0.072, "shoulder": 0.03865, "elbow": (0.04975, 0.25), "forearm_roll": 0.175,
               "wrist_angle": 0.075, "home": (0.458325, 0.36065)},
    "vx300s": {"waist": 0.079, "shoulder": 0.04805, "elbow": (0.05955, 0.3), "forearm_roll": 0.2,
               "wrist_angle": 0.1, "home": (0.536494, 0.42705)},
}
# robot config name -> [(interbotix arm, config arm, arm base link)]
XSARM_ROBOTS = {
    "widowx": [("wx250s", "arm", "wx250s/base_link")],
    "aloha": [("vx300s", "left", "follower_left/base_link"), ("vx300s", "right", "follower_right/base_link")],
}


def xsarm_poe(arm: str, q: np.ndarray) -> pin.SE3:
    """ee_gripper_link in the arm's base_link: space-frame product of exponentials exp([S1]q1)...exp([S6]q6) M,
    the form interbotix's own modern_robotics descriptions (and Bridge's state labels) use."""
    p = XSARM[arm]
    shoulder_z = p["waist"] + p["shoulder"]
    elbow_x, elbow_z = p["elbow"][0], shoulder_z + p["elbow"][1]
    wrist_x = elbow_x + p["forearm_roll"] + p["wrist_angle"]
    screws = [  # (axis, a point on the axis at home)
        ((0, 0, 1), (0, 0, p["waist"])),
        ((0, 1, 0), (0, 0, shoulder_z)),
        ((0, 1, 0), (elbow_x, 0, elbow_z)),
        ((1, 0, 0), (elbow_x, 0, elbow_z)),
        ((0, 1, 0), (wrist_x, 0, elbow_z)),
        ((1, 0, 0), (wrist_x, 0, elbow_z)),
    ]
    pose = pin.SE3.Identity()
    for (axis, point), qi in zip(screws, q):
        axis = np.array(axis, dtype=float)
        pose = pose * pin.exp6(pin.Motion(-np.cross(axis, point) * qi, axis * qi))
    return pose * pin.SE3(np.eye(3), np.array([p["home"][0], 0.0, p["home"][1]]))


@pytest.mark.parametrize("name", sorted(XSARM_ROBOTS))
def test_xsarm_home_is_the_published_poe_home_pose(name):
    robot = load_robot(name)
    q = robot.home.copy()
    for model, arm_name, base in XSARM_ROBOTS[name]:
        arm = robot.arm(arm_name)
        q[arm.index] = 0.0
        x, z = XSARM[model]["home"]
        actual = relative(robot.fk(q, base), robot.fk(q, arm.ee_frame))
        assert_same_pose(actual, pin.SE3(np.eye(3), np.array([x, 0.0, z])), f"{name} {arm_name} zero pose")


@pytest.mark.parametrize("name", sorted(XSARM_ROBOTS))
def test_xsarm_fk_matches_product_of_exponentials(name):
    robot = load_robot(name)
    for q in robot.random_configurations(CONFIGS, np.random.default_rng(4)):
        for model, arm_name, base in XSARM_ROBOTS[name]:
            arm = robot.arm(arm_name)
            actual = relative(robot.fk(q, base), robot.fk(q, arm.ee_frame))
            assert_same_pose(actual, xsarm_poe(model, q[arm.index]), f"{name} {arm_name} at q={q[arm.index].tolist()}")


# WidowX configurations worked out by hand from the joint origins (shoulder axis at z 0.11065, elbow 0.04975 in
# front of it and 0.25 above, then 0.175 + 0.075 + 0.065 + 0.043 + 0.023 + 0.027575 = 0.408575 to ee_gripper_link;
# the wrist_angle axis is 0.29975 in front of the base axis).
WIDOWX_BY_HAND = [
    # waist a quarter turn: the stretched arm points along +y.
    ({"waist": math.pi / 2}, (0.0, 0.458325, 0.36065), rotation("z", math.pi / 2)),
    # forearm straight up from the elbow.
    ({"elbow": -math.pi / 2}, (0.04975, 0.0, 0.36065 + 0.408575), rotation("y", -math.pi / 2)),
    # upper arm laid back horizontally: elbow at (-0.25, 0, 0.11065 + 0.04975), forearm straight up from there.
    ({"shoulder": -math.pi / 2}, (-0.25, 0.0, 0.1604 + 0.408575), rotation("y", -math.pi / 2)),
    # forearm rolled a quarter turn turns the wrist_angle axis vertical: the hand swings to +y in the horizontal plane.
    ({"forearm_roll": math.pi / 2, "wrist_angle": math.pi / 2}, (0.29975, 0.158575, 0.36065),
     rotation("x", math.pi / 2) @ rotation("y", math.pi / 2)),
]


@pytest.mark.parametrize(("joints", "position", "orientation"), WIDOWX_BY_HAND)
def test_widowx_fk_matches_hand_computed_poses(joints, position, orientation):
    robot = load_robot("widowx")
    q = robot.vector_from(list(joints), list(joints.values()), default=np.zeros(robot.nq))
    assert_same_pose(robot.fk(q, "wx250s/ee_gripper_link"), pin.SE3(orientation, np.array(position)), str(joints))


# --- aloha against gym-aloha's MJCF --------------------------------------------------------------------------------

GYM_ALOHA_SCENE = "gym_aloha/assets/bimanual_viperx_transfer_cube.xml"
# Bodies gym-aloha and our URDF both have, per arm; the arm base is "vx300s_<side>" there, base_link here.
# gym-aloha has no ee_gripper_link: the finger links pin fingers_link, the PoE tests above pin the EE offset.
SHARED_BODIES = ("shoulder_link", "upper_arm_link", "upper_forearm_link", "lower_forearm_link", "wrist_link",
                 "gripper_link", "gripper_prop_link", "left_finger_link", "right_finger_link")


def gym_aloha_name(name: str) -> str:
    return name.replace("follower_", "vx300s_")


def mujoco_pose(model, data, body: str) -> pin.SE3:
    body = model.body(body)
    return pin.SE3(data.xmat[body.id].reshape(3, 3).copy(), data.xpos[body.id].copy())


def test_aloha_fk_matches_gym_aloha_mjcf():
    mujoco = pytest.importorskip("mujoco")
    scene = mujoco.MjModel.from_xml_path(str(third_party_file("gym-aloha", GYM_ALOHA_SCENE)))
    scene_data = mujoco.MjData(scene)
    robot = load_robot("aloha")
    # The finger links need the mimic joints moving, so compare them on the URDF as written.
    urdf = UrdfKinematics(robot.urdf_path)
    sides = ("follower_left", "follower_right")
    ee_frames = [arm.ee_frame for arm in robot.arms]
    frames = [f"{side}/{body}" for side in sides for body in ("base_link", *SHARED_BODIES)] + ee_frames
    for q in robot.random_configurations(CONFIGS, np.random.default_rng(5)):
        values = with_mimics(robot, q)
        for name, value in zip(robot.joint_names, q):
            scene_data.qpos[scene.jnt_qposadr[scene.joint(gym_aloha_name(name)).id]] = value
            if name.endswith("/left_finger"):  # gym-aloha has no mimic: its right finger mirrors the left one
                right = scene.joint(gym_aloha_name(name).replace("left_finger", "right_finger"))
                scene_data.qpos[scene.jnt_qposadr[right.id]] = -value
        mujoco.mj_kinematics(scene, scene_data)
        ours = urdf.poses(values, frames)
        for ee in ee_frames:  # the commanded model (what IK and safety use) agrees with the URDF as written
            assert_same_pose(robot.fk(q, ee), ours[ee], f"aloha {ee} at q={q.tolist()}")
        for side in sides:
            their_base = mujoco_pose(scene, scene_data, gym_aloha_name(side))
            base = f"{side}/base_link"
            for body in SHARED_BODIES:
                assert_same_pose(
                    relative(ours[base], ours[f"{side}/{body}"]),
                    relative(their_base, mujoco_pose(scene, scene_data, gym_aloha_name(f"{side}/{body}"))),
                    f"aloha {side}/{body} at q={q.tolist()}",
                )


def test_aloha_bases_sit_where_gym_aloha_puts_them():
    mujoco = pytest.importorskip("mujoco")
    scene = mujoco.MjModel.from_xml_path(str(third_party_file("gym-aloha", GYM_ALOHA_SCENE)))
    scene_data = mujoco.MjData(scene)
    mujoco.mj_kinematics(scene, scene_data)
    robot = load_robot("aloha")
    for side in ("follower_left", "follower_right"):
        ours = robot.fk(robot.home, f"{side}/base_link")
        theirs = mujoco_pose(scene, scene_data, gym_aloha_name(side))
        np.testing.assert_allclose(ours.translation, theirs.translation, atol=POSITION_TOL)
        # gym-aloha turns the right arm by 3.1416 rad, 7.3e-6 rad past the pi used here
        assert np.linalg.norm(pin.log3(ours.rotation.T @ theirs.rotation)) < 1e-5, side


# --- what the simulated robot and the safety layer rely on --------------------------------------------------------

@pytest.mark.parametrize("name", OUR_URDF_ROBOTS)
def test_urdf_loads_in_mujoco_with_the_same_kinematics(name):
    mujoco = pytest.importorskip("mujoco")
    robot = load_robot(name)
    model = mujoco.MjModel.from_xml_path(str(robot.urdf_path))
    data = mujoco.MjData(model)
    moving = model.jnt_bodyid
    assert np.all(model.body_mass[moving] > 1e-3), "every moving link needs a mass"
    assert np.all(model.body_inertia[moving] > 0), "every moving link needs a positive-definite inertia"
    for q in robot.random_configurations(50, np.random.default_rng(6)):
        for joint, value in with_mimics(robot, q).items():
            data.qpos[model.jnt_qposadr[model.joint(joint).id]] = value
        mujoco.mj_kinematics(model, data)
        base = mujoco_pose(model, data, robot.base_frame)  # MuJoCo calls the root of the aloha URDF "world" too
        for arm in robot.arms:
            assert_same_pose(relative(base, mujoco_pose(model, data, arm.ee_frame)), robot.fk(q, arm.ee_frame),
                             f"{name} {arm.ee_frame} in MuJoCo")


@pytest.mark.parametrize("opening", [0.0, 1.0])
@pytest.mark.parametrize("name", ROBOTS)
def test_urdf_in_mujoco_is_free_of_self_contact_at_home(name, opening):
    mujoco = pytest.importorskip("mujoco")
    robot = load_robot(name)
    model = mujoco.MjModel.from_xml_path(str(robot.urdf_path))
    data = mujoco.MjData(model)
    q = robot.home.copy()
    for arm in robot.arms:
        if arm.gripper:
            q[arm.gripper.index] = arm.gripper.to_joint(opening)
    for joint, value in with_mimics(robot, q).items():
        data.qpos[model.jnt_qposadr[model.joint(joint).id]] = value
    mujoco.mj_forward(model, data)
    touching = {(model.body(model.geom_bodyid[c.geom1]).name, model.body(model.geom_bodyid[c.geom2]).name)
                for c in data.contact[: data.ncon]}
    assert not touching, f"{name} at home touches itself: {sorted(touching)}"


# Published limits (robots.md sections 2 and 3): joint -> (lower, upper, velocity, effort), SI units.
PI = math.pi
PUBLISHED_LIMITS = {
    "widowx": {"waist": (-PI, PI, PI, 10), "shoulder": (math.radians(-108), math.radians(114), PI, 20),
               "elbow": (math.radians(-123), math.radians(92), PI, 15), "forearm_roll": (-PI, PI, PI, 2),
               "wrist_angle": (math.radians(-100), math.radians(123), PI, 5), "wrist_rotate": (-PI, PI, PI, 1),
               "left_finger": (0.015, 0.037, 1, 5)},
    "aloha": {f"follower_{side}/{joint}": limits for side in ("left", "right") for joint, limits in {
        "waist": (-PI, PI, PI, 10), "shoulder": (math.radians(-106), math.radians(72), PI, 20),
        "elbow": (math.radians(-101), math.radians(92), PI, 15), "forearm_roll": (-PI, PI, PI, 2),
        "wrist_angle": (math.radians(-107), math.radians(128), PI, 5), "wrist_rotate": (-PI, PI, PI, 1),
        "left_finger": (0.021, 0.057, 1, 5)}.items()},
    "ur5": {"shoulder_pan_joint": (-2 * PI, 2 * PI, PI, 150), "shoulder_lift_joint": (-2 * PI, 2 * PI, PI, 150),
            "elbow_joint": (-PI, PI, PI, 150), "wrist_1_joint": (-2 * PI, 2 * PI, PI, 28),
            "wrist_2_joint": (-2 * PI, 2 * PI, PI, 28), "wrist_3_joint": (-2 * PI, 2 * PI, PI, 28)},
}


@pytest.mark.parametrize("name", OUR_URDF_ROBOTS)
def test_limits_are_the_published_ones(name):
    robot = load_robot(name)
    assert sorted(robot.joint_names) == sorted(PUBLISHED_LIMITS[name])
    limits = robot.limits
    for joint, (lower, upper, velocity, effort) in PUBLISHED_LIMITS[name].items():
        i = robot.indices([joint])[0]
        # interbotix keeps the +-pi joints 1e-5 rad inside pi
        assert limits.lower[i] == pytest.approx(lower, abs=1.1e-5), joint
        assert limits.upper[i] == pytest.approx(upper, abs=1.1e-5), joint
        assert limits.lower[i] >= lower and limits.upper[i] <= upper, f"{joint}: wider than published"
        assert (limits.velocity[i], limits.effort[i]) == pytest.approx((velocity, effort), rel=1e-9), joint
        assert limits.acceleration[i] > 0 and limits.jerk[i] > 0, joint


@pytest.mark.parametrize("name", ROBOTS)
def test_home_lies_inside_every_workspace_box(name):
    robot = load_robot(name)
    for arm in robot.arms:
        position = robot.fk(robot.home, arm.ee_frame).translation
        assert np.all(position > arm.workspace_min) and np.all(position < arm.workspace_max), (
            f"{name} {arm.name}: home EE {position.round(3).tolist()} outside "
            f"{arm.workspace_min.tolist()}..{arm.workspace_max.tolist()}"
        )


def camera_pixels(robot: RobotModel, camera: CameraSpec, q: np.ndarray, points: list[np.ndarray]) -> list[tuple]:
    """Base-frame points -> (u, v, depth) in a centred pinhole camera (optical frame: z forward, x right, y down)."""
    parent, xyz, rpy = camera.pose
    pose = robot.fk(q, parent) * pin.SE3(pin.rpy.rpyToMatrix(*rpy), np.array(xyz))
    focal = camera.height / 2 / math.tan(math.radians(camera.fov_y_deg) / 2)
    pixels = []
    for point in points:
        x, y, z = pose.actInv(point)
        pixels.append((camera.width / 2 + focal * x / z, camera.height / 2 + focal * y / z, z))
    return pixels


@pytest.mark.parametrize("name", ROBOTS)
def test_cameras_see_their_arms(name):
    robot = load_robot(name)
    assert robot.cameras
    for camera in robot.cameras:
        assert camera.pose is not None and camera.fov_y_deg is not None, camera.name
        parent_joint = robot.model.frames[robot.frame_id(camera.pose[0])].parentJoint
        if parent_joint == 0:  # fixed camera: every arm's hand at home and every workspace centre
            points = [robot.fk(robot.home, arm.ee_frame).translation for arm in robot.arms]
            points += [(arm.workspace_min + arm.workspace_max) / 2 for arm in robot.arms]
        else:  # wrist camera: the hand it rides on
            points = [robot.fk(robot.home, arm.ee_frame).translation for arm in robot.arms
                      if robot.model.frames[arm.ee_frame_id].parentJoint == parent_joint]
            assert points, f"{name} {camera.name}: rides on {camera.pose[0]}, which carries no arm's EE frame"
        for point, (u, v, depth) in zip(points, camera_pixels(robot, camera, robot.home, points)):
            assert depth > 0 and 0 <= u < camera.width and 0 <= v < camera.height, (
                f"{name} {camera.name}: {point.round(3).tolist()} lands at pixel ({u:.0f}, {v:.0f}), depth {depth:.2f}"
            )
