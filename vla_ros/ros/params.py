"""Node parameters: declared with their defaults in one table per node, read back typed.

Values come (highest precedence first) from explicit overrides (the one-process bringup), `-p name:=value`,
`--params-file config/nodes.yaml`, then the defaults below. Every topic is a plain ROS name, so `--remap` works too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from rclpy.node import Node
from rclpy.parameter import Parameter

from vla_ros.core.robot import RobotModel, load_robot
from vla_ros.resources import share_dir

COMMON = {
    "robot": "franka",  # built-in robot name or a robot YAML path
    "urdf": "",  # replaces the URDF the robot YAML names
    "controller_interface_override": "",  # "float64_multi_array": see vla_ros.ros.controllers
    "joint_state_timeout": 0.1,  # s without a joint_states update -> hold
}


def declare(node: Node, table: Mapping[str, Any]) -> None:
    for name, default in {**COMMON, **table}.items():
        if not node.has_parameter(name):
            node.declare_parameter(name, default)


def value(node: Node, name: str) -> Any:
    return node.get_parameter(name).value


def as_overrides(values: Mapping[str, Any]) -> list[Parameter]:
    """{name: value} -> rclpy Parameters for Node(parameter_overrides=...)."""
    return [Parameter(name, value=v) for name, v in values.items()]


def robot_from_params(node: Node) -> RobotModel:
    urdf = value(node, "urdf")
    return load_robot(value(node, "robot"), urdf=Path(urdf) if urdf else None)


def fastdds_profile() -> Path:
    return share_dir() / "config" / "fastdds.xml"


def nodes_params_file() -> Path:
    return share_dir() / "config" / "nodes.yaml"


def use_fastdds_profile(env: dict | None = None, profile: Path | None = None) -> dict:
    """Point Fast DDS at the shipped profile (shared memory for images, UDP on loopback) unless the user already
    chose one. Must run before the first rclpy.init() of the process (Fast DDS reads it once)."""
    env = os.environ if env is None else env
    profile = str(profile or fastdds_profile())
    if not env.get("FASTRTPS_DEFAULT_PROFILES_FILE") and not env.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        env["FASTRTPS_DEFAULT_PROFILES_FILE"] = env["FASTDDS_DEFAULT_PROFILES_FILE"] = profile
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return env


def raise_priority(niceness: int) -> str | None:
    """Run this process (and every thread it starts from now on: Linux gives each thread its own nice value,
    inherited at creation) at `niceness`, before rclpy starts its DDS threads. On a shared robot PC another busy
    process (a policy server, a bag recorder) otherwise takes CPU from the control path; ros2_control gives its loop
    real-time priority for the same reason. Returns a one-line note when it is not permitted (no CAP_SYS_NICE, or
    `ulimit -e` too low): the graph then runs at normal priority."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if niceness >= current:
        return None
    try:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
    except PermissionError:
        return (f"note: cannot raise this process's priority to nice {niceness} (needs CAP_SYS_NICE or ulimit -e); "
                f"running at nice {current}")
    return None
