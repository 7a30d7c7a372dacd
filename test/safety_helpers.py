"""Shared helpers for the safety filter tests: a started filter and a loop that plays the robot."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from vla_ros.core.safety.independent_check import LimitChecker
from vla_ros.core.robot import RobotModel, load_robot
from vla_ros.core.safety import SafetyConfig, SafetyFilter


@lru_cache(maxsize=None)
def robot(name: str) -> RobotModel:
    return load_robot(name)


class Rig:
    """A filter on a robot that follows every command exactly, every command re-checked by the independent
    LimitChecker (any problem fails the test at once)."""

    def __init__(self, name: str = "franka", start: np.ndarray | None = None, now: float = 0.0, **config):
        self.robot = robot(name)
        self.config = SafetyConfig(**config)
        self.filter = SafetyFilter(self.robot, self.config)
        self.checker = LimitChecker(self.robot, self.config)
        self.names = list(self.robot.joint_names)
        self.now = now
        self.measured = self.robot.home.copy() if start is None else np.array(start, dtype=float)
        self.commands = []
        self.measure()
        self.first = self.tick(0.0)

    def measure(self):
        self.filter.update_joint_state(self.names, self.measured, self.now)

    def _record(self, command, call=None):
        problems = self.checker.check(command, call)
        assert not problems, problems
        self.commands.append(command)
        if command.positions is not None:
            self.measured = command.positions.copy()
        return command

    def target(self, q, dt: float = 0.02, names=None, measure: bool = True):
        self.now += dt
        if measure:
            self.measure()
        names = self.names if names is None else names
        return self._record(self.filter.filter(names, q, self.now), (names, q))

    def tick(self, dt: float = 0.02, measure: bool = True):
        self.now += dt
        if measure:
            self.measure()
        return self._record(self.filter.tick(self.now))

    def positions(self) -> np.ndarray:
        return np.array([c.positions for c in self.commands if c.positions is not None])

    def limits_hit(self, since: int = 0) -> set[str]:
        return {i.limit for c in self.commands[since:] for i in c.interventions}
