"""Policy backends on this CPU, torch with one thread (torch.set_num_threads(1)); p50 / p90 / p99 per row.

Local rows (`lerobot/<checkpoint>`): one `infer` (preprocessing, network, postprocessing) of the test checkpoints that
real LeRobot 0.4.4 wrote (test/data/lerobot/, a checkout only); with `--lerobot-python` (a venv with lerobot==0.4.4,
see test/data/lerobot/make_checkpoints.py) the same checkpoint and inputs are also timed in real LeRobot
(preprocessor + predict_action_chunk + postprocessor) in a subprocess, and the row reports LeRobot / ours.

Remote rows (`<backend>/<config>`): a shipped policy config on its robot calls the loopback server of its protocol
(vla_ros.peer_servers) on 127.0.0.1, whose policy answers a constant chunk of the configured shape at once. The time
is what the client adds to a real server's inference: preprocessing the camera frames, encoding, the loopback
transport, the server's own decoding / encoding (in this process: both share the 2 cores and the GIL), decoding and
checks. The openpi row also times the transport alone (our client sending a prebuilt request) against openpi's own
client (openpi_client.WebsocketClientPolicy) sending the same request to the same server, and reports the ratio. The
LeRobot row times where our client differs from LeRobot's robot_client, reading a GetActions payload (restricted
unpickler vs its plain pickle.loads), on the same payload. The other peers' clients need their whole stacks (GR00T)
or are plain scripts (OpenVLA's requests.post), so those rows have no peer.

Add a backend by appending a LocalRow or a RemoteRow.
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
from typing import Any, Callable

import json_numpy
import numpy as np

from vla_ros.core.errors import ConfigError
from vla_ros.peer_servers import LoopbackGr00tServer, LoopbackLeRobotServer, LoopbackOpenpiServer, \
    LoopbackOpenVLAServer

DEFAULT_CHECKPOINTS = Path(__file__).resolve().parents[2] / "test" / "data" / "lerobot"


@dataclass(frozen=True)
class LocalRow:
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
                             str(args.calls)], capture_output=True, text=True, env=dict(os.environ), timeout=600)
    if result.returncode != 0:
        return {"error": (result.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def _lerobot_row(name: str) -> LocalRow:
    return LocalRow(f"lerobot/{name}", "lerobot", lambda args: _lerobot_policy(name, args),
                    lambda args: _lerobot_peer(name, args))


LOCAL_ROWS = [_lerobot_row(name) for name in ("act_aloha", "act_env_ensemble", "diffusion_franka",
                                               "diffusion_ddpm_env")]


@dataclass(frozen=True)
class RemoteRow:
    backend: str
    config: str
    robot: str
    server: Callable[[], Any]  # -> a started loopback server (a context manager)
    endpoint: Callable[[Any], dict]  # server -> the config keys that point the policy at it
    overrides: tuple[tuple[str, Any], ...] = ()


def _gr00t_n15_reply(data):
    return {"action.left_arm": np.zeros((16, 6)), "action.left_gripper": np.ones(16),
            "action.right_arm": np.zeros((16, 6)), "action.right_gripper": np.ones(16)}


def _gr00t_n16_reply(data):
    return [{key: np.zeros((1, 8, 1), np.float32) for key in ("x", "y", "z", "roll", "pitch", "yaw", "gripper")}, {}]


REMOTE_ROWS = (
    RemoteRow("openpi_ws", "openpi_pi0_aloha", "aloha",
              lambda: LoopbackOpenpiServer(lambda obs: {"actions": np.zeros((50, 14))}), lambda s: {"url": s.url}),
    RemoteRow("openvla_rest", "openvla_bridge", "widowx",
              lambda: LoopbackOpenVLAServer(json_numpy.dumps(np.zeros(7))), lambda s: {"url": s.url}),
    RemoteRow("openvla_oft_rest", "openvla_oft_aloha", "aloha",
              lambda: LoopbackOpenVLAServer(json_numpy.dumps(list(np.zeros((25, 14))))), lambda s: {"url": s.url}),
    RemoteRow("gr00t_zmq", "gr00t_n15_aloha", "aloha", lambda: LoopbackGr00tServer(_gr00t_n15_reply),
              lambda s: {"url": s.url}),
    RemoteRow("gr00t_zmq", "gr00t_n15_aloha", "aloha", lambda: LoopbackGr00tServer(_gr00t_n15_reply, "torch"),
              lambda s: {"url": s.url}, (("serialization", "torch"),)),
    RemoteRow("gr00t_zmq", "gr00t_n16_widowx", "widowx", lambda: LoopbackGr00tServer(_gr00t_n16_reply),
              lambda s: {"url": s.url}),
    RemoteRow("lerobot_async_grpc", "lerobot_async_act_aloha", "aloha",
              lambda: LoopbackLeRobotServer(lambda obs: np.zeros((100, 14))), lambda s: {"address": s.address}),
)


def _observation(robot, seed: int):
    from vla_ros.core.types import Observation

    rng = np.random.default_rng(seed)
    images = {c.name: rng.integers(0, 256, (c.height, c.width, 3), dtype=np.uint8) for c in robot.cameras}
    return Observation(images, dict(zip(robot.joint_names, map(float, robot.home))), "pick up the block", 0.0)


def _stats(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}


def _time(call: Callable[[], Any], calls: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        call()
    durations = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        durations.append(time.perf_counter() - started)
    return durations


def run_remote(row: RemoteRow, calls: int, warmup: int) -> dict:
    import yaml

    from vla_ros.core.policies import make_policy
    from vla_ros.core.robot import load_robot
    from vla_ros.resources import policy_config_dir

    robot = load_robot(row.robot)
    config = yaml.safe_load((policy_config_dir() / f"{row.config}.yaml").read_text())
    config.update(dict(row.overrides))
    observation = _observation(robot, 0)
    with row.server() as server:
        config.update(row.endpoint(server))
        policy = make_policy(config, robot=robot, source=policy_config_dir() / f"{row.config}.yaml")
        result = {"backend": row.backend, "config": row.config, "robot": row.robot, "calls": calls,
                  **{key: value for key, value in row.overrides},
                  **_stats(_time(lambda: policy.infer(observation), calls, warmup))}
        if row.backend == "openpi_ws":
            # Like for like: both clients send the same prebuilt request (our infer also resizes the frames).
            from openpi_client.websocket_client_policy import WebsocketClientPolicy

            from vla_ros.core.policies.openpi_ws import pack

            request = policy._build(policy.request, observation)
            result["transport"] = _stats(_time(lambda: policy._exchange(pack(request)), calls, warmup))
            peer = WebsocketClientPolicy(host="127.0.0.1", port=server.port)
            result["peer"] = {"client": "openpi_client.WebsocketClientPolicy, same request",
                              **_stats(_time(lambda: peer.infer(request), calls, warmup))}
            result["transport_ratio_vs_peer_p50"] = result["transport"]["p50_ms"] / result["peer"]["p50_ms"]
        if row.backend == "lerobot_async_grpc":
            # The step where we differ from LeRobot's robot_client: reading the GetActions payload with the
            # restricted unpickler instead of plain pickle.loads (same payload: 100 TimedActions of tensors).
            import pickle

            import torch

            from vla_ros.core.policies.lerobot_pickle import load_timed_actions

            payload = pickle.dumps([server.helpers.TimedAction(i / 50, i, action)
                                    for i, action in enumerate(torch.zeros(policy.metadata.horizon, 14))])
            result["decode"] = _stats(_time(lambda: load_timed_actions(payload), calls, warmup))
            result["peer"] = {"client": "LeRobot robot_client's pickle.loads of the same GetActions payload",
                              **_stats(_time(lambda: pickle.loads(payload), calls, warmup))}
            result["decode_ratio_vs_peer_p50"] = result["decode"]["p50_ms"] / result["peer"]["p50_ms"]
        if hasattr(policy, "close"):
            policy.close()
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, required=True, help="write the results here")
    parser.add_argument("--calls", type=int, default=200, help="timed inferences per row (default 200)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed inferences first (default 10)")
    parser.add_argument("--rows", nargs="*", help="row names to run (default: all)")
    parser.add_argument("--checkpoints", type=Path, default=DEFAULT_CHECKPOINTS,
                        help="directory of the LeRobot test checkpoints (default: test/data/lerobot of this checkout)")
    parser.add_argument("--lerobot-python", type=Path, default=os.environ.get("VLA_ROS_LEROBOT_PYTHON"),
                        help="a python with lerobot==0.4.4 to time the same checkpoints in (the peer; optional; "
                             "default $VLA_ROS_LEROBOT_PYTHON)")


def _remote_name(row: RemoteRow) -> str:
    return f"{row.backend}/{row.config}" + "".join(f" ({value})" for _, value in row.overrides)


def run_local(row: LocalRow, args: argparse.Namespace) -> dict:
    built = row.build(args)
    if built is None:
        return {"backend": row.backend, "skipped": "inputs not found"}
    policy, observation = built
    entry = {"backend": row.backend, "horizon": policy.metadata.horizon,
             "ours": _stats(_time(lambda: policy.infer(observation), args.calls, args.warmup))}
    peer = row.peer(args) if row.peer is not None else None
    if peer is not None and "times_s" in peer:
        entry["peer"] = {"name": "lerobot 0.4.4", "torch": peer["torch"], **_stats(peer["times_s"])}
        entry["peer_over_ours_p50"] = round(entry["peer"]["p50_ms"] / entry["ours"]["p50_ms"], 2)
    elif peer is not None:
        entry["peer"] = peer
    return entry


def main(args: argparse.Namespace) -> int:
    if args.calls < 1 or args.warmup < 0:
        raise ConfigError("vla-ros bench policies", "--calls/--warmup", "expected --calls >= 1 and --warmup >= 0")
    import torch

    torch.set_num_threads(1)
    wanted = set(args.rows or ())
    local = {row.name: run_local(row, args) for row in LOCAL_ROWS if not wanted or row.name in wanted}
    remote = [run_remote(row, args.calls, args.warmup) for row in REMOTE_ROWS
              if not wanted or _remote_name(row) in wanted]
    results = {"machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                           "python": platform.python_version(), "torch": torch.__version__,
                           "torch_threads": torch.get_num_threads(),
                           "load_average_1min": round(os.getloadavg()[0], 2)},
               "local": local, "remote": remote}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    return 0


def table(results: dict) -> str:
    machine = results["machine"]
    lines = [f"torch {machine['torch']}, 1 thread, {machine['cpu_count']} CPUs, load average "
             f"{machine['load_average_1min']}",
             f"{'row':<44} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}  vs peer, p50: ours / peer (ratio)"]
    for name, row in results["local"].items():
        if "skipped" in row:
            lines.append(f"{name:<44}  skipped: {row['skipped']}")
            continue
        ours, peer = row["ours"], row.get("peer", {})
        versus = f"{ours['p50_ms']:.2f} / {peer['p50_ms']:.2f} ({peer['p50_ms'] / ours['p50_ms']:.2f}x peer)" \
            if "p50_ms" in peer else "-"
        lines.append(f"{name:<44} {ours['p50_ms']:8.2f} {ours['p90_ms']:8.2f} {ours['p99_ms']:8.2f}  {versus}")
    for row in results["remote"]:
        label = f"{row['backend']}/{row['config']}" + (f" ({row['serialization']})" if "serialization" in row else "")
        versus = "-"
        for part in ("transport", "decode"):
            if part in row:
                versus = (f"{part} {row[part]['p50_ms']:.2f} / {row['peer']['p50_ms']:.2f} "
                          f"({row[f'{part}_ratio_vs_peer_p50']:.2f}x)")
        lines.append(f"{label:<44} {row['p50_ms']:8.2f} {row['p90_ms']:8.2f} {row['p99_ms']:8.2f}  {versus}")
    return "\n".join(lines)
