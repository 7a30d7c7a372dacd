"""Fleet evaluation results: one row per (bag x executor setting) task, aggregated into report.md, summary.json and
distribution plots.

A task's row holds the figures of its replay metrics that a reader compares across bags (`task_row`). Settings are
compared on the bags every setting replayed successfully (paired: a bag that failed under one setting would otherwise
bias the others' means), by the mean over those bags of each figure in `COMPARED`, all of which are better lower.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from vla_ros.core.plots import pyplot, save_figure
from vla_ros.core.replay.markdown import cell, table
from vla_ros.core.replay.metrics import summary
from vla_ros.core.replay.sweep import summary_row

# Figures compared across settings, each better lower, with the unit they are shown in.
COMPARED = {
    "mean joint RMSE": "rad / m", "max joint error": "rad / m", "EE position RMSE [mm]": "mm",
    "EE orientation RMSE [rad]": "rad", "interventions": "count", "hold ticks": "ticks", "underflows": "episodes",
    "boundary jerk ratio": "x in-chunk", "chunk disagreement (mean)": "action units", "latency p95 [ms]": "ms",
}
# Shown per bag (and plotted as distributions across bags).
DISTRIBUTIONS = ("mean joint RMSE", "EE position RMSE [mm]", "interventions", "hold ticks", "latency p95 [ms]")


@dataclass(frozen=True)
class TaskResult:
    """One (bag x setting) task as the report sees it. `report` is its replay report, relative to the output
    directory; `row` its figures (None when it failed)."""

    bag: str
    bag_id: str
    setting: str
    status: str  # "ok" | "failed"
    error: str | None = None
    row: Mapping | None = None
    report: str | None = None
    seconds: float | None = None  # wall time of the task on its worker
    resumed: bool = False  # finished by an earlier run of the same evaluation


def task_row(metrics: Mapping) -> dict:
    """The figures of one replay (its metrics.json) a fleet report compares."""
    row = {k: v for k, v in summary_row("", metrics).items() if k != "setting"}
    ee = metrics["ee_error"] or {}
    row["EE position RMSE [mm]"] = max(e["position_rmse_m"] for e in ee.values()) * 1e3 if ee else None
    row["EE orientation RMSE [rad]"] = max(e["orientation_rmse_rad"] for e in ee.values()) if ee else None
    age = metrics["policy_latency"]["observation_age_at_delivery_ms"] or {}
    wall = metrics["policy_latency"]["inference_wall_ms"] or {}
    row.update({
        "latency p50 [ms]": age.get("p50"), "latency p95 [ms]": age.get("p95"),
        "inference wall p95 [ms]": wall.get("p95"),
        "interventions by kind": {kind: n for kind, n in metrics["interventions"].items() if n},
        "holds by reason": dict(metrics["holds"]),
        "duration [s]": metrics["run"]["duration_s"], "ticks": metrics["ticks"],
        "skipped input": sum(metrics["skipped"].values()),
    })
    return row


def aggregate(results: Sequence[TaskResult], settings: Sequence[str]) -> dict:
    """Per setting: figure distributions over its successful bags, interventions summed by kind, and the paired
    comparison (mean of each COMPARED figure over the bags every setting ran); the best setting per figure."""
    ok = [r for r in results if r.status == "ok"]
    bags_by_setting = {s: {r.bag_id for r in ok if r.setting == s} for s in settings}
    paired = set.intersection(*bags_by_setting.values()) if settings else set()
    out = {"settings": {}, "paired_bags": len(paired), "best": {}}
    for setting in settings:
        rows = [r.row for r in ok if r.setting == setting]
        kinds: dict[str, int] = {}
        for row in rows:
            for kind, n in row["interventions by kind"].items():
                kinds[kind] = kinds.get(kind, 0) + n
        paired_rows = [r.row for r in ok if r.setting == setting and r.bag_id in paired]
        out["settings"][setting] = {
            "bags_ok": len(rows),
            "bags_failed": sum(1 for r in results if r.setting == setting and r.status != "ok"),
            "distributions": {name: summary([row[name] for row in rows if row[name] is not None])
                              for name in (*COMPARED, "latency p50 [ms]", "inference wall p95 [ms]")},
            "interventions_by_kind": dict(sorted(kinds.items())),
            "paired_mean": {name: _mean([row[name] for row in paired_rows]) for name in COMPARED},
        }
    for name in COMPARED:
        candidates = [(v["paired_mean"][name], s) for s, v in out["settings"].items()
                      if v["paired_mean"][name] is not None]
        if candidates:
            value, setting = min(candidates, key=lambda c: c[0])  # min keeps the first of equal values
            out["best"][name] = {"setting": setting, "value": value}
    return out


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def plot_distributions(results: Sequence[TaskResult], settings: Sequence[str], path: Path) -> Path:
    """One panel per DISTRIBUTIONS figure: a histogram over bags (one setting) or a box per setting (sweep)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(DISTRIBUTIONS), figsize=(3.6 * len(DISTRIBUTIONS), 3.6 + 0.12 * len(settings)))
    for ax, name in zip(axes, DISTRIBUTIONS):
        per_setting = [[r.row[name] for r in results if r.status == "ok" and r.setting == s and r.row[name] is not None]
                       for s in settings]
        if not any(per_setting):
            ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
        elif len(settings) == 1:
            ax.hist(per_setting[0], bins=min(30, max(5, len(per_setting[0]))), color="tab:blue", alpha=0.8)
            ax.set_ylabel("bags", fontsize=8)
        else:
            ax.boxplot([values or [np.nan] for values in per_setting], orientation="horizontal")
            ax.set_yticks(range(1, len(settings) + 1), settings, fontsize=6)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    return save_figure(fig, path)


