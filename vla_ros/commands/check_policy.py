"""`vla-ros check-policy POLICY --robot R`: the action-contract self-test (vla_ros/core/contract.py).

An identity policy (hold still, in the policy's own conventions) runs closed-loop through the policy's request
building and reply parsing, the executor, IK and the safety filter; the robot must not move. Needs no model and no
server. Exit 0: the contract holds; 1: a hold-still policy moves the robot (the report names what and why); 2: a
user error (bad config, unknown joint, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from vla_ros.commands.check_robot import _table
from vla_ros.core.config import Section, load_yaml
from vla_ros.core.contract import ContractConfig, ContractReport, check_contract, offset_state
from vla_ros.core.errors import ConfigError
from vla_ros.core.robot import RobotModel, load_robot


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("policy", help="built-in policy name (config/policies/<name>.yaml) or path to a policy YAML")
    parser.add_argument("--robot", required=True, help="built-in robot name or path to a robot YAML")
    parser.add_argument("--urdf", help="use this URDF instead of the one the robot YAML names")
    parser.add_argument("--checkpoint", help="use this checkpoint directory instead of the YAML's `checkpoint:` "
                                             "(backend lerobot)")
    parser.add_argument("--state", nargs="+", metavar="JOINT=VALUE",
                        help="check from this state (joints not named stay at home) instead of the home pose and "
                             "the home pose with per-joint offsets")
    parser.add_argument("--chunks", type=int, default=ContractConfig.chunks, help="identity chunks run closed-loop")
    parser.add_argument("--joint-tolerance", type=float, default=ContractConfig.joint_tolerance,
                        help="largest motion of an arm joint (rad or m) or an EE pose (m, rad)")
    parser.add_argument("--gripper-tolerance", type=float, default=ContractConfig.gripper_tolerance,
                        help="largest motion of a gripper, as a fraction of its opening")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the report as JSON")


def load_policy(policy: str, robot: RobotModel, checkpoint: str | None = None):
    """The policy as the node builds it; `checkpoint` replaces the YAML's `checkpoint:` (relative to the cwd)."""
    from vla_ros.core.policies import make_policy, resolve_policy_config

    path = resolve_policy_config(policy)
    if checkpoint is None:
        return make_policy(path, robot)
    config = dict(load_yaml(path))
    Section(config, path).choice("backend", ("lerobot",))  # --checkpoint is the lerobot backend's key
    config["checkpoint"] = str(Path(checkpoint).expanduser().resolve())
    return make_policy(config, robot, source=path)


def parse_state(items: list[str], robot: RobotModel) -> np.ndarray:
    q = robot.home.copy()
    for item in items:
        name, _, value = item.partition("=")
        if name not in robot.joint_names:
            raise ConfigError("--state", name, f"not a joint of robot {robot.name} (joints: "
                                               f"{', '.join(robot.joint_names)})")
        try:
            q[robot.joint_names.index(name)] = float(value)
        except ValueError:
            raise ConfigError("--state", name, f"expected JOINT=NUMBER, got {item!r}") from None
        i = robot.joint_names.index(name)
        if not robot.limits.lower[i] <= q[i] <= robot.limits.upper[i]:
            raise ConfigError("--state", name, f"{q[i]:g} is outside its limits [{robot.limits.lower[i]:g}, "
                                               f"{robot.limits.upper[i]:g}]")
    return q


def format_report(report: ContractReport) -> str:
    space = report.space
    lines = [f"policy {report.policy} ({report.backend}) on robot {report.robot}: {space.kind} over arms "
             f"{', '.join(space.arms)}, {report.horizon} steps at {report.rate_hz:g} Hz"]
    for state in report.states:
        lines += ["", f"state {state.label}: {state.chunks} hold-still chunks, {state.ticks} control ticks"]
        if state.rejected is not None:
            lines.append(f"  the chain refused the identity chunk: {state.rejected}")
            continue
        rows = [["joint / EE", "start", "max motion", "tolerance", "commanded", ""]]
        for m in state.motions:
            fraction = f" ({m.opening_motion:.3f} of opening)" if m.opening_motion is not None else ""
            start = f"{m.start:.4f}" if m.expected == m.start else f"{m.start:.4f} -> {m.expected:.4f}"
            rows.append([m.name, f"{start} {m.unit}", f"{m.motion:.2g}{fraction}", f"{m.tolerance:.2g}",
                         f"{m.commanded_motion:.2g}", "ok" if m.ok else "MOVED"])
        lines += ["  " + line for line in _table(rows).splitlines()]
        lines += [f"  cause: {m.cause}" for m in state.motions if not m.ok]
    lines += [""] + [f"note: {note}" for note in report.notes]
    lines.append("PASS: a policy that holds still keeps the robot still" if report.passed else
                 f"FAIL: a policy that holds still moves the robot: {report.first_cause()}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    robot = load_robot(args.robot, urdf=args.urdf)
    policy = load_policy(args.policy, robot, args.checkpoint)
    if args.chunks < 1 or not args.joint_tolerance > 0 or not args.gripper_tolerance > 0:
        raise ConfigError("check-policy", "--chunks / --joint-tolerance / --gripper-tolerance", "must be positive")
    states = [("given", parse_state(args.state, robot))] if args.state else \
        [("home", robot.home), ("home+offsets", offset_state(robot))]
    config = ContractConfig(args.joint_tolerance, args.gripper_tolerance, args.chunks)
    report = check_contract(policy, robot, states, config)
    print(format_report(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**dataclasses.asdict(report), "passed": report.passed}, indent=2,
                                        default=float))
    return 0 if report.passed else 1
