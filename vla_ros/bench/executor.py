"""Chunk executor under policy latency: sync vs ACT temporal ensembling vs async, side by side.

Simulation (deterministic and seeded; a simulated clock, nothing sleeps):
  * control at 50 Hz; a 7-joint arm; the policy returns joint_pos chunks of 50 steps at 50 Hz.
  * ground truth: per joint, two sinusoids (amplitude 0.1-0.3 rad, 0.2-0.6 Hz). The robot's progress along it
    advances only on ticks that publish a command (while the executor holds, the task waits for the robot).
  * the policy sees a camera frame (30 Hz, random phase; the newest frame at or before the request) and returns
    the ground truth from the robot's progress at that frame's capture time, plus model disagreement: a per-chunk
    offset (N(0, 0.01 rad) per joint) and drift (N(0, 0.02 rad/s) per joint) along the chunk.
  * the policy is a single server: one inference at a time, each taking latency * U(1 - jitter, 1 + jitter). A
    result is handed to the executor at the first control tick at or after it is ready. Ensemble mode asks every
    tick; ticks where it (or any mode) wanted a chunk while the server was busy are counted.
  * executor settings are the ExecutorConfig defaults, except that sync executes 25 of the 50 steps (openpi's
    ALOHA setting): ensemble weighs with ACT's 0.01; async requests under half a chunk left (LeRobot's 0.5), or
    earlier when the measured latency needs it, and crossfades over >= 10 steps, longer when the chunks disagree
    (jerk budget 0.5).

Metrics per mode and latency (ticks before the first command are start-up and not counted):
  missed_ticks         ticks that published no new command (holds: sync waiting by design, underflow).
  max_gap_periods      longest interval between consecutive commands, in control periods (1.0 = none missed).
  boundary_jerk_ratio  the executor's own statistic (vla_ros.core.executor): the largest third-difference jerk
                       |c[n] - 3c[n-1] + 3c[n-2] - c[n-3]| / dt**3 of the executed joint targets over windows that
                       are not entirely inside one chunk (hand-overs, ensembles, holds), divided by the median over
                       chunks of each chunk's own p95 jerk.
  extras               underflows, inferences, requests_while_busy, chunk_age_ms_mean (observation capture to
                       arrival), disagreement_mean (RMS rad between overlapping chunks), chunks_rejected,
                       blend_steps_mean (async crossfade length), boundary_jerk_max and in_chunk_jerk (rad/s^3).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vla_ros.core.errors import ConfigError
from vla_ros.core.executor import MODES, ChunkExecutor, ExecutorConfig
from vla_ros.core.types import ActionChunk, ActionSpace, PolicyMetadata


@dataclass(frozen=True)
class Scenario:
    control_hz: float = 50.0
    horizon: int = 50
    joints: int = 7
    duration: float = 60.0
    jitter: float = 0.2
    camera_hz: float = 30.0
    offset_std: float = 0.01
    drift_std: float = 0.02
    sync_steps: int = 25  # openpi ALOHA: predict 50, execute 25
    blend_steps: int = ExecutorConfig.blend_steps
    queue_threshold: float = ExecutorConfig.queue_threshold
    ensemble_coeff: float = ExecutorConfig.ensemble_coeff
    seed: int = 0


class GroundTruth:
    """A smooth joint trajectory: per joint, two sinusoids with random amplitude, frequency and phase."""

    def __init__(self, rng: np.random.Generator, joints: int):
        self.amplitude = rng.uniform(0.1, 0.3, (2, joints))
        self.omega = 2 * np.pi * rng.uniform(0.2, 0.6, (2, joints))
        self.phase = rng.uniform(0, 2 * np.pi, (2, joints))

    def __call__(self, progress: np.ndarray) -> np.ndarray:
        """(n,) progress in seconds -> (n, joints) joint positions."""
        p = np.asarray(progress)[:, None, None]
        return np.sum(self.amplitude * np.sin(self.omega * p + self.phase), axis=1)


def simulate(mode: str, latency: float, scenario: Scenario) -> dict:
    """Run one mode at one mean policy latency (seconds); return its metrics."""
    sc = scenario
    dt = 1.0 / sc.control_hz
    ticks = int(round(sc.duration * sc.control_hz))
    space = ActionSpace(kind="joint_pos", joints_per_arm=(sc.joints,), gripper=None)
    metadata = PolicyMetadata("synthetic", space, horizon=sc.horizon, rate_hz=sc.control_hz)
    config = ExecutorConfig(mode=mode, control_dt=dt, execute_steps=sc.sync_steps if mode == "sync" else None,
                            blend_steps=sc.blend_steps, queue_threshold=sc.queue_threshold,
                            ensemble_coeff=sc.ensemble_coeff)
    executor = ChunkExecutor(config, metadata)
    truth = GroundTruth(np.random.default_rng(sc.seed), sc.joints)
    rng = np.random.default_rng([sc.seed, MODES.index(mode), int(round(latency * 1000))])
    camera_phase = rng.uniform(0, 1 / sc.camera_hz) if sc.camera_hz else 0.0
    steps = np.arange(sc.horizon) * dt

    progress = np.zeros(ticks + 1)  # progress[n]: where along the ground truth the robot is when tick n starts
    running = np.zeros(ticks, dtype=bool)
    pending: ActionChunk | None = None
    ready_at = math.inf
    inferences = requests_while_busy = 0
    for n in range(ticks):
        now = n * dt
        if pending is not None and ready_at <= now + 1e-12:
            executor.submit(pending, now)
            pending, inferences = None, inferences + 1
        result = executor.tick(now)
        running[n] = result.running
        progress[n + 1] = progress[n] + (dt if result.running else 0.0)
        if not result.request:
            continue
        if pending is not None:
            requests_while_busy += 1
            continue
        stamp = now if not sc.camera_hz else \
            camera_phase + math.floor((now - camera_phase) * sc.camera_hz + 1e-9) / sc.camera_hz
        if stamp <= result.request_after or stamp < 0:
            continue  # no new camera frame yet
        k = min(int(math.floor(stamp / dt + 1e-9)), n)
        seen = progress[k] + (stamp - k * dt if running[k] else 0.0)
        actions = truth(seen + steps) + rng.normal(0, sc.offset_std, sc.joints) \
            + steps[:, None] * rng.normal(0, sc.drift_std, sc.joints)
        pending = ActionChunk(actions, space, dt, stamp)
        ready_at = now + latency * rng.uniform(1 - sc.jitter, 1 + sc.jitter)

    commanded = np.flatnonzero(running)
    stats = executor.stats()
    return {
        "missed_ticks": int(ticks - commanded[0] - commanded.size) if commanded.size else ticks,
        "max_gap_periods": float(np.max(np.diff(commanded), initial=1)) if commanded.size else None,
        "boundary_jerk_ratio": stats.boundary_jerk_ratio,
        "underflows": stats.underflows,
        "inferences": inferences,
        "requests_while_busy": requests_while_busy,
        "chunk_age_ms_mean": 1000 * stats.latency_mean if stats.latency_mean is not None else None,
        "disagreement_mean": stats.disagreement_mean,
        "chunks_rejected": sum(stats.rejected_chunks.values()),
        "blend_steps_mean": stats.blend_steps_mean,
        "boundary_jerk_max": stats.boundary_jerk_max,
        "in_chunk_jerk": stats.in_chunk_jerk,
    }


def run(latencies_ms: list[int], scenario: Scenario) -> dict:
    return {mode: {str(ms): simulate(mode, ms / 1000, scenario) for ms in latencies_ms} for mode in MODES}


def table(results: dict, scenario: Scenario) -> str:
    sc = scenario
    lines = [f"executor bench: {sc.control_hz:g} Hz control, chunk {sc.horizon}, {sc.duration:g} s per run, latency "
             f"jitter ±{100 * sc.jitter:g} %, camera {sc.camera_hz:g} Hz, sync executes {sc.sync_steps}, "
             f"async crossfade >= {sc.blend_steps} steps, seed {sc.seed}",
             f"{'mode':<9}{'latency':>8}{'missed':>8}{'max gap':>9}{'jerk ratio':>12}{'underflows':>11}"
             f"{'inferences':>11}{'busy asks':>10}{'age ms':>8}"]
    for mode, by_latency in results.items():
        for ms, m in by_latency.items():
            ratio = f"{m['boundary_jerk_ratio']:.2f}" if m["boundary_jerk_ratio"] is not None else "-"
            age = f"{m['chunk_age_ms_mean']:.0f}" if m["chunk_age_ms_mean"] is not None else "-"
            lines.append(f"{mode:<9}{ms + ' ms':>8}{m['missed_ticks']:>8}{m['max_gap_periods']:>9.2f}{ratio:>12}"
                         f"{m['underflows']:>11}{m['inferences']:>11}{m['requests_while_busy']:>10}{age:>8}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Scenario()
    parser.add_argument("--json", type=Path, required=True, help="write the results here")
    parser.add_argument("--latencies", default="0,100,300,600", help="mean policy latencies in ms, comma-separated")
    parser.add_argument("--duration", type=float, default=defaults.duration, help="simulated seconds per run")
    parser.add_argument("--jitter", type=float, default=defaults.jitter, help="latency jitter, fraction (uniform ±)")
    parser.add_argument("--camera-hz", type=float, default=defaults.camera_hz, help="0: frames at every tick")
    parser.add_argument("--offset-std", type=float, default=defaults.offset_std, help="per-chunk offset, rad")
    parser.add_argument("--drift-std", type=float, default=defaults.drift_std, help="per-chunk drift, rad/s")
    parser.add_argument("--sync-steps", type=int, default=defaults.sync_steps, help="sync: steps executed per chunk")
    parser.add_argument("--blend-steps", type=int, default=defaults.blend_steps,
                        help="async: shortest crossfade, chunk steps")
    parser.add_argument("--seed", type=int, default=defaults.seed)


def main(args: argparse.Namespace) -> int:
    def bad(option: str, problem: str) -> ConfigError:
        return ConfigError("vla-ros bench executor", option, problem)

    try:
        latencies = [int(v) for v in args.latencies.split(",") if v.strip()]
    except ValueError:
        raise bad("--latencies", f"expected comma-separated whole milliseconds, got {args.latencies!r}") from None
    if not latencies or min(latencies) < 0:
        raise bad("--latencies", f"expected non-negative milliseconds, got {args.latencies!r}")
    if not args.duration > 0:
        raise bad("--duration", f"expected a positive number of seconds, got {args.duration}")
    if not 0 <= args.jitter < 1:
        raise bad("--jitter", f"expected a fraction in [0, 1), got {args.jitter}")
    if not args.camera_hz >= 0:
        raise bad("--camera-hz", f"expected >= 0, got {args.camera_hz}")
    if not args.offset_std >= 0 or not args.drift_std >= 0:
        raise bad("--offset-std/--drift-std", "expected standard deviations >= 0")
    scenario = Scenario(duration=args.duration, jitter=args.jitter, camera_hz=args.camera_hz,
                        offset_std=args.offset_std, drift_std=args.drift_std, sync_steps=args.sync_steps,
                        blend_steps=args.blend_steps, seed=args.seed)
    results = run(latencies, scenario)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results, scenario))
    return 0
