"""Policy inference time per backend on this CPU (torch.set_num_threads(1)): one `infer` (preprocessing, network,
postprocessing) per observation, p50 / p95 / mean over `--repeats` calls after `--warmup`.

Rows are `Row(name, backend, build)` entries in ROWS, `build(args) -> (policy, observation)` or None when the row's
inputs are absent; add a backend by appending a row. The LeRobot rows run the test checkpoints that real LeRobot
0.4.4 wrote (test/data/lerobot/, a checkout only); with `--lerobot-python` (a venv with lerobot==0.4.4, see
test/data/lerobot/make_checkpoints.py) the same checkpoint and inputs are also timed in real LeRobot
(preprocessor + predict_action_chunk + postprocessor) in a subprocess, and the row reports LeRobot / ours.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

DEFAULT_CHECKPOINTS = Path(__file__).resolve().parents[2] / "test" / "data" / "lerobot"


@dataclass(frozen=True)
class Row:
    name: str
    backend: str
    build: Callable[[argparse.Namespace], tuple | None]
    peer: Callable[[argparse.Namespace], dict | None] | None = None


def _lerobot_policy(name: str, args: argparse.Namespace):
    """The test checkpoint `name` with a robot-less feature mapping and its reference inputs (step 0)."""
    from vla_ros.core.policies import make_policy
    from vla_ros.core.types import Observation

    directory = args.checkpoints / name
    if not (directory / "pretrained_model" / "config.json").is_file():
        return None
    config = json.loads((directory / "pretrained_model" / "config.json").read_text())
    reference = np.load(directory / "reference.npz")
    features, images, joints = {}, {}, {}
    for key, feature in config["input_features"].items():
        value = reference[f"input/{key}"][0]
        if feature["type"] == "VISUAL":
            features[key] = {"from": "image", "camera": key}
            images[key] = value
        else:
            names = [f"{key}/{i}" for i in range(feature["shape"][0])]
            features[key] = {"from": "state", "parts": [{"joints": names}]}
            joints.update(zip(names, map(float, value)))
    action_dim = config["output_features"]["action"]["shape"][0]
    policy = make_policy({
        "backend": "lerobot", "name": name, "checkpoint": str(directory / "pretrained_model"), "rate_hz": 10.0,
        "features": features, "seed": 0,
        "action_space": {"kind": "joint_pos", "arms": ["arm"], "joints_per_arm": [action_dim - 1]},
    })
    return policy, Observation(images, joints, "", 0.0)


# Run by the peer interpreter (real LeRobot); prints {"times_s": [...]} for one checkpoint, same inputs as ours.
_LEROBOT_PEER = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np, torch
torch.set_num_threads(1)
from lerobot.configs.policies import PreTrainedConfig
from lerobot.configs.types import FeatureType
from lerobot.policies.factory import get_policy_class, make_pre_post_processors
directory, warmup, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
config = PreTrainedConfig.from_pretrained(directory + "/pretrained_model")
policy = get_policy_class(config.type).from_pretrained(directory + "/pretrained_model").eval()
pre, post = make_pre_post_processors(policy.config, pretrained_path=directory + "/pretrained_model")
reference = np.load(directory + "/reference.npz")
raw = {}
for key, ft in policy.config.input_features.items():
    value = torch.from_numpy(reference["input/" + key][0])
    raw[key] = value.permute(2, 0, 1).float() / 255.0 if ft.type is FeatureType.VISUAL else value
policy.reset()
policy.select_action(pre(dict(raw)))  # fills Diffusion's observation queues
times = []
for i in range(warmup + repeats):
    start = time.perf_counter()
    with torch.no_grad():
        batch = pre(dict(raw))
        if config.type == "diffusion":
            batch["observation.images"] = torch.stack([batch[k] for k in policy.config.image_features], dim=-4) \
                if policy.config.image_features else None
            batch = {k: v for k, v in batch.items() if v is not None}
        post(policy.predict_action_chunk(batch))
    if i >= warmup:
        times.append(time.perf_counter() - start)
print(json.dumps({"times_s": times, "torch": torch.__version__}))
"""


