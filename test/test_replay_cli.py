"""`vla-ros replay` end to end: metrics.json, plots and report; the sweep table; one-line errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from bag_helpers import float_array_msg, scenario_messages, trajectory_msg, write_bag

from vla_ros import cli
from vla_ros.core.robot import load_robot
from vla_ros.core.safety.report import LIMITS

START = 100.0
ACTIONS_TOPIC = "/vla_ros/actions"


@pytest.fixture(autouse=True)
def replay_command(monkeypatch):
    """Run through the real `vla-ros` entry point (error handling, exit codes) with the replay subcommand."""
    monkeypatch.setitem(cli.SUBCOMMANDS, "replay", ("vla_ros.commands.replay", "evaluate a policy on a rosbag"))


@pytest.fixture(scope="module")
def recorded_bag(tmp_path_factory):
    """A franka bag with an ee_delta action stream and recorded arm commands (a smooth made-up trajectory)."""
    robot = load_robot("franka")
    directory = tmp_path_factory.mktemp("cli")
    messages = scenario_messages(robot, duration=1.5, start=START)
    times = (100_000_000_000 + np.arange(25) * 100_000_000) * 1e-9
    for i, t in enumerate(times):
        messages.append((ACTIONS_TOPIC, t, float_array_msg([0.002 * np.sin(t), 0, 0.001, 0, 0, 0, 1.0])))
    controller = robot.controllers[0]
    arm = robot.arm("arm")
    for k in range(76):
        t = START + k * 0.02
        messages.append((controller.topic, t, trajectory_msg(controller.joints, arm.home + 0.01 * np.sin(t), 0.02,
                                                             flavor="rclpy" if k % 2 else "rosbags")))
    bag = write_bag(directory / "bag", "mcap", messages)
    policy = directory / "playback.yaml"
    policy.write_text(yaml.safe_dump({
        "backend": "playback", "name": "from_bag", "horizon": 10, "recording": "unused.npz",
        "action_space": {"kind": "ee_delta", "frame": "base", "rotation": "rpy",
                         "gripper": {"open": 1.0, "closed": 0.0}},
    }))
    return bag, policy


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(["replay", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_replay_writes_metrics_plots_and_report(tmp_path, capsys, recorded_bag):
    bag, policy = recorded_bag
    out = tmp_path / "out"
    code, stdout, stderr = _run(capsys, bag, "--robot", "franka", "--policy", policy, "--out", out,
                                "--actions-topic", ACTIONS_TOPIC, "--latency", 40, "--jitter", 10, "--executor", "sync")
    assert code == 0, stderr
    assert stderr == ""  # no progress bar when stderr is not a terminal
    metrics = json.loads((out / "metrics.json").read_text())
    arm_joints = [f"panda_joint{i}" for i in range(1, 8)]
    assert sorted(metrics["joint_rmse"]) == arm_joints
    assert all(v > 0 for v in metrics["joint_rmse"].values())  # the chain does not follow a made-up trajectory
    assert set(metrics["interventions"]) == set(LIMITS)  # every kind reported, zeros included
    assert metrics["run"]["storage"] == "mcap" and metrics["run"]["latency_ms"] == 40
    assert metrics["run"]["executor"]["mode"] == "sync"
    frames = metrics["run"]["camera_frames"]["/camera/camera/color/image_raw"]
    assert frames["received"] == 46 and 0 < frames["decoded"] <= frames["stamp_read"] < frames["received"]
    assert metrics["policy_latency"]["simulated_ms"]["max"] <= 50 + 1e-9
    assert "joint RMSE vs recording" in stdout
    report = (out / "report.md").read_text()
    for png in ("joints.png", "ee_path.png", "interventions.png", "latency.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in report
    assert "metrics.json" in report
    assert f"camera `/camera/camera/color/image_raw`: 46 frames, {frames['stamp_read']} looked at" in report


def test_no_recorded_commands_is_stated_in_metrics_and_report(tmp_path, capsys, recorded_bag):
    bag, policy = recorded_bag
    code, stdout, _ = _run(capsys, bag, "--robot", "franka", "--policy", policy, "--out", tmp_path,
                           "--actions-topic", ACTIONS_TOPIC, "--remap",
                           "/joint_trajectory_controller/joint_trajectory:=/elsewhere")
    assert code == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["comparison"]["available"] is False and metrics["joint_rmse"] is None
    assert "Nothing to compare" in (tmp_path / "report.md").read_text()
    assert "no comparison" in stdout


def test_sweep_writes_one_table_row_per_setting(tmp_path, capsys, recorded_bag):
    bag, policy = recorded_bag
    code, stdout, _ = _run(capsys, bag, "--robot", "franka", "--policy", policy, "--out", tmp_path,
                           "--actions-topic", ACTIONS_TOPIC, "--latency", 100, "--sweep", "--sweep-modes", "sync,async",
                           "--sweep-thresholds", "0.5,0.8", "--sweep-blend-steps", "0,5")
    assert code == 0
    rows = json.loads((tmp_path / "sweep.json").read_text())
    assert [r["setting"] for r in rows] == [
        "sync execute_steps=horizon", "async threshold=0.5 blend=crossfade:0", "async threshold=0.5 blend=crossfade:5",
        "async threshold=0.8 blend=crossfade:0", "async threshold=0.8 blend=crossfade:5"]
    assert all(r["mean joint RMSE"] > 0 for r in rows)
    assert "| setting |" in (tmp_path / "sweep.md").read_text() and "async threshold=0.8" in stdout
    assert (tmp_path / "sweep.csv").read_text().count("\n") == 6


@pytest.mark.parametrize("argv, problem", [
    (["{missing}", "--robot", "franka", "--policy", "{policy}", "--out", "{out}"], "no such file or directory"),
    (["{bag}", "--robot", "franka", "--policy", "{policy}", "--out", "{out}", "--remap", "/a=/b"], "FROM:=TO"),
    (["{bag}", "--robot", "franka", "--policy", "{policy}", "--out", "{out}", "--actions-topic", "/nope"],
     "no topic /nope"),
    (["{bag}", "--robot", "ur5", "--policy", "{policy}", "--out", "{out}", "--actions-topic", ACTIONS_TOPIC],
     "robot ur5"),
    (["{bag}", "--robot", "franka", "--policy", "{policy}", "--out", "{out}", "--latency", "-5"],
     "latency: expected >= 0"),
    (["{bag}", "--robot", "franka", "--out", "{out}"], "--robot, --policy and --out are required"),
    (["{bag}", "--robot", "franka", "--policy", "{policy}", "--out", "{out}", "--sweep", "--sweep-thresholds", "x"],
     "--sweep-thresholds"),
    (["{bag}", "--robot", "franka", "--policy", "{policy}", "--out", "{out}", "--safety", "{safety}"],
     "velocity_scale"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, recorded_bag, argv, problem):
    bag, policy = recorded_bag
    safety = tmp_path / "safety.yaml"
    safety.write_text("limit_scale: {velocity: 2.0}\n")
    values = {"missing": tmp_path / "absent", "policy": policy, "out": tmp_path / "out", "bag": bag,
              "safety": safety}
    code, _, stderr = _run(capsys, *[a.format(**values) for a in argv])
    assert code == 2
    assert problem in stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert not (tmp_path / "out").exists()  # nothing half-written
