"""The native `lerobot` backend against checkpoints and actions written by real LeRobot 0.4.4 (test/data/lerobot/,
see its README and make_checkpoints.py): the same inputs give the same actions (<= 1e-4), through our executor in
the mode the checkpoint prescribes; every broken checkpoint or mapping is one line naming the file and field."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from vla_ros.core.errors import ConfigError
from vla_ros.core.executor import ChunkExecutor, ExecutorConfig
from vla_ros.core.policies import ObservationError, make_policy
from vla_ros.core.policy_worker import PolicyWorker
from vla_ros.core.types import Observation
from vla_ros.resources import policy_config_dir

DATA = Path(__file__).parent / "data" / "lerobot"
ACT = ("act_aloha", "act_env_ensemble")
DIFFUSION = ("diffusion_franka", "diffusion_ddpm_env")
RATE_HZ = 10.0
TOLERANCE = 1e-4


def checkpoint_config(name: str) -> dict:
    return json.loads((DATA / name / "pretrained_model" / "config.json").read_text())


def policy_config(name: str, checkpoint: Path | None = None, **overrides) -> dict:
    """A robot-less mapping: camera <feature suffix>, joints "<feature>/<i>" (identity state values)."""
    config = checkpoint_config(name)
    features = {}
    for key, feature in config["input_features"].items():
        if feature["type"] == "VISUAL":
            features[key] = {"from": "image", "camera": key.split(".")[-1]}
        else:
            features[key] = {"from": "state", "parts": [{"joints": [f"{key}/{i}" for i in range(feature["shape"][0])]}]}
    action_dim = config["output_features"]["action"]["shape"][0]
    reference = np.load(DATA / name / "reference.npz")
    result = {"backend": "lerobot", "name": name, "checkpoint": str(checkpoint or DATA / name / "pretrained_model"),
              "rate_hz": RATE_HZ, "features": features, "seed": int(reference["noise_seed"]),
              "action_space": {"kind": "joint_pos", "arms": ["arm"], "joints_per_arm": [action_dim - 1]}}
    result.update(overrides)
    return result


def observation_at(name: str, reference, t: int) -> Observation:
    images, joints = {}, {}
    for key, feature in checkpoint_config(name)["input_features"].items():
        value = reference[f"input/{key}"][t]
        if feature["type"] == "VISUAL":
            images[key.split(".")[-1]] = value
        else:
            joints.update({f"{key}/{i}": float(v) for i, v in enumerate(value)})
    return Observation(images, joints, "", t / RATE_HZ)


def action_std(name: str) -> np.ndarray:
    stats = load_file(str(DATA / name / "pretrained_model" /
                          "policy_postprocessor_step_0_unnormalizer_processor.safetensors"))
    config = checkpoint_config(name)
    low, high = {"MEAN_STD": ("mean", "std"), "MIN_MAX": ("min", "max")}[config["normalization_mapping"]["ACTION"]]
    return (stats[f"action.{high}"] - (0 if low == "mean" else stats[f"action.{low}"])).numpy()


def assert_reproduces(ours: np.ndarray, theirs: np.ndarray, name: str, where: str = "") -> float:
    error = float(np.abs(ours - theirs).max())
    assert error <= TOLERANCE, f"{name}{where}: max |ours - LeRobot| = {error:.3g}"
    # and in the network's normalised units, so a small action spread cannot hide a mismatch
    assert float(np.abs((ours - theirs) / action_std(name)).max()) <= TOLERANCE
    return error


@pytest.mark.parametrize("name", ACT)
def test_act_chunks_reproduce_lerobot(name):
    torch.set_num_threads(1)
    reference = np.load(DATA / name / "reference.npz")
    policy = make_policy(policy_config(name))
    for t, expected in enumerate(reference["chunks"]):
        chunk = policy.infer(observation_at(name, reference, t))
        assert chunk.actions.shape == expected.shape and chunk.stamp == t / RATE_HZ
        assert_reproduces(chunk.actions, expected, name)
    # the chunks do depend on the observation (a reference that cannot tell inputs apart would prove nothing)
    assert np.abs(np.diff(reference["chunks"], axis=0) / action_std(name)).max() > 100 * TOLERANCE


@pytest.mark.parametrize("name", ACT + DIFFUSION)
def test_our_executor_reproduces_lerobot_select_action(name):
    """Our chunks through our executor, in the mode the checkpoint prescribes (ACT: its action queue of
    n_action_steps or temporal ensembling; Diffusion: n_action_steps per inference, with an observation history
    from every step), give LeRobot's select_action at every step."""
    torch.set_num_threads(1)
    reference = np.load(DATA / name / "reference.npz")
    policy = make_policy(policy_config(name))
    config = checkpoint_config(name)
    expected_mode = "ensemble" if config.get("temporal_ensemble_coeff") is not None else "sync"
    assert policy.metadata.executor["mode"] == expected_mode
    executor = ChunkExecutor(ExecutorConfig(control_dt=1.0 / RATE_HZ, **policy.metadata.executor), policy.metadata)
    infers = 0
    for t, expected in enumerate(reference["select_action"]):
        now, observation = t / RATE_HZ, observation_at(name, reference, t)

        def infer():
            nonlocal infers
            infers += 1
            assert executor.submit(policy.infer(observation), now)

        if t == 0 or expected_mode == "ensemble":
            infer()
        tick = executor.tick(now)
        if tick.hold == "awaiting_chunk":  # sync: the robot waits for the next chunk, as LeRobot's queue does
            infer()
            tick = executor.tick(now)
        elif t > 0 and hasattr(policy, "observe"):
            policy.observe(observation)
        assert tick.action is not None, (t, tick.hold)
        assert_reproduces(tick.action, expected, name, f" step {t}")
    steps = len(reference["select_action"])
    assert infers == (steps if expected_mode == "ensemble" else -(-steps // config["n_action_steps"]))


def test_diffusion_history_and_noise_matter():
    """The reference is sensitive to what the test claims to check: another seed, or no history, changes it."""
    name = "diffusion_franka"
    reference = np.load(DATA / name / "reference.npz")
    n = checkpoint_config(name)["n_action_steps"]
    other_seed = make_policy(policy_config(name, seed=int(reference["noise_seed"]) + 1))
    assert np.abs(other_seed.infer(observation_at(name, reference, 0)).actions[:n]
                  - reference["select_action"][:n]).max() > 0.01
    no_history = make_policy(policy_config(name))
    first = no_history.infer(observation_at(name, reference, 0))
    second = no_history.infer(observation_at(name, reference, n))  # step n - 1 never shown: slot filled
    assert first.info["history_filled"] == 1 and second.info["history_filled"] == 1
    assert np.abs(second.actions[:n] - reference["select_action"][n:2 * n]).max() > 0.01
    assert first.horizon == checkpoint_config(name)["horizon"] - 1  # from the current step on


def test_swapped_backbone_tensors_are_caught(tmp_path):
    """Two same-shaped ResNet tensors exchanged: loads (names and shapes fit) but no longer reproduces LeRobot."""
    name = "act_aloha"
    copy = tmp_path / "pretrained_model"
    shutil.copytree(DATA / name / "pretrained_model", copy)
    weights = load_file(str(copy / "model.safetensors"))
    a, b = "model.backbone.layer1.0.conv1.weight", "model.backbone.layer1.0.conv2.weight"
    weights[a], weights[b] = weights[b], weights[a]
    save_file(weights, str(copy / "model.safetensors"))
    reference = np.load(DATA / name / "reference.npz")
    chunk = make_policy(policy_config(name, checkpoint=copy)).infer(observation_at(name, reference, 0))
    assert np.abs((chunk.actions - reference["chunks"][0]) / action_std(name)).max() > 0.01


def test_shipped_yamls_map_the_test_checkpoints_onto_the_robots(aloha, franka):
    for yaml_name, name, robot, mode, steps in (("lerobot_act", "act_aloha", aloha, "sync", 10),
                                                ("lerobot_diffusion", "diffusion_franka", franka, "sync", 8)):
        path = policy_config_dir() / f"{yaml_name}.yaml"
        config = yaml.safe_load(path.read_text())
        config["checkpoint"] = str(DATA / name / "pretrained_model")
        policy = make_policy(config, robot, source=path)
        assert policy.metadata.executor == {"mode": mode, "execute_steps": steps}
        assert set(policy.metadata.cameras) <= {c.name for c in robot.cameras}
        images = {c.name: np.full((c.height, c.width, 3), 128, np.uint8) for c in robot.cameras}
        chunk = policy.infer(Observation(images, dict(zip(robot.joint_names, robot.home.tolist())), "", 1.0))
        assert chunk.actions.shape == (policy.metadata.horizon, policy.metadata.action_space.dim)


# --- bad input: one line naming the file and field -------------------------------------------------------------------


def broken_copy(tmp_path, name="act_env_ensemble") -> Path:
    copy = tmp_path / "pretrained_model"
    shutil.copytree(DATA / name / "pretrained_model", copy)
    return copy


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def edit_stats(path: Path, change) -> None:
    stats = load_file(str(path))
    change(stats)
    save_file(stats, str(path))


PRE_STATS = "policy_preprocessor_step_3_normalizer_processor.safetensors"
BREAKS = {
    "missing config": (lambda d: (d / "config.json").unlink(), r"config\.json: file not found"),
    "corrupt config": (lambda d: (d / "config.json").write_text("{not json"), r"config\.json: cannot read JSON"),
    "unknown type": (lambda d: edit_json(d / "config.json", lambda c: c.update(type="pi0")),
                     r"config\.json: type: policy type 'pi0' is not supported natively \(supported: act, diffusion\)"),
    "missing weights": (lambda d: (d / "model.safetensors").unlink(), r"model\.safetensors: file not found"),
    "corrupt weights": (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:100]),
                        r"model\.safetensors: not a readable safetensors file"),
    "missing weight": (lambda d: edit_stats(d / "model.safetensors", lambda w: w.pop("model.action_head.weight")),
                       r"model\.safetensors: model\.action_head\.weight: missing from the checkpoint"),
    "weight shape": (lambda d: edit_stats(d / "model.safetensors", lambda w: w.update(
        {"model.action_head.bias": torch.zeros(9)})),
                     r"model\.action_head\.bias: shape \(9,\) in the checkpoint, config\.json implies \(8,\)"),
    "missing postprocessor": (lambda d: (d / "policy_postprocessor.json").unlink(),
                              r"policy_postprocessor\.json: file not found"),
    "missing stats": (lambda d: (d / PRE_STATS).unlink(), PRE_STATS.replace(".", r"\.") + ": file not found"),
    "stats shape": (lambda d: edit_stats(d / PRE_STATS, lambda s: s.update(
        {"observation.state.q01": torch.zeros(7)})),
                    r"observation\.state\.q01: shape \(7,\) does not fit feature observation\.state of shape \(8,\)"),
    "stat missing": (lambda d: edit_stats(d / PRE_STATS, lambda s: s.pop("observation.state.q99")),
                     r"observation\.state\.q99: missing; QUANTILES normalisation of observation\.state"),
    "unknown step": (lambda d: edit_json(d / "policy_preprocessor.json", lambda p: p["steps"].insert(
        0, {"registry_name": "tokenizer_processor", "config": {}})),
                     r"policy_preprocessor\.json: steps\[0\]\.registry_name: processor step 'tokenizer_processor' "
                     r"is not supported"),
}


