"""`vla-ros evaluate`: a directory of bags (sqlite3 and mcap, rosbags- and rclpy-serialized, one corrupt) x a small
sweep on a local Ray; per-task results, the aggregated report, resuming, and one-line errors for bad input."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import yaml
from bag_helpers import float_array_msg, scenario_messages, trajectory_msg, write_bag

from vla_ros import cli
from vla_ros.core.robot import load_robot

START = 100.0
ACTIONS_TOPIC = "/vla_ros/actions"
SWEEP = ["--sweep", "--sweep-modes", "sync,async", "--sweep-thresholds", "0.5", "--sweep-blend-steps", "0,5"]


def _bag(path, storage: str, rclpy_every: int, phase: float):
    """A 1 s franka episode with an ee_delta action stream and recorded arm commands."""
    robot = load_robot("franka")
    messages = scenario_messages(robot, duration=1.0, start=START, rclpy_every=rclpy_every)
    for k in range(20):
        t = START + k * 0.1
        messages.append((ACTIONS_TOPIC, t, float_array_msg([0.002 * np.sin(t + phase), 0, 0.001, 0, 0, 0, 1.0],
                                                           flavor="rclpy" if rclpy_every else "rosbags")))
    controller, arm = robot.controllers[0], robot.arm("arm")
    for k in range(51):
        t = START + k * 0.02
        messages.append((controller.topic, t, trajectory_msg(controller.joints, arm.home + 0.01 * np.sin(t + phase),
                                                             0.02, flavor="rclpy" if k % 2 else "rosbags")))
    return write_bag(path, storage, messages)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """bags/: two mcap and one sqlite3 bag directory (one nested, one all rclpy-serialized), a loose .mcap file and a
    corrupt bag; and a playback policy playing each bag's own actions."""
    root = tmp_path_factory.mktemp("fleet")
    bags = root / "bags"
    _bag(bags / "ep0", "mcap", rclpy_every=3, phase=0.0)
    _bag(bags / "ep1", "sqlite3", rclpy_every=1, phase=0.5)  # every message serialized by rclpy
    _bag(bags / "day2" / "ep2", "mcap", rclpy_every=0, phase=1.0)
    loose = _bag(root / "loose", "mcap", rclpy_every=2, phase=1.5)
    shutil.move(next(loose.glob("*.mcap")), bags / "ep3.mcap")
    corrupt = bags / "corrupt"
    corrupt.mkdir()
    for part in (bags / "ep0").iterdir():  # its storage file destroyed
        (corrupt / part.name).write_bytes(part.read_bytes() if part.name == "metadata.yaml" else b"\x00garbage" * 64)
    policy = root / "playback.yaml"
    policy.write_text(yaml.safe_dump({
        "backend": "playback", "name": "from_bag", "horizon": 10, "recording": "unused.npz",
        "action_space": {"kind": "ee_delta", "frame": "base", "rotation": "rpy",
                         "gripper": {"open": 1.0, "closed": 0.0}},
    }))
    return root, bags, policy


