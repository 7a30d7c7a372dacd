"""Replay plots (matplotlib, Agg backend: no display needed): joints, EE path, interventions timeline, latency."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vla_ros.core.plots import JointSeries, plot_joint_series, pyplot, save_figure
from vla_ros.core.replay.metrics import ReplayRecord, recorded_arm_configurations

_MAX_PATH_POINTS = 2000  # FK per plotted point; a long bag is subsampled for the EE path


def plot_joints(record: ReplayRecord, path: Path) -> Path:
    """Commanded (chain) vs recorded command vs measured, one panel per joint."""
    t = record.times - record.start_time
    series = [JointSeries("measured", t, record.measured, {"color": "0.7", "lw": 1}),
              JointSeries("chain command", t, record.commanded, {"color": "tab:blue", "lw": 1.2})]
    recorded = {j: [JointSeries("recorded command", times - record.start_time, values,
                                {"color": "tab:orange", "lw": 1, "ls": "--"})]
                for j, (times, values) in record.recorded.items()}
    return plot_joint_series(path, record.robot.joint_names, series, "bag time [s]", recorded)


def _ee_path(record: ReplayRecord, q_rows: np.ndarray, arm) -> np.ndarray:
    robot, data = record.robot, record.robot.new_data()
    rows = q_rows[np.all(np.isfinite(q_rows[:, arm.index]), axis=1)]
    if len(rows) > _MAX_PATH_POINTS:
        rows = rows[np.linspace(0, len(rows) - 1, _MAX_PATH_POINTS).astype(int)]
    q = robot.home.copy()
    points = []
    for row in rows:
        q[arm.index] = row[arm.index]
        points.append(robot.fk(q, arm.ee_frame_id, data).translation)
    return np.array(points).reshape(-1, 3)


def plot_ee_path(record: ReplayRecord, path: Path) -> Path:
    """EE position of each arm, chain command vs recorded command, top (x-y) and side (x-z) views."""
    plt = pyplot()
    arms = record.robot.arms
    fig, axes = plt.subplots(len(arms), 2, figsize=(10, 4.2 * len(arms)), squeeze=False)
    for a, arm in enumerate(arms):
        commanded = _ee_path(record, record.commanded, arm)
        configurations = recorded_arm_configurations(record, arm)
        recorded = None if configurations is None else _ee_path(record, configurations[1], arm)
        for ax, (i, k, label) in zip(axes[a], ((0, 1, "y"), (0, 2, "z"))):
            if len(commanded):
                ax.plot(commanded[:, i], commanded[:, k], color="tab:blue", lw=1.2, label="chain command")
                ax.plot(commanded[0, i], commanded[0, k], "o", color="tab:blue", ms=4)
            if recorded is not None and len(recorded):
                ax.plot(recorded[:, i], recorded[:, k], color="tab:orange", lw=1, ls="--", label="recorded command")
            ax.set_xlabel(f"x [m] ({record.robot.base_frame})", fontsize=8)
            ax.set_ylabel(f"{label} [m]", fontsize=8)
            ax.set_title(f"arm {arm.name}: {'top' if label == 'y' else 'side'} view", fontsize=9)
            ax.set_aspect("equal", adjustable="datalim")
            ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_interventions(record: ReplayRecord, path: Path) -> Path:
    """Safety interventions and executor holds over time, one row per kind."""
    plt = pyplot()
    events = [(t, f"safety: {kind}") for t, kind, _ in record.interventions]
    events += [(t, f"hold: {hold}") for t, hold in zip(record.times, record.holds) if hold is not None]
    kinds = sorted({kind for _, kind in events})
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.35 * max(1, len(kinds))))
    if kinds:
        row = {kind: i for i, kind in enumerate(kinds)}
        times = np.array([t for t, _ in events]) - record.start_time
        ax.scatter(times, [row[kind] for _, kind in events], marker="|", s=80,
                   c=["tab:red" if kind.startswith("safety") else "tab:gray" for _, kind in events])
        ax.set_yticks(range(len(kinds)), kinds, fontsize=8)
    else:
        ax.text(0.5, 0.5, "no safety interventions and no executor holds", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_yticks([])
    if len(record.times):
        ax.set_xlim(0, record.times[-1] - record.start_time)
    ax.set_xlabel("bag time [s]", fontsize=8)
    return save_figure(fig, path)


def plot_latency(record: ReplayRecord, path: Path) -> Path:
    """Histogram of the simulated policy latency and of the measured inference time."""
    plt = pyplot()
    completed = [i for i in record.inferences if i.error is None]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    if completed:
        simulated = np.array([i.simulated_latency for i in completed]) * 1e3
        wall = np.array([i.wall_time for i in completed]) * 1e3
        top = max(simulated.max(), wall.max(), 1e-3)
        bins = np.linspace(0, top * 1.05, 40)
        ax.hist(simulated, bins=bins, alpha=0.6, label="simulated latency (replay timing)")
        ax.hist(wall, bins=bins, alpha=0.6, label="policy.infer wall time (this machine)")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no completed inference", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("ms", fontsize=8)
    ax.set_ylabel("inferences", fontsize=8)
    return save_figure(fig, path)


def write_plots(record: ReplayRecord, directory: Path) -> dict[str, Path]:
    """All plots into `directory`; returns {title: path}."""
    directory = Path(directory)
    return {
        "Commanded vs recorded joints": plot_joints(record, directory / "joints.png"),
        "End-effector path": plot_ee_path(record, directory / "ee_path.png"),
        "Safety interventions and executor holds": plot_interventions(record, directory / "interventions.png"),
        "Policy latency": plot_latency(record, directory / "latency.png"),
    }
