"""Replay metrics: what the chain commanded vs what the bag recorded, plus safety, executor and latency figures.

Alignment: the chain commands once per control tick; a recorded command (received at bag time t) is compared
with the chain's command of the latest tick at or before t (zero-order hold), which is the command that was in
force when the recorded one was sent. Recorded samples with no chain command in force (before the chain's first
command, or while it published nothing) are counted, not compared. When nothing at all could be compared the
metrics say so (`comparison.available` false, error keys null) instead of reporting zeros.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pinocchio as pin

from vla_ros.core.robot import RobotModel
from vla_ros.core.safety.report import LIMITS
from vla_ros.core.types import ActionSpace

# Two floats that should be the same bag time can differ in the last bits after ns -> s conversions.
_TIME_EPS = 1e-9


@dataclass
class Inference:
    """One simulated policy call: requested at `requested_at` (bag time), answered at `delivered_at`."""

    requested_at: float
    observation_stamp: float
    simulated_latency: float  # s, what the replay injected
    wall_time: float  # s, what policy.infer actually took on this machine
    delivered_at: float
    error: str | None = None


@dataclass
class ReplayRecord:
    """Everything one replay run produced, tick by tick, in bag time (seconds)."""

    robot: RobotModel
    action_space: ActionSpace
    start_time: float  # bag start; plots show time relative to it
    times: np.ndarray  # (K,) control tick times
    commanded: np.ndarray  # (K, nq) safe command published at each tick; NaN rows when nothing was published
    measured: np.ndarray  # (K, nq) measured joint state the chain saw (NaN before a joint was first measured)
    actions: np.ndarray  # (K, D) executor action per tick (NaN while it had none)
    holds: list[str | None]  # executor hold reason per tick (None while executing)
    safety_states: list[str]  # safety filter state per tick
    interventions: list[tuple[float, str, str]]  # (time, limit kind, joint / arm / "" it concerns)
    ik_flags: Counter  # IK status flags summed over ticks and arms
    recorded: dict[int, tuple[np.ndarray, np.ndarray]]  # joint index -> (times, values) of recorded commands
    recorded_actions: tuple[np.ndarray, np.ndarray] | None  # (times, (M, D) actions) from an actions topic
    inferences: list[Inference]
    executor_stats: dict
    skipped: Counter  # reason -> count of messages / samples not used
    notes: dict = field(default_factory=dict)  # what was compared, what could not be, and why


def zoh_indices(tick_times: np.ndarray, sample_times: np.ndarray) -> np.ndarray:
    """Index of the latest tick at or before each sample time (-1 when the sample precedes every tick)."""
    return np.searchsorted(tick_times, np.asarray(sample_times) + _TIME_EPS, side="right") - 1


def summary(values, scale: float = 1.0) -> dict | None:
    """count / mean / p50 / p95 / max of `values` (times `scale`), or None when there are none."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if not values.size:
        return None
    values = values * scale
    return {"count": int(values.size), "mean": float(values.mean()), "p50": float(np.percentile(values, 50)),
            "p95": float(np.percentile(values, 95)), "max": float(values.max())}


@dataclass(frozen=True)
class JointComparison:
    """Per joint: the recorded samples that had a chain command in force, and both values."""

    times: np.ndarray
    recorded: np.ndarray
    commanded: np.ndarray


def joint_comparisons(record: ReplayRecord) -> tuple[dict[int, JointComparison], int]:
    """Pair every recorded command sample with the chain's command in force; also count unpaired samples."""
    pairs, unpaired = {}, 0
    for joint, (times, values) in record.recorded.items():
        ticks = zoh_indices(record.times, times)
        valid = ticks >= 0
        commanded = np.full(len(times), np.nan)
        commanded[valid] = record.commanded[ticks[valid], joint]
        keep = np.isfinite(commanded)
        unpaired += int((~keep).sum())
        if keep.any():
            pairs[joint] = JointComparison(times[keep], values[keep], commanded[keep])
    return pairs, unpaired


