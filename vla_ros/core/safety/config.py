"""Safety filter settings (config/safety.yaml) and the per-joint limits they produce for one robot."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from vla_ros.core.config import Section, load_yaml
from vla_ros.core.errors import ConfigError
from vla_ros.core.robot import RobotModel

# YAML section -> {key: SafetyConfig field}; a key whose value is {revolute, prismatic} maps to <field>_revolute /
# <field>_prismatic.
_YAML = {
    "limit_scale": {"velocity": "velocity_scale", "acceleration": "acceleration_scale", "jerk": "jerk_scale"},
    "watchdog": {k: k for k in ("joint_state_hold_after", "joint_state_stop_after", "command_stop_after",
                                "clock_jump_estop")},
    "measurement": {"range_tolerance": "range_tolerance"},
    "reset": {"rest_window": "rest_window", "rest_tolerance": "rest_tolerance", "rest_velocity": "rest_velocity"},
    "": {k: k for k in ("min_step", "tracking_tolerance", "controller_delay_periods")},
}
_PER_JOINT_TYPE = ("range_tolerance", "rest_tolerance", "rest_velocity")


@dataclass(frozen=True)
class SafetyConfig:
    """Margins, limit scaling, watchdog timeouts, measurement and reset rules. Units: m, rad, s.
    Defaults = config/safety.yaml."""

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
    range_tolerance_revolute: float = 0.02
    range_tolerance_prismatic: float = 0.003
    rest_window: float = 0.2
    rest_tolerance_revolute: float = 0.005
    rest_tolerance_prismatic: float = 0.001
    rest_velocity_revolute: float = 0.05
    rest_velocity_prismatic: float = 0.01
    controller_delay_periods: float = 2.0
    min_step: float = 2e-4
    tracking_tolerance: float = 1e-4

    def __post_init__(self):
        for name in ("revolute_margin", "prismatic_margin", "gripper_margin", "max_margin_fraction",
                     "range_tolerance_revolute", "range_tolerance_prismatic"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"SafetyConfig.{name}: must be >= 0, got {getattr(self, name)!r}")
        if not self.max_margin_fraction < 0.5:
            raise ValueError(f"SafetyConfig.max_margin_fraction: must be < 0.5, got {self.max_margin_fraction!r}")
        for name in ("velocity_scale", "acceleration_scale", "jerk_scale"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"SafetyConfig.{name}: must be in (0, 1], got {getattr(self, name)!r}")
        for name in ("joint_state_hold_after", "joint_state_stop_after", "command_stop_after", "clock_jump_estop",
                     "rest_window", "rest_tolerance_revolute", "rest_tolerance_prismatic", "rest_velocity_revolute",
                     "rest_velocity_prismatic", "controller_delay_periods", "min_step", "tracking_tolerance"):
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
        cfg.unknown_keys({"position_margin", *(k for k in _YAML if k), *_YAML[""]})
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
        for section_name, keys in _YAML.items():
            section = cfg.section(section_name, {}) if section_name else cfg
            if section_name:
                section.unknown_keys(set(keys))
            for key, name in keys.items():
                if not section.has(key):
                    continue
                if name in _PER_JOINT_TYPE:
                    kinds = section.section(key)
                    kinds.unknown_keys({"revolute", "prismatic"})
                    for kind in ("revolute", "prismatic"):
                        if kinds.has(kind):
                            values[f"{name}_{kind}"] = kinds.float(kind)
                else:
                    values[name] = section.float(key, positive=True)
        try:
            return cls(**values)
        except ValueError as exc:
            raise ConfigError(path, "", str(exc)) from None

    def controller_delay(self, robot: RobotModel) -> float:
        """Seconds a trajectory controller runs behind the filter's commands (see filter.py: late calls)."""
        return self.controller_delay_periods / robot.control_rate_hz


def default_safety_config_path() -> Path:
    from vla_ros.resources import share_dir

    return share_dir() / "config" / "safety.yaml"


@dataclass(frozen=True)
class SafetyLimits:
    """What the filter enforces per joint (robot.joint_names order): margined position range, scaled v / a / j; and
    what it accepts as a measurement (the URDF range widened by the range tolerance) and as "at rest"."""

    names: tuple[str, ...]
    lower: np.ndarray  # URDF / config lower limit + margin
    upper: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    jerk: np.ndarray
    prismatic: np.ndarray  # bool
    measured_lower: np.ndarray  # a measured position below this (or above measured_upper) is refused
    measured_upper: np.ndarray
    rest_tolerance: np.ndarray  # the most a joint at rest may move over the reset's rest window
    rest_velocity: np.ndarray  # the most a joint at rest may report as its velocity

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

        def per_type(name: str) -> np.ndarray:
            return np.where(prismatic, getattr(config, f"{name}_prismatic"), getattr(config, f"{name}_revolute"))

        tolerance = per_type("range_tolerance")
        return cls(
            names=robot.joint_names,
            lower=limits.lower + margin,
            upper=limits.upper - margin,
            velocity=limits.velocity * config.velocity_scale,
            acceleration=limits.acceleration * config.acceleration_scale,
            jerk=limits.jerk * config.jerk_scale,
            prismatic=prismatic,
            measured_lower=limits.lower - tolerance,
            measured_upper=limits.upper + tolerance,
            rest_tolerance=per_type("rest_tolerance"),
            rest_velocity=per_type("rest_velocity"),
        )


