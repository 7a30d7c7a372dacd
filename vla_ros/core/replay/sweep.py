"""Executor settings sweep: the same bag, latency and jitter through several executor configurations, one table.

So deployment knobs (mode, request threshold, blend window) are tuned offline against a recording instead of on the
robot. Every run is a full deterministic replay; the table lists, per setting, the figures that trade off against
each other: tracking error vs the recording, underflows (the arm stalls), boundary jerk, chunk disagreement,
safety interventions.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from vla_ros.core.executor import ExecutorConfig
from vla_ros.core.replay.bag import Bag
from vla_ros.core.replay.markdown import table
from vla_ros.core.replay.metrics import compute_metrics
from vla_ros.core.replay.run import ReplayOptions, run_replay
from vla_ros.core.robot import RobotModel
from vla_ros.core.types import Policy

COLUMNS = ("setting", "mean joint RMSE", "max joint error", "underflows", "hold ticks", "boundary jerk ratio",
           "chunk disagreement (mean)", "interventions", "accepted chunks", "rejected chunks")


def sweep_configs(base: ExecutorConfig, modes: Sequence[str], thresholds: Sequence[float],
                  blend_steps: Sequence[int]) -> list[ExecutorConfig]:
    """The grid of settings: sync / ensemble ignore threshold and blend, so they appear once each."""
    configs = []
    for mode in modes:
        if mode == "async":
            for threshold, blend in itertools.product(thresholds, blend_steps):
                configs.append(dataclasses.replace(base, mode=mode, queue_threshold=threshold, blend_steps=blend))
        else:
            configs.append(dataclasses.replace(base, mode=mode))
    return configs


def describe(config: ExecutorConfig) -> str:
    if config.mode == "async":
        return f"async threshold={config.queue_threshold:g} blend={config.blend}:{config.blend_steps}"
    if config.mode == "sync":
        return f"sync execute_steps={config.execute_steps or 'horizon'}"
    return f"ensemble coeff={config.ensemble_coeff:g}"


def summary_row(setting: str, metrics: dict) -> dict:
    """The figures of one run that trade off against each other (the sweep table's columns), from its metrics."""
    executor = metrics["executor"]
    rmse = metrics["joint_rmse"]
    max_error = metrics["joint_max_error"]
    return {
        "setting": setting,
        "mean joint RMSE": float(np.mean(list(rmse.values()))) if rmse else None,
        "max joint error": max(max_error.values()) if max_error else None,
        "underflows": executor["underflows"],
        "hold ticks": sum(metrics["holds"].values()),
        "boundary jerk ratio": executor["boundary_jerk_ratio"],
        "chunk disagreement (mean)": executor["disagreement_mean"],
        "interventions": metrics["interventions_total"],
        "accepted chunks": executor["accepted_chunks"],
        "rejected chunks": sum(executor["rejected_chunks"].values()),
    }


def run_sweep(bag_path: Path, remaps: dict, robot: RobotModel, policy: Policy, configs: Iterable[ExecutorConfig],
              options: ReplayOptions, ik_config=None, safety_config=None,
              progress: Callable[[int, str], None] | None = None) -> list[dict]:
    """One replay per config with the same policy object (loaded once); rows for the table."""
    rows = []
    for i, config in enumerate(configs):
        setting = describe(config)
        if progress is not None:
            progress(i, setting)
        with Bag(bag_path, remaps) as bag:
            record = run_replay(bag, robot, policy, config, options, ik_config, safety_config)
        metrics = compute_metrics(record)
        rows.append(summary_row(setting, metrics))
    return rows


def write_sweep(rows: list[dict], directory: Path, header: str) -> dict[str, Path]:
    """sweep.md (table), sweep.csv and sweep.json into `directory`."""
    directory = Path(directory)
    lines = ["# Executor sweep", "", header, ""] + table(COLUMNS, [[row[c] for c in COLUMNS] for row in rows])
    lines += ["", "Mean joint RMSE / max joint error: chain command vs the bag's recorded commands (rad or m; n/a "
                  "when the bag has none). Underflows: episodes where the executor ran out of actions.", ""]
    paths = {"markdown": directory / "sweep.md", "csv": directory / "sweep.csv", "json": directory / "sweep.json"}
    paths["markdown"].write_text("\n".join(lines))
    with paths["csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    paths["json"].write_text(json.dumps(rows, indent=2))
    return paths
