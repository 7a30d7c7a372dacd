"""`vla-ros bringup --robot R --policy P [--sim] [--duration S] [--summary OUT.json]`: the whole node graph in one
process (policy_node, ik_node for EE policies, safety_node), one executor thread per node; with --sim a simulated
robot (sim_node) as a second process, as a robot's driver would be.

The path for pip-only installs; launch/bringup.launch.py starts the same nodes as separate processes.
DDS stays on loopback (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) and uses the shipped Fast DDS profile
(config/fastdds.xml) unless FASTRTPS_DEFAULT_PROFILES_FILE is already set.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--robot", required=True, help="built-in robot (franka, widowx, ur5, aloha) or a robot YAML")
    parser.add_argument("--policy", default="baseline", help="built-in policy or a policy YAML (default: baseline)")
    parser.add_argument("--sim", action="store_true", help="also start sim_node (a simulated robot and cameras) as its own process")
    parser.add_argument("--duration", type=float, help="stop after this many seconds (default: run until Ctrl-C)")
    parser.add_argument("--summary", type=Path, help="write a JSON summary of the run here")
    parser.add_argument("--controller-interface", default="", choices=["", "float64_multi_array"],
                        help="publish std_msgs/Float64MultiArray on the configured topics instead of the interbotix / "
                             "GripperCommand interfaces (their packages are not pip-installable)")
    parser.add_argument("--params-file", type=Path, help="node parameters (default: config/nodes.yaml)")
    parser.add_argument("--instruction", default="", help="initial task instruction")
    parser.add_argument("--niceness", type=int, default=-10,
                        help="run the graph at this priority when permitted (default -10; 0 = unchanged)")


def main(args: argparse.Namespace) -> int:
    from vla_ros.core.errors import ConfigError
    from vla_ros.ros.bringup import run

    if args.duration is not None and not args.duration > 0:
        raise ConfigError("--duration", "", f"expected a positive number of seconds, got {args.duration}")
    if args.params_file is not None and not args.params_file.is_file():
        raise ConfigError(args.params_file, "", "params file not found")
    overrides = {"instruction": args.instruction} if args.instruction else None
    result = run(args.robot, args.policy, args.sim, args.duration, args.controller_interface, args.params_file, overrides,
                 niceness=args.niceness)
    text = json.dumps(result, indent=2, default=str)
    if args.summary:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(text + "\n")
    print(text)
    return 0
