"""Soak: the in-process control chain (executor -> IK -> safety, core.pipeline.ControlPipeline) for a million ticks
with random faults, counting exceptions (must be 0) and resident memory growth (goal < 5 MB).

The policy is a synthetic smooth end-effector stream (a circle with a slow yaw, 10-step chunks at 10 Hz) answered at
once, so what is soaked is everything else. The robot follows the safety filter's commands with a little noise. The
safety filter keeps the controller trajectory (`keep_trajectory`) and it is built for every command, as the safety
node does for a JointTrajectoryController. Faults, seeded, each turned on for a random stretch:
  - chunks with NaN, the wrong shape, a stale stamp, or an inference error instead of a chunk;
  - joint states that stop (stale), carry NaN or an impossible value, or arrive for a subset of the joints;
  - the clock going back a little, by a second (an e-stop), or a 0.3 s stall; an e-stop and resets (often refused);
  - garbage straight into the safety filter (overflowing ints, complex numbers, None, unknown joint names);
  - a new instruction (executor reset).
Every command is re-checked by the independent LimitChecker, and its controller trajectory by
controller_trajectory_problems (violations reported too). RSS from /proc/self/statm,
after a warm-up of 5 % of the ticks and at the end; the JSON also has RSS samples along the run.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np

from vla_ros.progress import Progress

_PAGE = os.sysconf("SC_PAGE_SIZE")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, required=True, help="write the results here")
    parser.add_argument("--steps", type=int, default=1_000_000, help="control ticks (default %(default)s)")
    parser.add_argument("--robot", default="franka")
    parser.add_argument("--seed", type=int, default=0)


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE / 2**20


class _CirclePolicy:
    """Smooth EE deltas (a 4 cm circle every 4 s, slow yaw) in 10-step chunks; faults on request."""

    def __init__(self, space):
        from vla_ros.core.types import PolicyMetadata

        self.metadata = PolicyMetadata("soak_circle", space, horizon=10, rate_hz=10.0)

    def chunk(self, stamp: float, fault: str | None):
        """A chunk as a misbehaving backend could hand it over (unchecked): the executor must refuse the bad ones."""
        from vla_ros.core.types import ActionChunk

        t = stamp + 0.1 * np.arange(10)
        actions = np.zeros((10, self.metadata.action_space.dim))
        actions[:, 0] = 0.1 * 0.04 * 2 * np.pi / 4 * -np.sin(2 * np.pi * t / 4)
        actions[:, 1] = 0.1 * 0.04 * 2 * np.pi / 4 * np.cos(2 * np.pi * t / 4)
        actions[:, 5] = 0.02 * np.sin(0.3 * t)
        actions[:, 6] = float(int(stamp / 3) % 2)
        if fault == "nan":
            actions[4, 2] = np.nan
        elif fault == "shape":
            actions = actions[:, :3]
        elif fault == "stale":
            stamp -= 5.0
        return ActionChunk(actions, self.metadata.action_space, 1.0 / self.metadata.rate_hz, stamp, {})


def soak(steps: int, robot_name: str, seed: int) -> dict:
    from vla_ros.core.executor import ExecutorConfig
    from vla_ros.core.pipeline import ControlPipeline
    from vla_ros.core.robot import load_robot
    from vla_ros.core.safety import SafetyConfig
    from vla_ros.core.safety.independent_check import LimitChecker, controller_trajectory_problems
    from vla_ros.core.types import ActionSpace

    rng = np.random.default_rng(seed)
    robot = load_robot(robot_name)
    names = list(robot.joint_names)
    config = SafetyConfig()
    policy = _CirclePolicy(ActionSpace("ee_delta", arms=(robot.arms[0].name,)))
    pipeline = ControlPipeline(robot, policy, ExecutorConfig(mode="async", control_dt=1.0 / robot.control_rate_hz),
                               safety_config=config, keep_trajectory=True)
    checker = LimitChecker(robot, config)
    dt = 1.0 / robot.control_rate_hz
    now, q = 100.0, robot.home.copy()
    faults: Counter[str] = Counter()
    active: dict[str, int] = {}  # fault -> ticks left
    exceptions: list[str] = []
    exception_count = violations = 0
    rss, warm, started = [], None, time.perf_counter()
    progress = Progress(f"soak {robot.name}", total=steps, unit="ticks")

    def start(kind: str, low: int, high: int) -> None:
        active[kind] = int(rng.integers(low, high))
        faults[kind] += 1

    for k in range(steps):
        try:
            roll = rng.random()
            if roll < 0.002:
                start(str(rng.choice(["stale_state", "bad_state", "partial_state"])), 2, 40)
            elif roll < 0.003:
                start(str(rng.choice(["nan_chunk", "shape_chunk", "stale_chunk", "inference_error"])), 1, 5)
            elif roll < 0.0033:
                now -= float(rng.choice([0.003, 1.0]))  # the clock goes back
                faults["clock_back"] += 1
            elif roll < 0.0035:
                now += 0.3  # a stall
                faults["stall"] += 1
            elif roll < 0.0037:
                pipeline.safety.estop(None if rng.random() < 0.5 else "soak")
                faults["estop"] += 1
            elif roll < 0.006 and (pipeline.safety.estopped or pipeline.safety.mode == "stopping"):
                pipeline.safety.reset(now if rng.random() < 0.9 else None)
            elif roll < 0.0063:
                garbage = [[10**400] * len(names), np.full(len(names), 1j), None, [0.0] * len(names)]
                pipeline.safety.filter(names if rng.random() < 0.75 else ["nope"] * len(names),
                                       garbage[int(rng.integers(len(garbage)))], now)
                faults["garbage_target"] += 1
            elif roll < 0.0065:
                pipeline.reset(now)
                faults["new_instruction"] += 1
            now += dt * (1.0 + 0.2 * (rng.random() - 0.5))
            measured = q + rng.normal(0.0, 1e-5, robot.nq)
            if "stale_state" not in active:
                if "bad_state" in active:
                    measured[int(rng.integers(robot.nq))] = float(rng.choice([np.nan, 100.0]))
                if "partial_state" in active:
                    keep = sorted(rng.choice(robot.nq, size=robot.nq // 2, replace=False))
                    pipeline.update_joint_state([names[i] for i in keep], measured[keep], now)
                else:
                    pipeline.update_joint_state(names, measured, now)
            step = pipeline.tick(now, q)
            if step.request:
                fault = next((f for f in ("nan_chunk", "shape_chunk", "stale_chunk", "inference_error")
                              if f in active), None)
                if fault == "inference_error":
                    pipeline.record_inference_error("soak: injected inference error")
                else:
                    pipeline.submit(policy.chunk(now, fault and fault.split("_")[0]), now)
            command = step.command
            # controller_trajectory_problems builds the controller trajectory, as safety_node does for every command
            violations += len(checker.check(command) + controller_trajectory_problems(pipeline.safety, command))
            if command.sendable:
                q = np.clip(command.positions, robot.limits.lower, robot.limits.upper)
            for kind in list(active):
                active[kind] -= 1
                if active[kind] <= 0:
                    del active[kind]
        except Exception:  # noqa: BLE001 - counted: the point of the soak
            exception_count += 1
            if len(exceptions) < 5:
                exceptions.append(traceback.format_exc(limit=4))
        if k == max(1, steps // 20):
            warm = rss_mb()
        if k % max(1, steps // 50) == 0:
            rss.append((k, round(rss_mb(), 2)))
            progress.to(k)
    progress.close()
    end = rss_mb()
    return {"steps": steps, "robot": robot.name, "seconds": round(time.perf_counter() - started, 1),
            "exceptions": exception_count, "exception_examples": exceptions, "violations": violations,
            "rss_after_warmup_mb": round(warm or end, 2), "rss_end_mb": round(end, 2),
            "rss_growth_mb": round(end - (warm or end), 2), "rss_samples": rss, "faults": dict(faults),
            "interventions": {kind: n for kind, n in pipeline.safety.intervention_counts().items() if n},
            "executor": pipeline.executor_stats().as_dict()}


def main(args: argparse.Namespace) -> int:
    if args.steps < 1:
        print("--steps must be >= 1")
        return 2
    result = soak(args.steps, args.robot, args.seed)
    result["goals_met"] = {"no_exceptions": result["exceptions"] == 0, "rss_growth_lt_5mb": result["rss_growth_mb"] < 5.0,
                           "no_violations": result["violations"] == 0}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"soak {result['robot']}: {result['steps']} ticks in {result['seconds']} s, {result['exceptions']} exceptions, "
          f"{result['violations']} limit violations, RSS {result['rss_after_warmup_mb']} -> {result['rss_end_mb']} MB "
          f"(+{result['rss_growth_mb']} MB); faults: "
          + ", ".join(f"{k} {v}" for k, v in sorted(result["faults"].items())))
    for example in result["exception_examples"]:
        print(example)
    return 0 if result["exceptions"] == 0 else 1

