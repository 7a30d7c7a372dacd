"""A short Markdown report of one replay run, linking the plots next to it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from vla_ros.core.replay.markdown import cell, table


def render_report(metrics: Mapping, plots: Mapping[str, Path], directory: Path) -> str:
    run = metrics["run"]
    lines = [f"# Replay report: {Path(run['bag']).name}", ""]
    lines += [f"- bag: `{run['bag']}` ({run['storage']}, {run['duration_s']:.2f} s, {run['messages']} messages)",
              f"- robot: `{run['robot']}`, policy: `{run['policy']}` ({run['action_space']})",
              "- executor: " + ", ".join(f"{k}={v}" for k, v in run["executor"].items() if v is not None),
              f"- injected latency: {run['latency_ms']} ms ± {run['jitter_ms']} ms jitter (seed {run['seed']})",
              f"- instruction: {run['instruction']!r} ({run['instruction_source']})",
              *(f"- camera `{topic}`: {n['received']} frames, {n['stamp_read']} looked at by a request (stamp read "
                f"from the raw bytes), {n['decoded']} decoded for observations; frames nobody looked at were not "
                f"validated" for topic, n in run["camera_frames"].items()),
              f"- replayed {metrics['ticks']} control ticks, {metrics['commanded_ticks']} with a command", ""]

    comparison = metrics["comparison"]
    lines += ["## Chain vs recording", ""]
    if not comparison["available"]:
        lines += [f"**Nothing to compare:** {comparison['reason']}. No error figures are reported.", ""]
    else:
        lines += [f"Compared against: {', '.join(comparison['against'])}.", ""]
        rows = [(name, metrics["joint_rmse"][name], metrics["joint_max_error"][name], comparison["samples"][name])
                for name in metrics["joint_rmse"]]
        lines += table(("joint", "RMSE", "max error", "samples"), rows) + [""]
        if metrics["ee_error"]:
            rows = [(arm, e["position_rmse_m"] * 1e3, e["position_max_m"] * 1e3, e["orientation_rmse_rad"],
                     e["orientation_max_rad"]) for arm, e in metrics["ee_error"].items()]
            lines += table(("arm", "EE position RMSE [mm]", "max [mm]", "orientation RMSE [rad]", "max [rad]"),
                            rows) + [""]
        if metrics["gripper_agreement"]:
            lines += [f"- gripper open/closed agreement, arm {arm}: {g['agreement'] * 100:.1f} % of {g['samples']}"
                      for arm, g in metrics["gripper_agreement"].items()] + [""]
    if comparison["uncompared_joints"]:
        lines += ["Not compared: " + "; ".join(f"`{j}` ({why})" for j, why in comparison["uncompared_joints"].items()),
                  ""]

    lines += ["## Safety", ""]
    if metrics["interventions_total"]:
        lines += table(("intervention", "count"), [(k, n) for k, n in metrics["interventions"].items() if n]) + [""]
    else:
        lines += ["No safety interventions.", ""]
    executor = metrics["executor"]
    lines += ["## Executor", "",
              f"- chunks accepted {executor['accepted_chunks']}, repeated {executor['repeated_chunks']}, "
              f"rejected {executor['rejected_chunks'] or 0}, "
              f"underflows {executor['underflows']}, holds {metrics['holds'] or 'none'}",
              f"- boundary jerk max {cell(executor['boundary_jerk_max'])} (ratio to in-chunk "
              f"{cell(executor['boundary_jerk_ratio'])}), chunk disagreement mean {cell(executor['disagreement_mean'])}"
              f" / max {cell(executor['disagreement_max'])}", ""]
    latency = metrics["policy_latency"]
    lines += ["## Policy latency", "", f"- {latency['inferences']} inferences, {latency['errors']} failed"]
    for key, label in (("simulated_ms", "simulated"), ("inference_wall_ms", "policy.infer wall time"),
                       ("observation_age_at_delivery_ms", "observation age at delivery")):
        s = latency[key]
        if s:
            lines.append(f"- {label}: mean {s['mean']:.1f} ms, p95 {s['p95']:.1f} ms, max {s['max']:.1f} ms")
    lines.append("")
    if metrics["skipped"]:
        lines += ["## Skipped input", ""] + table(("reason", "count"), sorted(metrics["skipped"].items())) + [""]
    if plots:
        lines += ["## Plots", ""]
    for title, path in plots.items():
        link = os.path.relpath(path, directory)
        lines += [f"### {title}", "", f"![{title}]({link})", ""]
    lines += ["Full figures: [metrics.json](metrics.json)", ""]
    return "\n".join(lines)


def write_report(metrics: Mapping, plots: Mapping[str, Path], directory: Path) -> Path:
    path = Path(directory) / "report.md"
    path.write_text(render_report(metrics, plots, Path(directory)))
    return path
