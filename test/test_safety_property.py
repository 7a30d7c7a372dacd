"""Property tests on all four robots: for random and adversarial call sequences, every command satisfies every limit
(independent LimitChecker: position, velocity, acceleration, jerk as divided differences over the actual stamps,
workspace box, EE speed) and is finite; bad input is refused and reported. Filters run as safety_node runs them:
Franka's and UR5's keep the trajectory their controller is sent, and each message is checked too.

Adversarial ingredients: NaN, inf, 1e9 targets, wrong lengths, shuffled / unknown / repeated names, subsets; time
standing still, going backwards (a little and by a second), sub-step intervals, 0.3 s and 10 s gaps; stale and
broken joint states; e-stop mid-motion and resets (refused ones included).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safety_helpers import robot
from vla_ros.core.safety.independent_check import LimitChecker, controller_trajectory_problems
from vla_ros.core.safety import SafetyConfig, SafetyFilter

ROBOTS = ["franka", "widowx", "ur5", "aloha"]

DT = st.one_of(
    st.sampled_from([0.02, 0.02, 0.004, 0.001]),
    st.floats(0.0005, 0.05),
    st.sampled_from([0.0, -0.003, -1.0, 1e-6, 0.3, 10.0]),
)
# A target row: a fraction of each joint's range (0..1 inside), or something hostile.
VALUE = st.one_of(st.floats(-0.2, 1.2), st.sampled_from([np.nan, np.inf, -np.inf, 1e9, -1e9]))
CALL = st.one_of(
    st.tuples(st.just("target"), DT, st.lists(VALUE, min_size=14, max_size=14),
              st.sampled_from(["all", "all", "all", "shuffled", "subset", "short", "long", "unknown", "twice"])),
    st.tuples(st.just("tick"), DT),
    st.tuples(st.just("smooth"), DT, st.integers(1, 30), st.floats(0.05, 0.95), st.floats(0.0, 0.3)),
    st.tuples(st.just("stale"), st.floats(0.05, 0.5)),
    st.tuples(st.just("broken_state"),),
    st.tuples(st.just("estop"),),
    st.tuples(st.just("reset"),),
)


class _Player:
    """Plays calls on a filter as a robot would: joint states follow the commands (with a little noise)."""

    def __init__(self, name: str, start_fraction: float):
        self.robot = robot(name)
        self.config = SafetyConfig()
        self.filter = SafetyFilter(self.robot, self.config, keep_trajectory=self.robot.trajectory_controlled)
        self.checker = LimitChecker(self.robot, self.config)
        self.names = list(self.robot.joint_names)
        self.lower, self.upper = self.robot.limits.lower, self.robot.limits.upper
        self.now, self.stale_until = 0.0, -1.0
        self.measured = self.lower + start_fraction * (self.upper - self.lower)
        self.noise = np.random.default_rng(0)

    def scale(self, fractions) -> np.ndarray:
        fractions = np.asarray(fractions[: self.robot.nq], dtype=float)
        return self.lower + fractions * (self.upper - self.lower)

    def measure(self):
        if self.now >= self.stale_until:
            self.filter.update_joint_state(self.names, self.measured, self.now)

    def send(self, names, values):
        self.measure()
        self.record(self.filter.filter(names, values, self.now), (names, values))

    def record(self, command, call=None):
        problems = self.checker.check(command, call) + controller_trajectory_problems(self.filter, command)
        assert not problems, problems
        if command.positions is not None:
            self.measured = command.positions + self.noise.normal(0, 1e-5, self.robot.nq)

    def play(self, call):
        kind = call[0]
        if kind in ("target", "tick", "smooth"):
            self.now += call[1]
        if kind == "target":
            names, values = list(self.names), list(self.scale(call[2]))
            shape = call[3]
            if shape == "shuffled":
                order = np.random.default_rng(len(values)).permutation(len(names))
                names, values = [names[k] for k in order], [values[k] for k in order]
            elif shape == "subset":
                names, values = names[::2], values[::2]
            elif shape == "short":
                values = values[:-1]
            elif shape == "long":
                values = values + [0.0]
            elif shape == "unknown":
                names[-1] = "not_a_joint"
            elif shape == "twice":
                names[-1] = names[0]
            self.send(names, values)
        elif kind == "tick":
            self.measure()
            self.record(self.filter.tick(self.now))
        elif kind == "smooth":  # a smooth stretch, the nominal case, around a point of the range
            _, dt, steps, centre, amplitude = call
            for k in range(steps):
                self.now += abs(dt) or 0.02
                phase = np.sin(3.0 * self.now + np.arange(self.robot.nq))
                self.send(self.names, list(self.scale(np.full(self.robot.nq, centre) + amplitude * phase)))
        elif kind == "stale":
            self.stale_until = self.now + call[1]
        elif kind == "broken_state":
            bad = self.measured.copy()
            bad[0] = np.nan
            assert self.filter.update_joint_state(self.names, bad, self.now)[0].limit == "input"
        elif kind == "estop":
            self.filter.estop("property test")
        elif kind == "reset":
            self.filter.reset(self.now)  # often refused (stale, moving): that is the point


@pytest.mark.parametrize("name", ROBOTS)
@settings(max_examples=25, deadline=None)
@given(calls=st.lists(CALL, min_size=5, max_size=40), start_fraction=st.floats(0.0, 1.0))
def test_every_command_satisfies_every_limit(name, calls, start_fraction):
    player = _Player(name, start_fraction)
    player.measure()
    player.record(player.filter.tick(player.now))
    for call in calls:
        player.play(call)