def _run(capsys, command: str, *argv) -> tuple[int, str, str]:
    code = cli.main([command, *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def _common(policy, out) -> list:
    return ["--robot", "franka", "--policy", policy, "--actions-topic", ACTIONS_TOPIC, "--out", out,
            "--latency", 40, "--jitter", 10]


@pytest.fixture(scope="module")
def evaluated(fleet, tmp_path_factory):
    """One evaluation of the whole directory x 3 settings on a 2-CPU local Ray."""
    root, bags, policy = fleet
    out = tmp_path_factory.mktemp("evaluation")
    code = cli.main(["evaluate", str(bags), *map(str, _common(policy, out)), *SWEEP, "--workers", "2"])
    return code, out


def test_every_bag_and_setting_is_one_task_and_a_corrupt_bag_fails_alone(evaluated):
    import ray

    code, out = evaluated
    assert code == 1  # a task failed
    assert not ray.is_initialized()  # the local Ray was shut down
    summary = json.loads((out / "summary.json").read_text())
    tasks = summary["tasks"]
    assert len(tasks) == 5 * 3
    assert sorted({t["bag_id"] for t in tasks}) == ["bags__corrupt", "bags__day2__ep2", "bags__ep0", "bags__ep1",
                                                    "bags__ep3.mcap"]
    failed = [t for t in tasks if t["status"] != "ok"]
    assert {t["bag_id"] for t in failed} == {"bags__corrupt"} and len(failed) == 3
    assert all("bags/corrupt" in t["error"] and "\n" not in t["error"] for t in failed)
    storages, trailing = set(), []
    for task in tasks:
        directory = out / "runs" / task["bag_id"]
        result = json.loads(next(p for p in directory.glob("*/result.json")
                                 if json.loads(p.read_text())["setting"] == task["setting"]).read_text())
        assert result["status"] == task["status"]
        if task["status"] == "ok":
            metrics = json.loads((out / task["report"]).with_name("metrics.json").read_text())
            storages.add(metrics["run"]["storage"])
            trailing.append(metrics["run"]["messages_with_trailing_bytes"])
            assert metrics["run"]["executor"]["mode"] in ("sync", "async") and metrics["comparison"]["available"]
            # capture -> delivery: the injected 40 +- 10 ms plus the frame's age when requested (30 Hz, 50 Hz ticks)
            assert task["row"]["mean joint RMSE"] > 0 and 30 <= task["row"]["latency p95 [ms]"] <= 50 + 34 + 20
    assert storages == {"sqlite3", "mcap"} and max(trailing) > 0  # rclpy-serialized messages went through


def test_the_aggregated_report_compares_settings_and_links_each_bag(evaluated):
    _, out = evaluated
    summary = json.loads((out / "summary.json").read_text())
    settings = ["sync execute_steps=horizon", "async threshold=0.5 blend=crossfade:0",
                "async threshold=0.5 blend=crossfade:5"]
    assert list(summary["settings"]) == settings
    assert summary["paired_bags"] == 4
    for setting in settings:
        figures = summary["settings"][setting]
        assert figures["bags_ok"] == 4 and figures["bags_failed"] == 1
        assert figures["distributions"]["mean joint RMSE"]["count"] == 4
    best = summary["best"]["mean joint RMSE"]
    means = {s: summary["settings"][s]["paired_mean"]["mean joint RMSE"] for s in settings}
    assert best["value"] == min(means.values()) and means[best["setting"]] == best["value"]
    report = (out / "report.md").read_text()
    assert "## Settings compared" in report and "## Failed tasks" in report and "## Distributions across bags" in report
    assert f"**{best['value']:.4g}**" in report
    links = [line.split("[report](")[1].split(")")[0] for line in report.splitlines() if "[report](" in line]
    assert len(links) == 12 and all((out / link).is_file() for link in links)
    for png in ("plots/distributions.png", "plots/interventions.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({png})" in report


def test_a_task_writes_what_vla_ros_replay_writes_for_its_bag(evaluated, fleet, capsys, tmp_path):
    """Evaluate and replay call the same core function: same metrics for the same bag and setting."""
    _, out = evaluated
    _, bags, policy = fleet
    code, _, _ = _run(capsys, "replay", bags / "ep1", *_common(policy, tmp_path), "--executor", "async",
                      "--threshold", 0.5, "--blend-steps", 5)
    assert code == 0
    replayed = json.loads((tmp_path / "metrics.json").read_text())
    evaluated_ = json.loads((out / "runs/bags__ep1/async-threshold=0.5-blend=crossfade-5/metrics.json").read_text())
    for metrics in (replayed, evaluated_):
        metrics["policy_latency"].pop("inference_wall_ms")  # this machine's wall time
    assert evaluated_ == replayed


def test_a_rerun_skips_finished_tasks_without_starting_ray(evaluated, fleet, capsys, monkeypatch):
    from vla_ros.commands import evaluate

    _, out = evaluated
    _, bags, policy = fleet
    shutil.rmtree(bags / "corrupt")  # the only unfinished tasks

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray started although every task was finished")

    monkeypatch.setattr(evaluate, "ray_session", no_ray)
    code, stdout, _ = _run(capsys, "evaluate", bags, *_common(policy, out), *SWEEP, "--workers", "2")
    assert code == 0
    assert "12 ok, 0 failed, 12 resumed" in stdout
    assert "12 finished by an earlier run" in (out / "report.md").read_text()


def test_a_changed_setting_is_not_taken_for_finished(evaluated, fleet):
    """Resuming matches tasks by a fingerprint of all they depend on: change one thing and the task is redone."""
    import argparse

    from vla_ros.commands import evaluate
    from vla_ros.core.replay.tasks import finished, plan

    _, out = evaluated
    _, bags, policy = fleet
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    args = parser.parse_args([str(a) for a in (bags, *_common(policy, out), *SWEEP)])
    setup, _, _, found, configs, _ = evaluate._setup(args)
    found = [(path, bag_id) for path, bag_id in found if bag_id == "bags__ep0"]
    tasks = plan(setup, found, configs)
    assert all(finished(out, task) is not None for task in tasks)  # what the evaluation ran
    for changed in (dataclasses.replace(setup, options=dataclasses.replace(setup.options, latency=0.1)),
                    dataclasses.replace(setup, plots=True)):
        assert finished(out, plan(changed, found, configs)[0]) is None
    assert finished(out, plan(setup, found, [dataclasses.replace(configs[0], execute_steps=3)])[0]) is None


@pytest.mark.parametrize("argv, problem", [
    (["{missing}"], "no such file or directory"),
    (["{empty}"], "no rosbag2 bag in it"),
    (["{bags}", "--workers", "0"], "--workers: expected at least 1"),
    (["{bags}", "--workers", "2", "--address", "127.0.0.1:6379"], "--workers sizes the local Ray"),
    (["{bags}", "--sweep", "--sweep-blend-steps", "x"], "--sweep-blend-steps"),
    (["{bags}", "--latency", "-1"], "latency: expected >= 0"),
    (["{bags}", "--remap", "/a=/b"], "FROM:=TO"),
    (["{bags}", "--out", "{file}"], "exists and is not a directory"),
    (["{bags}", "--executor", "sync", "--execute-steps", "50"], "exceeds policy"),
])
def test_bad_input_is_one_line_and_exit_code_2(fleet, tmp_path, capsys, argv, problem):
    _, bags, policy = fleet
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    values = {"missing": tmp_path / "absent", "empty": tmp_path / "empty", "bags": bags, "file": tmp_path / "file"}
    baseline = ["--robot", "franka", "--policy", "baseline", "--out", tmp_path / "out"]
    code, _, stderr = _run(capsys, "evaluate", *baseline, *[a.format(**values) for a in argv])
    assert code == 2
    assert problem in stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert not (tmp_path / "out").exists()  # checked before anything is written