def plot_interventions(summary_: Mapping, path: Path) -> Path:
    """Safety interventions by kind, summed over bags, one group of bars per setting."""
    plt = pyplot()
    settings = list(summary_["settings"])
    kinds = sorted({k for v in summary_["settings"].values() for k in v["interventions_by_kind"]})
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.3 * max(1, len(settings))))
    if kinds:
        left = np.zeros(len(settings))
        for kind in kinds:
            counts = np.array([summary_["settings"][s]["interventions_by_kind"].get(kind, 0) for s in settings])
            ax.barh(range(len(settings)), counts, left=left, label=kind)
            left += counts
        ax.set_yticks(range(len(settings)), settings, fontsize=7)
        ax.legend(fontsize=7)
        ax.set_xlabel("interventions, summed over bags", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no safety interventions", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
    return save_figure(fig, path)


def render_report(run: Mapping, results: Sequence[TaskResult], summary_: Mapping, plots: Mapping[str, Path],
                  directory: Path) -> str:
    settings = list(summary_["settings"])
    failed = [r for r in results if r.status != "ok"]
    resumed = sum(r.resumed for r in results)
    bags = sorted({r.bag_id for r in results})
    lines = [f"# Fleet evaluation: policy `{run['policy']}` on robot `{run['robot']}`", "",
             f"- {len(bags)} bags x {len(settings)} executor setting(s) = {len(results)} tasks: "
             f"{len(results) - len(failed)} ok, {len(failed)} failed"
             + (f" ({resumed} finished by an earlier run and not redone)" if resumed else ""),
             f"- injected latency {run['latency_ms']:g} ms ± {run['jitter_ms']:g} ms (seed {run['seed']})"
             + (", measured latency" if run.get("measured_latency") else ""),
             f"- Ray: {run['ray']}; wall time {run['wall_s']:.1f} s", ""]
    if failed:
        lines += ["## Failed tasks", ""]
        lines += table(("bag", "setting", "error"), [(f"`{r.bag}`", r.setting, (r.error or "").replace("|", "/"))
                                                       for r in failed]) + [""]
    if len(settings) > 1:
        lines += ["## Settings compared", "",
                  f"Mean over the {summary_['paired_bags']} bags every setting replayed successfully; the best "
                  "(lowest) value of each column is in bold.", ""]
        best = summary_["best"]
        rows = []
        for setting in settings:
            means = summary_["settings"][setting]["paired_mean"]
            rows.append((setting, *(f"**{cell(means[n])}**" if best.get(n, {}).get("setting") == setting
                                    else cell(means[n]) for n in COMPARED)))
        lines += table(("setting", *COMPARED), rows) + [""]
        lines += ["Best setting per figure:", ""]
        lines += [f"- {name}: {b['setting']} ({cell(b['value'])} {COMPARED[name]})" for name, b in best.items()]
        lines.append("")
    lines += ["## Per bag", ""]
    header = ("bag", "duration [s]", "mean joint RMSE", "max joint error", "EE position RMSE [mm]",
              "EE orientation RMSE [rad]", "interventions by kind", "holds by reason", "underflows",
              "latency p50 / p95 [ms]", "report")
    for setting in settings:
        if len(settings) > 1:
            lines += [f"### {setting}", ""]
        rows = []
        for r in (r for r in results if r.setting == setting and r.status == "ok"):
            row = r.row
            rows.append((f"`{r.bag_id}`", row["duration [s]"], row["mean joint RMSE"], row["max joint error"],
                         row["EE position RMSE [mm]"], row["EE orientation RMSE [rad]"], row["interventions by kind"],
                         row["holds by reason"], row["underflows"],
                         f"{cell(row['latency p50 [ms]'], 3)} / {cell(row['latency p95 [ms]'], 3)}",
                         f"[report]({r.report})"))
        lines += (table(header, rows) if rows else ["No bag replayed successfully."]) + [""]
    lines += ["Joint errors: the chain's commands vs the bag's recorded controller commands (n/a without them); "
              "EE errors: worst arm; latency: observation age when its chunk arrived (capture to delivery).", ""]
    lines += ["## Distributions across bags", ""]
    rows = []
    for name in DISTRIBUTIONS:
        for setting in settings:
            s = summary_["settings"][setting]["distributions"][name]
            rows.append((name, setting, *(("n/a",) * 5 if s is None else
                                          (s["count"], s["mean"], s["p50"], s["p95"], s["max"]))))
    lines += table(("figure", "setting", "bags", "mean", "p50", "p95", "max"), rows) + [""]
    for title, path in plots.items():
        lines += [f"![{title}]({os.path.relpath(path, directory)})", ""]
    lines += ["Every figure: [summary.json](summary.json); each bag's own replay report is linked in its row.", ""]
    return "\n".join(lines)


def write_fleet_report(run: Mapping, results: Sequence[TaskResult], settings: Sequence[str],
                       directory: Path) -> dict[str, Path]:
    """report.md, summary.json and plots/*.png into `directory`."""
    directory = Path(directory)
    (directory / "plots").mkdir(parents=True, exist_ok=True)
    summary_ = aggregate(results, settings)
    plots = {
        "Distributions across bags": plot_distributions(results, settings, directory / "plots" / "distributions.png"),
        "Safety interventions by kind": plot_interventions(summary_, directory / "plots" / "interventions.png"),
    }
    paths = {"report": directory / "report.md", "summary": directory / "summary.json", **plots}
    paths["report"].write_text(render_report(run, results, summary_, plots, directory))
    paths["summary"].write_text(json.dumps({"run": dict(run), **summary_, "tasks": [asdict(r) for r in results]},
                                           indent=2, allow_nan=False) + "\n")
    return paths
