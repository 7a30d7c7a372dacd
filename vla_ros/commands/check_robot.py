"""`vla-ros check-robot ROBOT_OR_YAML [--urdf PATH] [--json]`: load a robot and print what vla_ros understood.

Works for the built-in robots and for a user's own YAML + URDF: the way to validate a URDF swap before it ever
reaches hardware.
"""

from __future__ import annotations

import argparse
import json

import pinocchio as pin

from vla_ros.core.robot import RobotModel, load_robot


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("robot", help="built-in robot name (franka, widowx, ur5, aloha) or path to a robot YAML")
    parser.add_argument("--urdf", help="use this URDF instead of the one the YAML names")
    parser.add_argument("--json", action="store_true", help="print a JSON report instead of tables")
    parser.add_argument("--samples", type=int, default=2000, help="random configurations for the workspace extent")


def report(robot: RobotModel, samples: int) -> dict:
    lim = robot.limits
    arms = []
    for arm in robot.arms:
        pose = robot.fk(robot.home, arm.ee_frame_id)
        arms.append({
            "name": arm.name,
            "joints": list(arm.joints),
            "ee_frame": arm.ee_frame,
            "gripper": None if arm.gripper is None else {
                "joint": arm.gripper.joint, "open": arm.gripper.open, "closed": arm.gripper.closed},
            "home": arm.home.tolist(),
            "fk_home": {"xyz": pose.translation.round(6).tolist(), "rpy": pin.rpy.matrixToRpy(pose.rotation).round(6).tolist()},
            "workspace_box": {"min": arm.workspace_min.tolist(), "max": arm.workspace_max.tolist()},
            "max_ee_speed": {"linear": arm.max_ee_linear_speed, "angular": arm.max_ee_angular_speed},
        })
    return {
        "name": robot.name,
        "config": str(robot.config_path),
        "urdf": str(robot.urdf_path),
        "base_frame": robot.base_frame,
        "control_rate_hz": robot.control_rate_hz,
        "joints": [
            {"name": n, "lower": float(lim.lower[i]), "upper": float(lim.upper[i]), "velocity": float(lim.velocity[i]),
             "acceleration": float(lim.acceleration[i]), "jerk": float(lim.jerk[i]), "effort": float(lim.effort[i])}
            for i, n in enumerate(robot.joint_names)
        ],
        "arms": arms,
        "controllers": [
            {"name": c.name, "interface": c.interface, "topic": c.topic, "joints": list(c.joints),
             "command_name": c.command_name, "command_range": c.command_range}
            for c in robot.controllers
        ],
        "joint_states": [{"topic": s.topic, "prefix": s.prefix} for s in robot.joint_state_sources],
        "cameras": [{"name": c.name, "topic": c.topic, "encoding": c.encoding, "width": c.width, "height": c.height}
                    for c in robot.cameras],
        "reachable_workspace": robot.workspace_extent(samples),
    }


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_report(rep: dict) -> str:
    out = [f"robot {rep['name']}  (config {rep['config']})", f"urdf  {rep['urdf']}",
           f"base frame {rep['base_frame']}, control rate {rep['control_rate_hz']:g} Hz", "", "joints"]
    rows = [["joint", "lower", "upper", "vel", "acc", "jerk", "effort"]]
    rows += [[j["name"]] + [f"{j[k]:.4g}" for k in ("lower", "upper", "velocity", "acceleration", "jerk", "effort")]
             for j in rep["joints"]]
    out += [_table(rows), "", "arms"]
    rows = [["arm", "ee frame", "gripper (open / closed)", "FK at home xyz [m]", "rpy [rad]", "reachable box [m]"]]
    for arm in rep["arms"]:
        g = arm["gripper"]
        reach = rep["reachable_workspace"][arm["name"]]
        rows.append([
            arm["name"], arm["ee_frame"], "none" if g is None else f"{g['joint']} ({g['open']:g} / {g['closed']:g})",
            " ".join(f"{v:+.4f}" for v in arm["fk_home"]["xyz"]), " ".join(f"{v:+.3f}" for v in arm["fk_home"]["rpy"]),
            f"{reach['min']} .. {reach['max']} (reach {reach['max_reach']:.3f})",
        ])
    out += [_table(rows), "", "controllers"]
    rows = [["name", "interface", "topic", "joints"]]
    rows += [[c["name"], c["interface"], c["topic"], ", ".join(c["joints"])] for c in rep["controllers"]]
    out += [_table(rows), "", "inputs"]
    rows = [["kind", "topic", "detail"]]
    rows += [["joint_states", s["topic"], f"prefix {s['prefix']!r}"] for s in rep["joint_states"]]
    rows += [["camera " + c["name"], c["topic"], f"{c['width']}x{c['height']} {c['encoding']}"] for c in rep["cameras"]]
    out.append(_table(rows))
    return "\n".join(out)


def main(args: argparse.Namespace) -> int:
    robot = load_robot(args.robot, urdf=args.urdf)
    rep = report(robot, args.samples)
    print(json.dumps(rep, indent=2) if args.json else format_report(rep))
    return 0