def recorded_arm_configurations(record: ReplayRecord, arm) -> tuple[np.ndarray, np.ndarray] | None:
    """(times, (n, nq) q) at the times the arm's first joint was recorded, every arm joint at its recorded value in
    force then (NaN before its first sample); None unless every arm joint was recorded."""
    if not all(int(j) in record.recorded for j in arm.index):
        return None
    times = record.recorded[int(arm.index[0])][0]
    q = np.full((len(times), record.robot.nq), np.nan)
    for j in arm.index:
        j_times, j_values = record.recorded[int(j)]
        at = zoh_indices(j_times, times)
        q[at >= 0, j] = j_values[at[at >= 0]]
    return times, q


def _ee_errors(robot: RobotModel, record: ReplayRecord, pairs: Mapping[int, JointComparison]) -> dict:
    """Per arm: EE position (m) and orientation (rad) error between FK of the commanded and the recorded joints,
    at the times the arm's joints were recorded (every arm joint needs a recorded value in force)."""
    out = {}
    data = robot.new_data()
    for arm in robot.arms:
        recorded = recorded_arm_configurations(record, arm)
        if recorded is None:
            continue
        times, q_recorded = recorded
        ticks = zoh_indices(record.times, times)
        usable = (ticks >= 0)
        usable[usable] &= np.all(np.isfinite(record.commanded[ticks[usable]][:, arm.index]), axis=1)
        usable &= np.all(np.isfinite(q_recorded[:, arm.index]), axis=1)
        if not usable.any():
            continue
        position, orientation = [], []
        q_cmd_full, q_rec_full = robot.home.copy(), robot.home.copy()
        for row, tick in zip(np.flatnonzero(usable), ticks[usable]):
            q_cmd_full[arm.index] = record.commanded[tick, arm.index]
            q_rec_full[arm.index] = q_recorded[row, arm.index]
            commanded_pose = robot.fk(q_cmd_full, arm.ee_frame_id, data)
            recorded_pose = robot.fk(q_rec_full, arm.ee_frame_id, data)
            position.append(np.linalg.norm(commanded_pose.translation - recorded_pose.translation))
            orientation.append(np.linalg.norm(pin.log3(recorded_pose.rotation.T @ commanded_pose.rotation)))
        position, orientation = np.array(position), np.array(orientation)
        out[arm.name] = {
            "samples": int(len(position)),
            "position_rmse_m": float(np.sqrt(np.mean(position**2))), "position_max_m": float(position.max()),
            "orientation_rmse_rad": float(np.sqrt(np.mean(orientation**2))),
            "orientation_max_rad": float(orientation.max()),
        }
    return out


def _gripper_agreement(robot: RobotModel, pairs: Mapping[int, JointComparison]) -> dict:
    """Per arm with a gripper: fraction of recorded samples where chain and recording agree on open vs closed."""
    out = {}
    for arm in robot.arms:
        if arm.gripper is None or arm.gripper.index not in pairs:
            continue
        pair = pairs[arm.gripper.index]
        opening = np.vectorize(arm.gripper.opening)
        agree = (opening(pair.commanded) >= 0.5) == (opening(pair.recorded) >= 0.5)
        out[arm.name] = {"samples": int(agree.size), "agreement": float(agree.mean())}
    return out


def rate_columns(space: ActionSpace) -> np.ndarray:
    """Columns holding per-step motion (the motion columns of ee_delta / joint_delta): their value depends on the
    step length, unlike absolute columns (positions, poses, grippers) and velocities."""
    if space.kind not in ("ee_delta", "joint_delta"):
        return np.zeros(0, dtype=int)
    columns, start = [], 0
    for i in range(len(space.arms)):
        columns += range(start, start + space.motion_width(i))
        start += space.arm_width(i)
    return np.array(columns, dtype=int)


