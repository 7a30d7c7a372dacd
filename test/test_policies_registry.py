"""make_policy and the shared preprocessing: built-in YAMLs, one-line config errors, image resizing as the peers
do it, state vectors mapped by name with gripper conventions."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml
from openpi_client import image_tools

from vla_ros.core.config import Section
from vla_ros.core.errors import ConfigError
from vla_ros.core.policies import ObservationError, builtin_policy_names, make_policy
from vla_ros.core.policies.preprocess import camera_image, parse_state, prepare_image, resize_image, state_vector
from vla_ros.core.policies.spec import parse_action_space
from vla_ros.core.robot import load_robot
from vla_ros.core.types import Observation, Policy
from vla_ros.resources import policy_config_dir

BUILTINS = {"act_local", "baseline", "openpi_pi0_aloha", "openpi_pi0fast_droid", "openvla_bridge", "playback"}


@pytest.fixture(scope="module")
def robots():
    return {name: load_robot(name) for name in ("franka", "widowx", "aloha")}


def test_every_builtin_policy_yaml_builds_or_names_the_missing_file(robots, tmp_path):
    assert BUILTINS <= set(builtin_policy_names())
    built = [make_policy("baseline", robot=robots["franka"]), make_policy("openvla_bridge", robot=robots["widowx"]),
             make_policy("openpi_pi0_aloha", robot=robots["aloha"])]
    assert all(isinstance(policy, Policy) for policy in built)
    assert built[0].metadata.is_baseline and not built[1].metadata.is_baseline
    assert built[1].metadata.horizon == 1 and built[2].metadata.action_space.dim == 14
    # DROID needs a wrist camera, which the built-in franka has not: the error says so
    with pytest.raises(ConfigError, match="camera 'wrist' is not a camera of robot franka"):
        make_policy("openpi_pi0fast_droid", robot=robots["franka"])
    with pytest.raises(ConfigError, match=r"act_config\.json: file not found"):
        make_policy("act_local", robot=robots["aloha"])
    with pytest.raises(ConfigError, match=r"policies/recording\.npz: recording file not found"):
        make_policy("playback", robot=robots["franka"])


@pytest.mark.parametrize("change, message", [
    ({"backend": "tensorflow"}, "backend: expected one of colour_target_baseline, torch_local, openpi_ws"),
    ({"horizn": 10}, "horizn: unknown key; expected one of"),
    ({"horizon": "ten"}, "horizon: expected a number, got str 'ten'"),
    ({"horizon": 2.5}, "horizon: expected a whole number, got 2.5"),
    ({"url": "http://127.0.0.1:8000"}, "url: expected ws://host:port"),
    ({"resize": "crop"}, "resize: expected one of stretch, pad"),
    ({"actions": {"scale": [1.0, 2.0]}}, r"actions\.scale: expected 14 numbers, got 2"),
    ({"action_space": {"kind": "joint_pos", "arms": ["left", "middle"]}},
     "action_space.arms: robot aloha has no arm 'middle'"),
    ({"action_space": {"kind": "joint_pos", "joints_per_arm": [6, 7]}},
     "action_space.joints_per_arm: arm 'right' of robot aloha has 6 joints, not 7"),
    ({"request": {"state": {"from": "state", "parts": [{"arm": "left", "joints": ["x"]}]}}},
     r"request\.state\.parts\[0\]: expected exactly one of arm, joints, gripper"),
    ({"request": {"img": {"from": "camera"}}}, r"request\.img\.from: expected one of image, state, instruction"),
])
def test_config_errors_are_one_line_and_name_the_field(robots, tmp_path, change, message):
    config = yaml.safe_load((policy_config_dir() / "openpi_pi0_aloha.yaml").read_text())
    config.update(change)
    path = tmp_path / "my_policy.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=message) as info:
        make_policy(path, robot=robots["aloha"])
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_unknown_builtin_name_lists_the_builtins():
    with pytest.raises(ConfigError, match=r"pi0: unknown policy; expected a built-in \(act_local, baseline"):
        make_policy("pi0")


def test_building_the_baseline_does_not_import_torch():
    code = ("import sys; from vla_ros.core.robot import load_robot; from vla_ros.core.policies import make_policy; "
            "make_policy('baseline', robot=load_robot('franka')); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_action_space_parsing(robots):
    space = parse_action_space(Section({"kind": "joint_pos", "gripper": False}, "x.yaml"), robots["aloha"])
    assert space.arms == ("left", "right") and space.joints_per_arm == (6, 6) and space.gripper is None
    assert space.dim == 12
    droid = parse_action_space(Section({"kind": "joint_vel", "gripper": {"open": 0, "closed": 1}}, "x.yaml"),
                               robots["franka"])
    assert droid.dim == 8 and droid.gripper.opening(1.0) == 0.0
    with pytest.raises(ConfigError, match="joints_per_arm: missing"):
        parse_action_space(Section({"kind": "joint_pos"}, "x.yaml"))


# --- preprocessing ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, size", [((480, 640), (224, 224)), ((240, 320), (224, 224)), ((100, 60), (64, 96)),
                                         ((224, 224), (224, 224))])
def test_pad_resize_matches_openpi_geometry(shape, size):
    rng = np.random.default_rng(0)
    # smooth content, so interpolation differences between OpenCV and PIL stay small
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    image = np.stack([(100 + 80 * np.sin(xx / 17.0)), (100 + 80 * np.cos(yy / 13.0)), 60 + 0 * xx], -1)
    image = (image + rng.uniform(0, 2, image.shape)).astype(np.uint8) + 20
    ours = resize_image(image, size, "pad")
    reference = image_tools.resize_with_pad(image, *size)
    assert ours.shape == reference.shape == (*size, 3)
    np.testing.assert_array_equal(ours.sum(-1) > 0, reference.sum(-1) > 0)  # same padded border
    assert np.abs(ours.astype(int) - reference.astype(int)).mean() < 2.0


def test_stretch_resize_and_layouts():
    image = np.zeros((48, 64, 3), np.uint8)
    image[:, :, 0] = 255
    out = prepare_image(image, (20, 30), "stretch", "chw", as_float=True)
    assert out.shape == (3, 20, 30) and out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out[0], 1.0)
    np.testing.assert_array_equal(out[1:], 0.0)
    assert resize_image(image, (48, 64)) is image  # already the right size: untouched
    hwc = prepare_image(image, None, "stretch", "hwc", as_float=False)
    assert hwc.dtype == np.uint8 and hwc.shape == (48, 64, 3)


@pytest.mark.parametrize("images, message", [
    ({}, "no image from camera 'primary' \\(cameras: none\\)"),
    ({"primary": np.zeros((4, 4), np.uint8)}, r"is uint8 \(4, 4\), expected uint8 \(H, W, 3\) RGB"),
    ({"primary": np.zeros((4, 4, 3), np.float32)}, r"is float32 \(4, 4, 3\)"),
])
def test_bad_images_are_observation_errors(images, message):
    with pytest.raises(ObservationError, match=message):
        camera_image(Observation(images, {}, "", 0.0), "primary", "p")


def test_state_vector_by_name_with_gripper_conventions(robots):
    franka = robots["franka"]
    items = Section({"s": [
        {"arm": "arm"},
        {"gripper": "arm"},  # 1 = open
        {"gripper": "arm", "open": 0.0, "closed": 1.0},  # DROID: 1 = closed
        {"gripper": "arm", "joint_open": 0.03, "joint_closed": 0.01},  # the training data's own span
        {"joints": ["panda_joint4"]},
    ]}, "x.yaml").sections("s")
    columns = parse_state(items, franka)
    q = franka.home.copy()
    q[franka.indices(["panda_finger_joint1"])[0]] = 0.01  # a quarter of 0.04 open
    positions = dict(zip(franka.joint_names, q))
    reordered = Observation({}, dict(reversed(list(positions.items()))), "", 0.0)  # order must not matter
    values = state_vector(columns, reordered, "p")
    np.testing.assert_allclose(values[:7], q[:7], rtol=1e-6)
    np.testing.assert_allclose(values[7:], [0.25, 0.75, 0.0, q[3]], rtol=1e-6)
    del positions["panda_joint3"]
    with pytest.raises(ObservationError, match="no position for joint 'panda_joint3'"):
        state_vector(columns, Observation({}, positions, "", 0.0), "p")


def test_state_parts_need_a_robot_for_arm_names_and_check_joint_names(robots):
    with pytest.raises(ConfigError, match=r"s\[0\]\.arm: needs a robot model"):
        parse_state(Section({"s": [{"arm": "arm"}]}, "x.yaml").sections("s"), None)
    with pytest.raises(ConfigError, match="joint 'elbow' is not a joint of robot franka"):
        parse_state(Section({"s": [{"joints": ["elbow"]}]}, "x.yaml").sections("s"), robots["franka"])
    with pytest.raises(ConfigError, match="robot franka has no arm 'left'"):
        parse_state(Section({"s": [{"gripper": "left"}]}, "x.yaml").sections("s"), robots["franka"])
