"""Shared helpers for the policy backend tests: observations, a robot with a wrist camera. The loopback servers of
the peers' protocols live in vla_ros.peer_servers (the policy bench uses them too)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from vla_ros.core.policies import make_policy
from vla_ros.core.robot import load_robot
from vla_ros.core.types import Observation
from vla_ros.resources import policy_config_dir, robot_config_dir


def observation(robot, images: dict, q: np.ndarray | None = None, instruction: str = "pick up the block",
                stamp: float = 10.0, dq: np.ndarray | None = None) -> Observation:
    q = robot.home if q is None else q
    velocities = {} if dq is None else dict(zip(robot.joint_names, map(float, dq)))
    return Observation(images, dict(zip(robot.joint_names, map(float, q))), instruction, stamp, velocities)


def franka_with_wrist_camera(directory: Path):
    """The built-in franka plus a wrist camera on the hand (DROID needs an exterior and a wrist image)."""
    config = yaml.safe_load((robot_config_dir() / "franka.yaml").read_text())
    config["urdf"] = str((robot_config_dir() / config["urdf"]).resolve())
    config["cameras"].append({
        "name": "wrist", "topic": "/wrist/image_raw", "encoding": "rgb8", "width": 320, "height": 240,
        "fov_y_deg": 58.0, "pose": {"parent": "panda_hand", "xyz": [0.05, 0.0, 0.05], "rpy": [0.0, 0.0, -1.5708]},
    })
    path = directory / "franka_wrist.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return load_robot(path)


def camera_images(robot, seed: int = 0) -> dict[str, np.ndarray]:
    """A random RGB frame from every camera of `robot`, at the camera's resolution."""
    rng = np.random.default_rng(seed)
    return {c.name: rng.integers(0, 256, (c.height, c.width, 3), dtype=np.uint8) for c in robot.cameras}


def shipped_policy(name: str, robot, **overrides):
    """config/policies/<name>.yaml with `overrides` (e.g. the loopback server's url), built for `robot`."""
    path = policy_config_dir() / f"{name}.yaml"
    config = yaml.safe_load(path.read_text())
    config.update(overrides)
    return make_policy(config, robot=robot, source=path)


def changed_config(name: str, directory: Path, **change) -> Path:
    """config/policies/<name>.yaml with `change` applied, written to `directory` (for one-line config errors)."""
    config = yaml.safe_load((policy_config_dir() / f"{name}.yaml").read_text())
    config.update(change)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