def _lerobot_peer(name: str, args: argparse.Namespace) -> dict | None:
    python = args.lerobot_python
    if python is None or not Path(python).is_file():
        return None
    result = subprocess.run([str(python), "-c", _LEROBOT_PEER, str(args.checkpoints / name), str(args.warmup),
                             str(args.repeats)], capture_output=True, text=True, env=dict(os.environ), timeout=600)
    if result.returncode != 0:
        return {"error": (result.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def _lerobot_row(name: str) -> Row:
    return Row(f"lerobot/{name}", "lerobot", lambda args: _lerobot_policy(name, args),
               lambda args: _lerobot_peer(name, args))


ROWS = [_lerobot_row(name) for name in ("act_aloha", "act_env_ensemble", "diffusion_franka", "diffusion_ddpm_env")]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, required=True, help="write the results here")
    parser.add_argument("--repeats", type=int, default=20, help="timed inferences per row (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed inferences first (default 3)")
    parser.add_argument("--rows", nargs="*", help="row names to run (default: all)")
    parser.add_argument("--checkpoints", type=Path, default=DEFAULT_CHECKPOINTS,
                        help="directory of the LeRobot test checkpoints (default: test/data/lerobot of this checkout)")
    parser.add_argument("--lerobot-python", type=Path, default=os.environ.get("VLA_ROS_LEROBOT_PYTHON"),
                        help="a python with lerobot==0.4.4 to time the same checkpoints in (the peer; optional; "
                             "default $VLA_ROS_LEROBOT_PYTHON)")


def _summary(times: list[float]) -> dict:
    ms = 1e3 * np.asarray(times)
    return {"p50_ms": round(float(np.median(ms)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3),
            "mean_ms": round(float(ms.mean()), 3), "n": len(ms)}


def main(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(1)
    rows = {}
    for row in ROWS:
        if args.rows and row.name not in args.rows:
            continue
        built = row.build(args)
        if built is None:
            rows[row.name] = {"backend": row.backend, "skipped": "inputs not found"}
            continue
        policy, observation = built
        times = []
        for i in range(args.warmup + args.repeats):
            start = time.perf_counter()
            policy.infer(observation)
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
        entry = {"backend": row.backend, "horizon": policy.metadata.horizon, "ours": _summary(times)}
        peer = row.peer(args) if row.peer is not None else None
        if peer is not None and "times_s" in peer:
            entry["peer"] = {"name": "lerobot 0.4.4", "torch": peer["torch"], **_summary(peer["times_s"])}
            entry["peer_over_ours_p50"] = round(entry["peer"]["p50_ms"] / entry["ours"]["p50_ms"], 2)
        elif peer is not None:
            entry["peer"] = peer
        rows[row.name] = entry
    results = {"bench": "policies", "torch_threads": 1, "rows": rows, "environment": {
        "torch": torch.__version__, "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "python": platform.python_version(), "load_average_1min": round(os.getloadavg()[0], 2)}}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    _print_table(results)
    return 0


def _print_table(results: dict) -> None:
    env = results["environment"]
    print(f"torch {env['torch']}, 1 thread, {env['cpu_count']} CPUs, load average {env['load_average_1min']}")
    print(f"{'row':<32}{'p50 ms':>9}{'p95 ms':>9}{'peer p50':>10}{'peer/ours':>11}")
    for name, row in results["rows"].items():
        if "skipped" in row:
            print(f"{name:<32}  skipped: {row['skipped']}")
            continue
        peer = row.get("peer", {})
        peer_p50 = f"{peer['p50_ms']:.3f}" if "p50_ms" in peer else "-"
        print(f"{name:<32}{row['ours']['p50_ms']:>9.3f}{row['ours']['p95_ms']:>9.3f}{peer_p50:>10}"
              f"{row.get('peer_over_ours_p50', '-'):>11}")
