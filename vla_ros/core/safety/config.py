"""Safety filter settings (config/safety.yaml) and the per-joint limits they produce for one robot."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from vla_ros.core.config import Section, load_yaml
from vla_ros.core.errors import ConfigError
from vla_ros.core.robot import RobotModel


@dataclass(frozen=True)
class SafetyConfig:
    """Margins, limit scaling, watchdog timeouts. Units: m, rad, s. Defaults = config/safety.yaml."""

    revolute_margin: float = 0.05
    prismatic_margin: float = 0.001
    gripper_margin: float = 0.0
    max_margin_fraction: float = 0.1
    joint_margins: Mapping[str, float] = field(default_factory=dict)
    velocity_scale: float = 1.0
    acceleration_scale: float = 1.0
    jerk_scale: float = 1.0
    joint_state_hold_after: float = 0.05
    joint_state_stop_after: float = 0.15
    command_stop_after: float = 0.25
    clock_jump_estop: float = 0.5
    min_step: float = 2e-4
    tracking_tolerance: float = 1e-4

    def __post_init__(self):
        for name in ("revolute_margin", "prismatic_margin", "gripper_margin", "max_margin_fraction"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"SafetyConfig.{name}: must be >= 0, got {getattr(self, name)!r}")
        if not self.max_margin_fraction < 0.5:
            raise ValueError(f"SafetyConfig.max_margin_fraction: must be < 0.5, got {self.max_margin_fraction!r}")
        for name in ("velocity_scale", "acceleration_scale", "jerk_scale"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"SafetyConfig.{name}: must be in (0, 1], got {getattr(self, name)!r}")
        for name in ("joint_state_hold_after", "joint_state_stop_after", "command_stop_after", "clock_jump_estop",
                     "min_step", "tracking_tolerance"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SafetyConfig.{name}: must be > 0, got {getattr(self, name)!r}")
        if not self.joint_state_hold_after <= self.joint_state_stop_after:
            raise ValueError("SafetyConfig: joint_state_hold_after must not exceed joint_state_stop_after")
        for joint, margin in self.joint_margins.items():
            if not margin >= 0:
                raise ValueError(f"SafetyConfig.joint_margins[{joint!r}]: must be >= 0, got {margin!r}")

    @classmethod
    def from_yaml(cls, path: str | Path, robot: RobotModel | None = None) -> "SafetyConfig":
        """Read a safety YAML (config/safety.yaml schema; missing keys keep the defaults). With `robot`, per-joint
        margins must name its joints."""
        path = Path(path)
        cfg = Section(load_yaml(path), path)
        cfg.unknown_keys({"position_margin", "limit_scale", "watchdog", "min_step", "tracking_tolerance"})
        values: dict[str, object] = {}
        margin = cfg.section("position_margin", {})
        margin.unknown_keys({"revolute", "prismatic", "gripper", "max_fraction", "joints"})
        for key, name in (("revolute", "revolute_margin"), ("prismatic", "prismatic_margin"),
                          ("gripper", "gripper_margin"), ("max_fraction", "max_margin_fraction")):
            if margin.has(key):
                values[name] = margin.float(key)
        joints = margin.section("joints", {})
        values["joint_margins"] = {name: joints.float(name) for name in joints.data}
        if robot is not None:
            for name in joints.data:
                if name not in robot.joint_names:
                    raise joints.error(name, f"not a commanded joint of robot {robot.name}")
        scale = cfg.section("limit_scale", {})
        scale.unknown_keys({"velocity", "acceleration", "jerk"})
        for key in ("velocity", "acceleration", "jerk"):
            if scale.has(key):
                values[f"{key}_scale"] = scale.float(key, positive=True)
        watchdog = cfg.section("watchdog", {})
        keys = ("joint_state_hold_after", "joint_state_stop_after", "command_stop_after", "clock_jump_estop")
        watchdog.unknown_keys(set(keys))
        for key in keys:
            if watchdog.has(key):
                values[key] = watchdog.float(key, positive=True)
        for key in ("min_step", "tracking_tolerance"):
            if cfg.has(key):
                values[key] = cfg.float(key, positive=True)
        try:
            return cls(**values)
        except ValueError as exc:
            raise ConfigError(path, "", str(exc)) from None


def default_safety_config_path() -> Path:
    from vla_ros.resources import share_dir

    return share_dir() / "config" / "safety.yaml"


@dataclass(frozen=True)
class SafetyLimits:
    """What the filter enforces per joint (robot.joint_names order): margined position range, scaled v / a / j."""

    names: tuple[str, ...]
    lower: np.ndarray  # URDF / config lower limit + margin
    upper: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    jerk: np.ndarray
    prismatic: np.ndarray  # bool

    @classmethod
    def of(cls, robot: RobotModel, config: SafetyConfig) -> "SafetyLimits":
        limits = robot.limits
        prismatic = np.array([joint.shortname().startswith("JointModelP") for joint in robot.model.joints[1:]])
        margin = np.where(prismatic, config.prismatic_margin, config.revolute_margin)
        for arm in robot.arms:
            if arm.gripper is not None:
                margin[arm.gripper.index] = config.gripper_margin
        for name, value in config.joint_margins.items():
            margin[robot.indices([name])[0]] = value
        margin = np.minimum(margin, config.max_margin_fraction * (limits.upper - limits.lower))
        return cls(
            names=robot.joint_names,
            lower=limits.lower + margin,
            upper=limits.upper - margin,
            velocity=limits.velocity * config.velocity_scale,
            acceleration=limits.acceleration * config.acceleration_scale,
            jerk=limits.jerk * config.jerk_scale,
            prismatic=prismatic,
        )