def _action_errors(record: ReplayRecord) -> dict | None:
    """Chain action in force vs each recorded action, per column. Per-step motion columns are compared as rates
    (divided by the control period, resp. the recorded actions' median interval): the executor spreads a chunk step's
    delta over the control ticks it covers."""
    if record.recorded_actions is None:
        return None
    times, values = record.recorded_actions
    ticks = zoh_indices(record.times, times)
    valid = ticks >= 0
    chain = np.full(values.shape, np.nan)
    chain[valid] = record.actions[ticks[valid]]
    keep = np.all(np.isfinite(chain), axis=1)
    if not keep.any():
        return {"samples": 0, "column_rmse": None, "column_max_error": None}
    rates = rate_columns(record.action_space)
    if rates.size and len(times) < 2:
        return {"samples": int(keep.sum()), "column_rmse": None, "column_max_error": None,
                "reason": "a single recorded action has no interval to turn its per-step deltas into rates"}
    recorded, chain = values[keep].copy(), chain[keep]
    if rates.size:
        chain[:, rates] *= record.robot.control_rate_hz
        recorded[:, rates] /= float(np.median(np.diff(times)))
    error = chain - recorded
    return {"samples": int(keep.sum()), "rate_columns": rates.tolist(),
            "column_rmse": np.sqrt(np.mean(error**2, axis=0)).tolist(),
            "column_max_error": np.abs(error).max(axis=0).tolist()}


def compute_metrics(record: ReplayRecord) -> dict:
    """The metrics of one run, JSON-ready (see the module docstring for the comparison rules)."""
    robot = record.robot
    names = robot.joint_names
    pairs, unpaired = joint_comparisons(record)
    skipped = Counter(record.skipped)
    if unpaired:
        skipped["recorded_command_without_chain_command"] += unpaired
    available = bool(pairs)
    if available:
        reason = None
    elif record.recorded:
        reason = "the chain published no command while the recorded commands were in force"
    else:
        reason = record.notes.get("no_commands_reason", "the bag has no recorded controller commands")
    joint_rmse = {names[j]: float(np.sqrt(np.mean((p.commanded - p.recorded) ** 2))) for j, p in pairs.items()}
    joint_max = {names[j]: float(np.max(np.abs(p.commanded - p.recorded))) for j, p in pairs.items()}
    ee = _ee_errors(robot, record, pairs) if available else {}
    interventions = Counter({kind: 0 for kind in LIMITS})  # every kind, so runs compare key by key
    interventions.update(kind for _, kind, _ in record.interventions)
    by_joint = Counter(f"{kind}:{what}" for _, kind, what in record.interventions if what)
    completed = [i for i in record.inferences if i.error is None]
    commanded_ticks = int(np.all(np.isfinite(record.commanded), axis=1).sum())
    metrics = {
        "comparison": {
            "available": available,
            "reason": reason,
            "against": record.notes.get("compared_topics", []),
            "samples": {names[j]: int(len(p.times)) for j, p in pairs.items()},
            "uncompared_joints": record.notes.get("uncompared_joints", {}),
        },
        "joint_rmse": joint_rmse if available else None,
        "joint_max_error": joint_max if available else None,
        "ee_error": ee if available else None,
        "gripper_agreement": _gripper_agreement(robot, pairs) if available else None,
        "action_error": _action_errors(record),
        "interventions": dict(interventions),
        "interventions_total": int(sum(interventions.values())),
        "interventions_by_joint": dict(sorted(by_joint.items())),
        "safety_states": dict(sorted(Counter(record.safety_states).items())),
        "ik": dict(sorted(record.ik_flags.items())),
        "executor": record.executor_stats,
        "holds": dict(sorted(Counter(h for h in record.holds if h is not None).items())),
        "ticks": int(len(record.times)),
        "commanded_ticks": commanded_ticks,
        "policy_latency": {
            "inferences": len(record.inferences),
            "errors": len(record.inferences) - len(completed),
            "simulated_ms": summary([i.simulated_latency for i in completed], 1e3),
            "inference_wall_ms": summary([i.wall_time for i in completed], 1e3),
            "observation_age_at_delivery_ms": summary([i.delivered_at - i.observation_stamp for i in completed], 1e3),
        },
        "skipped": dict(sorted(skipped.items())),
    }
    return metrics
