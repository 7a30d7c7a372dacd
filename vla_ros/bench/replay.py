"""Replay throughput: a synthetic 640x480 rgb8 30 Hz camera + 100 Hz joint-state bag through the full chain.

The policy is excluded (a playback policy answers in microseconds); what is timed is everything else replay does:
opening the bag, reading and deserializing messages, decoding the frames observations use, executor -> IK -> safety
at the robot's control rate, and the metrics. Plots are not timed (a fixed cost, independent of bag length). Raw
`rosbags` read + deserialize of every message of the same bag is measured in the same run for reference.
JSON: {"x_realtime", "raw_read_x_realtime", ...}, x = bag seconds per wall second (median of --repeat runs).

The warm-up run pays the one-off costs: imports, and the deserializers rosbags generates per message type (replay
shares them across the bags of a process, as a --sweep does; the raw-read reference, plain `AnyReader.deserialize`,
regenerates them for every reader). Per storage the JSON also gives the chain's chunk counts and how many camera
frames were received and decoded, so a faster figure can be checked against the work done.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

STORAGES = ("mcap", "sqlite3")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", required=True, metavar="OUT", help="write the results here")
    parser.add_argument("--duration", type=float, default=5.0, help="bag length in seconds (default %(default)s)")
    parser.add_argument("--storage", choices=(*STORAGES, "both"), default="both",
                        help="bag storage; x_realtime reports mcap (ROS 2's default) when both (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (median)")
    parser.add_argument("--executor", choices=("sync", "ensemble", "async"), default="async")


def _write_bag(path: Path, storage: str, robot, duration: float) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    types = store.types
    camera = robot.cameras[0]
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, camera.height * camera.width * 3, dtype=np.uint8) for _ in range(4)]
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3

    def header(t: float):
        ns = int(round(t * 1e9))
        return types["std_msgs/msg/Header"](types["builtin_interfaces/msg/Time"](ns // 10**9, ns % 10**9), "camera")

    start = 1000.0
    events = []
    for i in range(int(duration * 30) + 1):
        t = start + i / 30
        events.append((t, camera.topic, "sensor_msgs/msg/Image", types["sensor_msgs/msg/Image"](
            header(t), camera.height, camera.width, "rgb8", 0, camera.width * 3, frames[i % len(frames)])))
    names = list(robot.joint_names)
    for i in range(int(duration * 100) + 1):
        t = start + i / 100
        q = robot.home + 0.05 * np.sin(0.5 * (t - start))
        events.append((t, robot.joint_state_sources[0].topic, "sensor_msgs/msg/JointState",
                       types["sensor_msgs/msg/JointState"](header(t), names, q, np.zeros(len(names)), np.zeros(0))))
    events.append((start, "/vla_ros/instruction", "std_msgs/msg/String",
                   types["std_msgs/msg/String"]("pick up the block")))
    events.sort(key=lambda e: e[0])
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        connections = {}
        for t, topic, msgtype, message in events:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(connections[topic], int(round(t * 1e9)), store.serialize_cdr(message, msgtype))


def _policy(robot, duration: float):
    from vla_ros.core.policies.playback import PlaybackPolicy
    from vla_ros.core.types import ActionSpace

    times = 1000.0 + np.arange(0.0, duration + 1.0, 0.1)
    actions = np.zeros((len(times), 7))
    actions[:, 0] = 0.003 * np.sin(times)
    actions[:, 2] = 0.002 * np.cos(times)
    actions[:, 6] = (np.sin(times) > 0).astype(float)
    return PlaybackPolicy(actions, times, ActionSpace("ee_delta"), horizon=10, name="bench_playback")


def _time_replay(path: Path, robot, duration: float, mode: str) -> tuple[float, dict]:
    from vla_ros.core.executor import ExecutorConfig
    from vla_ros.core.replay.bag import Bag
    from vla_ros.core.replay.metrics import compute_metrics
    from vla_ros.core.replay.run import run_replay

    policy = _policy(robot, duration)
    config = ExecutorConfig(mode=mode, control_dt=1.0 / robot.control_rate_hz)
    started = time.perf_counter()
    with Bag(path) as bag:
        record = run_replay(bag, robot, policy, config)
    compute_metrics(record)
    elapsed = time.perf_counter() - started
    executor = record.executor_stats
    work = {"inferences": len(record.inferences), "ticks": len(record.times),
            "chunks": {"accepted": executor["accepted_chunks"], "repeated": executor["repeated_chunks"],
                       "rejected": executor["rejected_chunks"]},
            "camera_frames": record.notes["camera_frames"][robot.cameras[0].topic]}
    return elapsed, work


def _time_raw_read(path: Path) -> float:
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    started = time.perf_counter()
    with AnyReader([path], default_typestore=get_typestore(Stores.ROS2_JAZZY)) as reader:
        for connection, _, raw in reader.messages():
            reader.deserialize(raw, connection.msgtype)
    return time.perf_counter() - started


def main(args: argparse.Namespace) -> int:
    from vla_ros.commands.replay import tune_allocator
    from vla_ros.core.robot import load_robot

    tune_allocator()  # as `vla-ros replay` does; raw reads below run in the same process, so they benefit equally
    robot = load_robot("franka")
    camera = robot.cameras[0]
    storages = STORAGES if args.storage == "both" else (args.storage,)
    results = {}
    with tempfile.TemporaryDirectory(prefix="vla_ros_bench_replay_") as tmp:
        for storage in storages:
            path = Path(tmp) / storage
            _write_bag(path, storage, robot, args.duration)
            _time_replay(path, robot, args.duration, args.executor)  # warm-up: imports, generated deserializers
            replay = [_time_replay(path, robot, args.duration, args.executor) for _ in range(args.repeat)]
            raw = [_time_raw_read(path) for _ in range(args.repeat)]
            replay_s = statistics.median(r[0] for r in replay)
            raw_s = statistics.median(raw)
            results[storage] = {
                "x_realtime": args.duration / replay_s, "raw_read_x_realtime": args.duration / raw_s,
                "replay_seconds": replay_s, "raw_read_seconds": raw_s, **replay[0][1],
            }
    primary = results["mcap" if "mcap" in results else storages[0]]
    output = {
        "x_realtime": primary["x_realtime"],
        "raw_read_x_realtime": primary["raw_read_x_realtime"],
        "storage": "mcap" if "mcap" in results else storages[0],
        "bag_seconds": args.duration,
        "camera": f"{camera.width}x{camera.height} rgb8 @ 30 Hz",
        "joint_states_hz": 100,
        "control_rate_hz": robot.control_rate_hz,
        "executor": args.executor,
        "policy": "playback (excluded: microseconds per call)",
        "repeat": args.repeat,
        "by_storage": results,
    }
    Path(args.json).write_text(json.dumps(output, indent=2) + "\n")
    print(f"{'storage':<9}{'replay x realtime':>19}{'raw rosbags read x realtime':>30}")
    for storage, r in results.items():
        print(f"{storage:<9}{r['x_realtime']:>19.1f}{r['raw_read_x_realtime']:>30.1f}")
    return 0