@pytest.mark.parametrize("case", BREAKS)
def test_broken_checkpoint_is_one_line_naming_file_and_field(tmp_path, case):
    copy = broken_copy(tmp_path)
    breaker, message = BREAKS[case]
    breaker(copy)
    with pytest.raises(ConfigError, match=message) as info:
        make_policy(policy_config("act_env_ensemble", checkpoint=copy))
    assert "\n" not in str(info.value) and str(copy) in str(info.value)


def test_missing_checkpoint_directory():
    with pytest.raises(ConfigError, match=r"nowhere/pretrained_model: LeRobot checkpoint directory not found"):
        make_policy(policy_config("act_env_ensemble", checkpoint=Path("/nowhere/pretrained_model")))


@pytest.mark.parametrize("change, message", [
    (lambda f: f.pop("observation.images.cam_left_wrist"),
     r"features\.observation\.images\.cam_left_wrist: input feature .* is not mapped to the robot; map it with "
     r"\{from: image, camera: NAME\}"),
    (lambda f: f["observation.images.cam_high"].update(camera="cam_top"),
     r"features\.observation\.images\.cam_high\.camera: camera 'cam_top' is not a camera of robot aloha"),
    (lambda f: f.update({"observation.images.wrist": {"from": "image", "camera": "cam_high"}}),
     r"features\.observation\.images\.wrist: not an input feature of the checkpoint"),
    (lambda f: f["observation.state"]["parts"].pop(),
     r"features\.observation\.state: the parts give 13 values, the checkpoint's observation\.state has 14"),
    (lambda f: f["observation.state"]["parts"].append({"joints": ["follower_left/knee"]}),
     r"joint 'follower_left/knee' is not a joint of robot aloha"),
    (lambda f: f.update({"observation.state": {"from": "image", "camera": "cam_high"}}),
     r"features\.observation\.state: a STATE feature: map it with \{from: state, parts: \[\.\.\.\]\}"),
])
def test_a_feature_the_robot_cannot_provide_is_one_line(aloha, tmp_path, change, message):
    config = yaml.safe_load((policy_config_dir() / "lerobot_act.yaml").read_text())
    config["checkpoint"] = str(DATA / "act_aloha" / "pretrained_model")
    change(config["features"])
    path = tmp_path / "act.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=message) as info:
        make_policy(path, aloha)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_action_space_must_match_the_checkpoint(tmp_path):
    config = policy_config("act_env_ensemble", action_space={"kind": "joint_pos", "arms": ["arm"],
                                                             "joints_per_arm": [6]})
    with pytest.raises(ConfigError, match=r"action_space: has 7 columns, the checkpoint's action has 8"):
        make_policy(config)


