"""Fleet evaluation throughput: tasks per second of `vla-ros evaluate`'s Ray path, 1 worker vs N, Ray's start-up apart.

The bags are `bench replay`'s (640x480 rgb8 30 Hz camera, 100 Hz joint states, franka) played by a playback policy,
one executor setting: each task is one bag's replay, its result written as the command writes it. Measured in order:

  in_process   the tasks one after the other in this process, no Ray (the peer: what Ray adds or saves)
  ray_start_s  ray.init of a local instance with N CPUs (loopback), until it accepts tasks
  warmup_s     one task per worker, all at once: each worker process starts and imports vla_ros, robot, policy
  one_worker   the tasks submitted at once, each asking for all N CPUs: Ray runs them one at a time on warm workers
  n_workers    the tasks submitted at once to N warm workers
speedup = n_workers tasks/s / one_worker tasks/s; efficiency = speedup / N (the goal: >= 0.8). The three phases run
--repeat times, interleaved, and the best round of each counts: on a machine shared with other work a round can lose a
core to it (the JSON keeps every round's rate and the load average).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", required=True, metavar="OUT", help="write the results here")
    parser.add_argument("--bags", type=int, default=8, help="tasks per measurement (default %(default)s)")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per bag (default %(default)s)")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)),
                        help="N: local Ray CPUs (default: this machine's cores, %(default)s)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of the three phases, interleaved; the best round of each counts (default 3)")


def _fleet(directory: Path, robot, count: int, duration: float):
    """`count` bag directories (hard links of one bench bag: identical work, one copy on disk) and a playback YAML."""
    from vla_ros.bench.replay import _policy, _write_bag

    _write_bag(directory / "source", "mcap", robot, duration)
    bags = []
    for i in range(count):
        bag = directory / "bags" / f"episode_{i:03d}"
        bag.mkdir(parents=True)
        for part in (directory / "source").iterdir():
            os.link(part, bag / part.name)
        bags.append((bag, bag.name))
    policy = _policy(robot, duration)
    path = directory / "playback.yaml"
    path.write_text(yaml.safe_dump({
        "backend": "playback", "name": "bench_playback", "horizon": policy.metadata.horizon,
        "actions": np.asarray(policy.actions).tolist(), "times": np.asarray(policy.times).tolist(),
        "action_space": {"kind": "ee_delta", "frame": "base", "rotation": "rpy",
                         "gripper": {"open": 1.0, "closed": 0.0}},
    }))
    return bags, path


def _best(rounds: list[dict]) -> dict:
    """The round with the highest throughput (the least disturbed by other work), with every round's rate."""
    best = max(rounds, key=lambda r: r["tasks_per_s"])
    return {**best, "rounds_tasks_per_s": [r["tasks_per_s"] for r in rounds]}


def _rate(count: int, seconds: float, task_seconds: list[float]) -> dict:
    """Throughput of a phase; task_s_mean is the time a task took on its worker (it grows when the workers compete
    for cores; the rest of `seconds` is scheduling and result handling)."""
    return {"tasks": count, "seconds": seconds, "tasks_per_s": count / seconds,
            "task_s_mean": float(np.mean(task_seconds)) if task_seconds else None}


def main(args: argparse.Namespace) -> int:
    from vla_ros.commands.evaluate import ray_session, run_on_ray, run_task
    from vla_ros.commands.replay import tune_allocator
    from vla_ros.core.executor import ExecutorConfig
    from vla_ros.core.replay.run import ReplayOptions
    from vla_ros.core.replay.tasks import EvaluationSetup, plan, write_result
    from vla_ros.core.robot import load_robot
    from vla_ros.core.safety.config import default_safety_config_path

    tune_allocator()
    robot = load_robot("franka")
    results = {}
    with tempfile.TemporaryDirectory(prefix="vla_ros_bench_evaluate_") as tmp:
        tmp = Path(tmp)
        bags, policy = _fleet(tmp, robot, args.bags, args.duration)
        setup = EvaluationSetup(robot=str(robot.config_path), urdf=None, policy=str(policy), actions_topic=None,
                                safety=str(default_safety_config_path()), options=ReplayOptions(), remaps=(),
                                run_info=())
        tasks = plan(setup, bags, [ExecutorConfig(control_dt=1.0 / robot.control_rate_hz)])
        out = tmp / "out"
        failures, task_seconds = [], []

        def write(task, outcome):
            if outcome["status"] != "ok":
                failures.append(outcome["error"])
            task_seconds.append(outcome.get("seconds"))
            write_result(out, task, outcome)

        def phase(run) -> dict:
            task_seconds.clear()
            started = time.perf_counter()
            run()
            return _rate(len(tasks), time.perf_counter() - started, task_seconds)

        run_task(setup, tasks[0])  # this process's imports and loads, as a warm worker has them
        started = time.perf_counter()
        rounds = {"in_process": [], "one_worker": [], "n_workers": []}
        with ray_session(None, args.workers) as description:
            results["ray_start_s"] = time.perf_counter() - started
            started = time.perf_counter()
            run_on_ray(setup, tasks[:args.workers], write)
            results["warmup_s"] = time.perf_counter() - started
            for _ in range(args.repeat):
                rounds["in_process"].append(phase(lambda: [write(task, run_task(setup, task)) for task in tasks]))
                # every task asks for all N CPUs: Ray runs one at a time, queued as in the N-worker phase
                rounds["one_worker"].append(phase(lambda: run_on_ray(setup, tasks, write,
                                                                     cpus_per_task=args.workers)))
                # meanwhile Ray stopped the idle workers beyond one: restart them untimed, as the warm-up did
                run_on_ray(setup, tasks[:args.workers], write)
                rounds["n_workers"].append(phase(lambda: run_on_ray(setup, tasks, write)))
        results.update({key: _best(value) for key, value in rounds.items()})
    if failures:
        raise RuntimeError(f"bench evaluate: a task failed: {failures[0]}")
    speedup = results["n_workers"]["tasks_per_s"] / results["one_worker"]["tasks_per_s"]
    output = {
        "workers": args.workers, "ray": description, "bags": args.bags, "bag_seconds": args.duration,
        "camera": f"{robot.cameras[0].width}x{robot.cameras[0].height} rgb8 @ 30 Hz", "policy": "playback",
        **results, "speedup": speedup, "efficiency": speedup / args.workers,
        "x_realtime_n_workers": results["n_workers"]["tasks_per_s"] * args.duration, "repeat": args.repeat,
        "load_average": os.getloadavg(),
    }
    Path(args.json).write_text(json.dumps(output, indent=2) + "\n")
    print(f"Ray start-up {results['ray_start_s']:.1f} s, worker warm-up {results['warmup_s']:.1f} s "
          f"({args.workers} workers, {description})")
    print(f"{'':<14}{'tasks/s':>9}{'bag s / s':>11}{'s / task on its worker':>25}")
    for key in ("in_process", "one_worker", "n_workers"):
        rate = results[key]["tasks_per_s"]
        print(f"{key:<14}{rate:>9.2f}{rate * args.duration:>11.1f}{results[key]['task_s_mean']:>25.3f}")
    print(f"speed-up 1 -> {args.workers} workers: {speedup:.2f}x (efficiency {speedup / args.workers:.2f})")
    return 0
