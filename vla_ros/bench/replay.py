"""Replay throughput: a synthetic 640x480 rgb8 30 Hz camera + 100 Hz joint-state bag through the full chain.

The policy is a playback policy (microseconds a call); what is timed is everything else replay does: opening the
bag, reading and deserializing messages, decoding the frames observations use, executor -> IK -> safety at the
robot's control rate, and the metrics. Plots are not timed (a fixed cost, independent of bag length).

Figures, x = bag seconds per second (median of --repeat runs):
  x_realtime       wall clock, the bag read directly (`Bag` reader "direct": mmap / zero-copy, see core.replay.storage)
  x_realtime_cpu   the same runs per CPU second of this process: the per-core figure, less sensitive to other load
  rosbags_reader_x_realtime   the same replay with the bag read through rosbags' AnyReader (the reader before
                   the direct one), measured in the same run
  raw_read_x_realtime         rosbags reading and deserializing every message of the bag, no replay at all

The warm-up run pays the one-off costs: imports, and the deserializers rosbags generates per message type (replay
shares them across the bags of a process, as a --sweep does; the raw-read reference, plain `AnyReader.deserialize`,
regenerates them for every reader). Per storage the JSON also gives the chain's chunk counts and how many camera
frames were received and decoded, so a faster figure can be checked against the work done.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections import Counter
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
    moving = np.zeros(robot.nq)  # arm joints sway about home; grippers stay at home, inside their limits (a joint
    for arm in robot.arms:       # state outside the URDF range is refused by the safety filter: the chain would hold)
        moving[arm.index] = 0.05
    for i in range(int(duration * 100) + 1):
        t = start + i / 100
        q = robot.home + moving * np.sin(0.5 * (t - start))
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


def _time_replay(path: Path, robot, duration: float, mode: str, reader: str = "direct") -> tuple[float, float, dict]:
    """(wall s, CPU s of this process, work done) of one replay."""
    from vla_ros.core.executor import ExecutorConfig
    from vla_ros.core.replay.bag import Bag
    from vla_ros.core.replay.metrics import compute_metrics
    from vla_ros.core.replay.run import run_replay

    policy = _policy(robot, duration)
    config = ExecutorConfig(mode=mode, control_dt=1.0 / robot.control_rate_hz)
    started, cpu = time.perf_counter(), time.process_time()
    with Bag(path, reader=reader) as bag:
        record = run_replay(bag, robot, policy, config)
    compute_metrics(record)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    executor = record.executor_stats
    work = {"inferences": len(record.inferences), "ticks": len(record.times),
            "holds": dict(Counter(h for h in record.holds if h is not None)),
            "chunks": {"accepted": executor["accepted_chunks"], "repeated": executor["repeated_chunks"],
                       "rejected": executor["rejected_chunks"]},
            "camera_frames": record.notes["camera_frames"][robot.cameras[0].topic]}
    return elapsed, cpu, work


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
            replay, rosbags = [], []
            for _ in range(args.repeat):  # interleaved, so a change in the machine's load hits both alike
                replay.append(_time_replay(path, robot, args.duration, args.executor))
                rosbags.append(_time_replay(path, robot, args.duration, args.executor, "rosbags"))
            raw = [_time_raw_read(path) for _ in range(args.repeat)]
            replay_s, replay_cpu_s = statistics.median(r[0] for r in replay), statistics.median(r[1] for r in replay)
            rosbags_s, raw_s = statistics.median(r[0] for r in rosbags), statistics.median(raw)
            if rosbags[0][2] != replay[0][2]:
                raise RuntimeError(f"bench replay: the two readers did different work: {rosbags[0][2]} vs "
                                   f"{replay[0][2]}")
            results[storage] = {
                "x_realtime": args.duration / replay_s, "x_realtime_cpu": args.duration / replay_cpu_s,
                "rosbags_reader_x_realtime": args.duration / rosbags_s, "raw_read_x_realtime": args.duration / raw_s,
                "replay_seconds": replay_s, "replay_cpu_seconds": replay_cpu_s, "rosbags_reader_seconds": rosbags_s,
                "raw_read_seconds": raw_s, **replay[0][2],
            }
    primary = results["mcap" if "mcap" in results else storages[0]]
    output = {
        "x_realtime": primary["x_realtime"],
        "x_realtime_cpu": primary["x_realtime_cpu"],
        "rosbags_reader_x_realtime": primary["rosbags_reader_x_realtime"],
        "raw_read_x_realtime": primary["raw_read_x_realtime"],
        "storage": "mcap" if "mcap" in results else storages[0],
        "bag_seconds": args.duration,
        "camera": f"{camera.width}x{camera.height} rgb8 @ 30 Hz",
        "joint_states_hz": 100,
        "control_rate_hz": robot.control_rate_hz,
        "executor": args.executor,
        "policy": "playback (microseconds per call)",
        "repeat": args.repeat,
        "load_average": os.getloadavg(),
        "by_storage": results,
    }
    Path(args.json).write_text(json.dumps(output, indent=2) + "\n")
    print(f"{'storage':<9}{'replay x realtime':>19}{'per CPU second':>16}{'rosbags reader':>16}"
          f"{'raw rosbags read':>18}")
    for storage, r in results.items():
        print(f"{storage:<9}{r['x_realtime']:>19.1f}{r['x_realtime_cpu']:>16.1f}{r['rosbags_reader_x_realtime']:>16.1f}"
              f"{r['raw_read_x_realtime']:>18.1f}")
    return 0