def test_missing_input_at_run_time_is_reported_by_the_worker_and_it_keeps_serving():
    name = "act_aloha"
    reference = np.load(DATA / name / "reference.npz")
    policy = make_policy(policy_config(name))
    good = observation_at(name, reference, 0)
    bad = Observation({"cam_high": good.images["cam_high"]}, good.joint_positions, "", good.stamp)
    with pytest.raises(ObservationError, match="no image from camera 'cam_left_wrist'"):
        policy.infer(bad)
    with PolicyWorker(policy, time.monotonic, inference_timeout=30.0) as worker:
        results = []
        for observation in (bad, good):
            assert worker.request(observation)
            while not (done := worker.poll()):
                time.sleep(0.005)
            results += done
    assert results[0].error.startswith("policy act_aloha: infer raised ObservationError") and results[0].chunk is None
    assert results[1].error is None and results[1].chunk.horizon == 10


# --- the full chain ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("robot_name, yaml_name, name, execute_steps", [
    ("aloha", "lerobot_act", "act_aloha", 10), ("franka", "lerobot_diffusion", "diffusion_franka", 8)])
def test_lerobot_checkpoint_drives_the_sim_within_limits(ros_context, tmp_path, robot_name, yaml_name, name,
                                                         execute_steps):
    """The shipped YAML with a LeRobot-written checkpoint: sim cameras + joint states -> policy_node (executor in
    the checkpoint's mode) -> safety_node -> the sim's controller topics; the independent limit checker finds no
    violation in anything sent."""
    from ros_helpers import wait_for
    from vla_ros.core.safety.independent_check import LimitChecker
    from vla_ros.core.robot import load_robot
    from vla_ros.ros.bringup import start_graph

    config = yaml.safe_load((policy_config_dir() / f"{yaml_name}.yaml").read_text())
    config["checkpoint"] = str(DATA / name / "pretrained_model")
    path = tmp_path / f"{yaml_name}.yaml"
    path.write_text(yaml.safe_dump(config))
    graph = start_graph(robot_name, str(path), sim=True, controller_interface="float64_multi_array",
                        context=ros_context)
    try:
        executor = graph.policy.chunks.config
        assert (executor.mode, executor.execute_steps) == ("sync", execute_steps)  # from the checkpoint
        start = np.array(graph.sim.q)
        # 50 commands sent (ALOHA's one command is a message on each of its four controller topics)
        assert wait_for(lambda: graph.policy.chunks.stats().accepted_chunks >= 3 and len(graph.safety.sent) >= 50,
                        30.0), (graph.policy.chunks.stats(), len(graph.safety.sent))
        moved = float(np.abs(np.array(graph.sim.q) - start).max())
        stats, worker = graph.policy.chunks.stats(), graph.policy.worker.stats()
        sent, safety_config = list(graph.safety.sent), graph.safety.filter.config
    finally:
        graph.shutdown()
    # A loaded machine can starve joint_states: the node then resets the executor and refuses the answer in flight
    # (out_of_order / expired / stale). Anything else would be a backend fault (shape, space, non-finite, dt).
    faults = set(stats.rejected_chunks) - {"out_of_order", "expired", "stale"}
    assert stats.inference_errors == 0 and not faults, (stats.last_inference_error, stats.last_rejection)
    assert worker["errors"] == 0 and worker["completed"] >= 3
    assert moved > 1e-3, "the policy's commands reached the simulated robot"
    checker = LimitChecker(load_robot(robot_name), safety_config)
    problems = [problem for command in sent for problem in checker.check(command)]
    assert len(sent) >= 50 and not problems, problems[:3]


