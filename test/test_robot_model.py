"""RobotModel: built-in robots, a user's own URDF + YAML, and every bad-input path of check-robot."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from robot_helpers import JOINTS, TOOL, dh_config, dh_fk, dh_urdf, write_dh_robot
from vla_ros.cli import main as cli_main
from vla_ros.core.errors import ConfigError, UnknownJointError
from vla_ros.core.robot import builtin_robot_names, load_robot

BUILTINS = ["franka", "widowx", "ur5", "aloha"]


def test_all_four_builtin_robots_are_shipped():
    assert set(BUILTINS) <= set(builtin_robot_names())


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_robot_is_consistent(name):
    robot = load_robot(name)
    assert robot.nq == len(robot.joint_names) == len(robot.limits.lower)
    assert np.all(robot.limits.lower < robot.limits.upper)
    for field in ("velocity", "acceleration", "jerk", "effort"):
        assert np.all(getattr(robot.limits, field) > 0), field
    assert np.all((robot.home >= robot.limits.lower) & (robot.home <= robot.limits.upper))
    covered = {j for c in robot.controllers for j in c.joints}
    for arm in robot.arms:
        assert set(arm.joints) <= covered
        assert [robot.joint_names[i] for i in arm.index] == list(arm.joints)
        pose = robot.fk(robot.home, arm.ee_frame)
        assert np.all(np.isfinite(pose.homogeneous))
    assert robot.cameras, "every built-in robot declares at least one camera"


def test_aloha_has_two_independent_arms_and_four_cameras():
    robot = load_robot("aloha")
    assert [a.name for a in robot.arms] == ["left", "right"]
    left, right = robot.arms
    assert not set(left.index) & set(right.index)
    assert len(robot.cameras) == 4
    # moving the left arm never moves the right EE
    q = robot.home.copy()
    before = robot.fk(q, right.ee_frame).homogeneous
    q[left.index] += 0.3
    assert np.allclose(robot.fk(q, right.ee_frame).homogeneous, before)


def test_trajectory_controlled_robots_are_those_with_a_joint_trajectory_controller():
    """safety_node keeps the controller trajectory exactly for these (SafetyFilter keep_trajectory)."""
    assert {name: load_robot(name).trajectory_controlled for name in BUILTINS} == {
        "franka": True, "ur5": True, "widowx": False, "aloha": False}


def test_name_mapping_is_by_name_not_position():
    robot = load_robot("franka")
    names = list(reversed(robot.joint_names))
    values = np.arange(robot.nq, dtype=float)
    q = robot.vector_from(names, values)
    for name, value in zip(names, values):
        assert q[robot.joint_names.index(name)] == value
    with pytest.raises(UnknownJointError, match="elbow_of_doom"):
        robot.vector_from(["elbow_of_doom"], [0.0], default=robot.home)
    with pytest.raises(UnknownJointError, match="panda_joint7"):
        robot.vector_from(robot.joint_names[:6], values[:6])  # joint 7 (and the finger) missing


def test_jacobian_matches_finite_differences():
    robot = load_robot("franka")
    arm = robot.arms[0]
    q = robot.home + 0.1
    jac = robot.frame_jacobian(q, arm.ee_frame)
    eps = 1e-6
    for i in arm.index:
        dq = np.zeros(robot.nq)
        dq[i] = eps
        p1, p0 = robot.fk(q + dq, arm.ee_frame).translation, robot.fk(q - dq, arm.ee_frame).translation
        assert np.allclose((p1 - p0) / (2 * eps), jac[:3, i], atol=1e-6)


def test_custom_dh_robot_fk_matches_textbook_dh(tmp_path):
    robot = load_robot(write_dh_robot(tmp_path))
    assert robot.joint_names == tuple(JOINTS)
    rng = np.random.default_rng(3)
    for q in robot.random_configurations(50, rng):
        assert np.allclose(robot.fk(q, TOOL).homogeneous, dh_fk(q), atol=1e-9)


def test_check_robot_on_custom_urdf_json(tmp_path, capsys):
    path = write_dh_robot(tmp_path)
    assert cli_main(["check-robot", str(path), "--json", "--samples", "200"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert [j["name"] for j in rep["joints"]] == JOINTS
    assert rep["arms"][0]["ee_frame"] == TOOL
    assert np.allclose(rep["arms"][0]["fk_home"]["xyz"], dh_fk(np.array(dh_config()["arms"][0]["home"]))[:3, 3], atol=1e-6)
    assert rep["reachable_workspace"]["main"]["max_reach"] > 0.8


def test_check_robot_urdf_override(tmp_path, capsys):
    path = write_dh_robot(tmp_path)
    moved = tmp_path / "elsewhere.urdf"
    shutil.copy(tmp_path / "dh_six.urdf", moved)
    (tmp_path / "dh_six.urdf").unlink()
    assert cli_main(["check-robot", str(path), "--urdf", str(moved), "--samples", "50"]) == 0
    assert "elsewhere.urdf" in capsys.readouterr().out


@pytest.mark.parametrize("name", BUILTINS)
def test_check_robot_builtin_tables(name, capsys):
    assert cli_main(["check-robot", name, "--samples", "100"]) == 0
    out = capsys.readouterr().out
    robot = load_robot(name)
    for joint in robot.joint_names:
        assert joint in out
    for controller in robot.controllers:
        assert controller.topic in out


def _mutate(config: dict, path: str, value) -> dict:
    """Set a dotted path (with [i] list indices) in a deep copy of config; value None deletes the key."""
    config = json.loads(json.dumps(config))
    keys = path.replace("]", "").replace("[", ".").split(".")
    node = config
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    last = keys[-1]
    if value is None:
        del node[last]
    else:
        node[int(last) if isinstance(node, list) else last] = value
    return config


BAD_CONFIGS = [
    # (mutation path, value, expected field in the message, expected words)
    ("arms[0].ee_frame", "no_such_link", "arms[0].ee_frame", "not in URDF"),
    ("arms[0].joints", JOINTS[:5] + ["axis_zz"], "arms[0].joints", "axis_zz"),
    ("arms[0].joints", JOINTS[:5], "arms", "axis_f"),  # URDF joint not used by the config
    ("limit_defaults", None, "limits.axis_a.acceleration", "missing"),
    ("control_rate_hz", "fast", "control_rate_hz", "expected a number"),
    ("arms[0].home", "zero", "arms[0].home", "list of numbers"),
    ("arms[0].home", [0.0] * 5, "arms[0].home", "expected 6 numbers"),
    ("arms[0].home", [9.0] + [0.0] * 5, "arms[0].home", "outside its limits"),
    ("base_frame", None, "base_frame", "missing"),
    ("controllers[0].interface", "telepathy", "controllers[0].interface", "expected one of"),
    ("controllers[0].joints", JOINTS[:5], "controllers", "axis_f"),
    ("arms[0].workspace.min", [2.0, 0.0, 0.0], "arms[0].workspace.min", "below max"),
    ("urdf", "missing.urdf", "missing.urdf", "not found"),
    ("colour", "red", "colour", "unknown key"),
    ("controllers[0].command_range", {"open": 1.0, "closed": 0.0}, "controllers[0].command_range", "one gripper joint"),
]


@pytest.mark.parametrize("path,value,field,words", BAD_CONFIGS, ids=[c[0] + ":" + str(c[1])[:12] for c in BAD_CONFIGS])
def test_bad_config_gives_one_line_exit_2(tmp_path, capsys, path, value, field, words):
    config_path = write_dh_robot(tmp_path, _mutate(dh_config(), path, value))
    assert cli_main(["check-robot", str(config_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert field in err and words in err
    assert "dh_six" in err or "missing.urdf" in err  # names the file
    assert "Traceback" not in err


BAD_URDFS = [
    ("<robot name='x'><link name='a'></robot>", "malformed URDF XML"),
    ("<html><body>not a robot</body></html>", "root element is <html>"),
    (dh_urdf().replace(' velocity="2.0"', "", 1), "joint axis_a.limit: missing velocity"),
    (dh_urdf().replace('type="revolute"', 'type="continuous"', 1), "continuous"),
]


@pytest.mark.parametrize("urdf_text,words", BAD_URDFS, ids=["malformed", "not-urdf", "no-velocity", "continuous"])
def test_bad_urdf_gives_one_line_exit_2(tmp_path, capsys, urdf_text, words):
    config_path = write_dh_robot(tmp_path, urdf_text=urdf_text)
    assert cli_main(["check-robot", str(config_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err and "dh_six" in err, err


def test_malformed_yaml_names_line(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\narms: [unclosed\n")
    assert cli_main(["check-robot", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "broken.yaml" in err and "malformed YAML" in err and "line" in err and len(err.splitlines()) == 1


def test_yaml_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml: expected a YAML mapping"):
        load_robot(path)


def test_unknown_robot_name(capsys):
    assert cli_main(["check-robot", "r2d2"]) == 2
    err = capsys.readouterr().err
    assert "r2d2" in err and "franka" in err


def test_urdf_that_is_a_directory(tmp_path, capsys):
    config_path = write_dh_robot(tmp_path)
    assert cli_main(["check-robot", str(config_path), "--urdf", str(tmp_path)]) == 2
    assert "URDF file not found" in capsys.readouterr().err


def test_installed_entry_point_runs_outside_the_checkout(tmp_path):
    """The console script works from any directory and finds configs without AMENT_PREFIX_PATH."""
    exe = Path(sys.executable).with_name("vla-ros")
    assert exe.exists(), "vla-ros console script not installed in the venv (make venv)"
    env = {k: v for k, v in os.environ.items() if k != "AMENT_PREFIX_PATH"}
    done = subprocess.run([str(exe), "check-robot", "ur5", "--json", "--samples", "50"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["name"] == "ur5"


def test_camera_without_optional_fields_loads(tmp_path):
    config = dh_config()
    config["cameras"] = [{"name": "wrist", "topic": "/wrist/image_raw", "encoding": "rgb8", "width": 64, "height": 48}]
    robot = load_robot(write_dh_robot(tmp_path, config))
    assert robot.cameras[0].fov_y_deg is None and robot.cameras[0].pose is None
