"""NodeReport: what safety_node hands back when run as its own process (the demo's independent re-check reads it).
The round trip keeps everything the independent checker judges, so a bad command stays a violation after it."""

import dataclasses

import numpy as np
import pytest

from safety_helpers import robot
from vla_ros.core.node_report import NodeReport
from vla_ros.core.safety import SafetyConfig, SafetyFilter
from vla_ros.core.safety.independent_check import LimitChecker


def _commands(name: str, config: SafetyConfig) -> list:
    model = robot(name)
    names = list(model.joint_names)
    safety = SafetyFilter(model, config)
    safety.update_joint_state(names, model.home, 0.0)
    sent = [safety.tick(0.0)]
    target = model.home.copy()
    target[3] += 1.0
    for k in range(1, 40):
        safety.update_joint_state(names, sent[-1].positions, k * 0.02)
        sent.append(safety.filter(names, target, k * 0.02))
    return [c for c in sent if c.sendable]


def _violations(name: str, config: SafetyConfig, commands) -> int:
    checker = LimitChecker(robot(name), config)
    return sum(len(checker.check(c)) for c in commands)


@pytest.mark.parametrize("name", ["franka", "aloha"])
def test_round_trip_keeps_what_the_checker_judges(name, tmp_path):
    config = SafetyConfig(velocity_scale=0.5, joint_margins={robot(name).joint_names[0]: 0.1})
    sent = _commands(name, config)
    NodeReport({"hold_ticks": 3, "mode_changes": {"not_ready -> tracking": 1}}, sent, config,
               np.array([0.5, 0.52, 0.54])).save(tmp_path / "r.npz")
    loaded = NodeReport.load(tmp_path / "r.npz")
    np.testing.assert_array_equal(loaded.hold_times, [0.5, 0.52, 0.54])
    assert loaded.summary == {"hold_ticks": 3, "mode_changes": {"not_ready -> tracking": 1}}
    assert loaded.safety_config == config and len(loaded.sent) == len(sent) > 30
    for a, b in zip(sent, loaded.sent):
        assert (a.stamp, a.state, a.segment, a.timeline) == (b.stamp, b.state, b.segment, b.timeline)
        for field in ("positions", "velocities", "accelerations"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert _violations(name, config, sent) == _violations(name, loaded.safety_config, loaded.sent) == 0
    # a command that jumps stays a violation after the round trip
    jumped = list(sent)
    jumped[20] = dataclasses.replace(jumped[20], positions=jumped[20].positions + 0.3)
    NodeReport({}, jumped, config).save(tmp_path / "bad.npz")
    assert _violations(name, config, NodeReport.load(tmp_path / "bad.npz").sent) > 0
    assert not list(tmp_path.glob("*.partial"))


def test_a_report_without_commands(tmp_path):
    NodeReport({"steps": 12}).save(tmp_path / "ik.npz")
    loaded = NodeReport.load(tmp_path / "ik.npz")
    assert loaded.summary == {"steps": 12} and loaded.sent == [] and loaded.safety_config is None
    assert loaded.hold_times.shape == (0,)