def test_bench_policies_writes_a_row_per_backend_checkpoint(tmp_path, capsys):
    import argparse

    import vla_ros.bench.policies as bench

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--json", str(tmp_path / "out.json"), "--calls", "2", "--warmup", "0",
                              "--rows", "lerobot/act_env_ensemble", "--lerobot-python", str(tmp_path / "none")])
    assert bench.main(args) == 0
    results = json.loads((tmp_path / "out.json").read_text())
    assert results["remote"] == []  # --rows picked one local row
    row = results["local"]["lerobot/act_env_ensemble"]
    assert row["backend"] == "lerobot" and row["horizon"] == 6 and row["ours"]["p50_ms"] > 0 and "peer" not in row
    assert "lerobot/act_env_ensemble" in capsys.readouterr().out


def test_node_executor_parameters_win_over_the_checkpoint(ros_context, aloha):
    from rclpy.parameter import Parameter

    from vla_ros.ros.policy_node import PolicyNode

    config = yaml.safe_load((policy_config_dir() / "lerobot_act.yaml").read_text())
    config["checkpoint"] = str(DATA / "act_aloha" / "pretrained_model")
    policy = make_policy(config, aloha, source=policy_config_dir() / "lerobot_act.yaml")
    node = PolicyNode(robot=aloha, policy=policy, context=ros_context,
                      parameter_overrides=[Parameter("executor.mode", value="async")])
    try:
        # mode given to the node; execute_steps still the checkpoint's n_action_steps
        assert (node.chunks.config.mode, node.chunks.config.execute_steps) == ("async", 10)
    finally:
        node.destroy_node()
