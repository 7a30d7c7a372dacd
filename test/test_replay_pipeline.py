"""The in-process control chain (executor -> IK / joint targets -> safety) and its joint-space action mapping."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_ros.core.errors import ConfigError
from vla_ros.core.executor import ExecutorConfig
from vla_ros.core.pipeline import ControlPipeline, joint_targets_from_action
from vla_ros.core.robot import load_robot
from vla_ros.core.types import ActionChunk, ActionSpace, BadChunkError, GripperConvention, PolicyMetadata


def _space(kind: str, robot, arms=None, gripper=GripperConvention()):
    arms = tuple(arms or (a.name for a in robot.arms))
    return ActionSpace(kind, arms=arms, gripper=gripper, joints_per_arm=tuple(len(robot.arm(a).joints) for a in arms))


def test_joint_pos_sets_arm_joints_and_maps_the_gripper_convention(franka):
    droid = _space("joint_pos", franka, gripper=GripperConvention(open=0.0, closed=1.0))
    arm = franka.arm("arm")
    action = np.append(np.linspace(-0.3, 0.3, 7), 1.0)  # DROID: 1 = closed
    targets = joint_targets_from_action(droid, action, franka, franka.home, 0.02)
    np.testing.assert_array_equal(targets[arm.index], action[:7])
    assert targets[arm.gripper.index] == arm.gripper.closed
    half_open = joint_targets_from_action(droid, np.append(action[:7], 0.5), franka, franka.home, 0.02)
    assert half_open[arm.gripper.index] == pytest.approx((arm.gripper.open + arm.gripper.closed) / 2)


def test_joint_delta_adds_to_the_reference_and_joint_vel_integrates(franka):
    arm = franka.arm("arm")
    reference = franka.home + 0.1
    motion = np.arange(7) * 0.01
    delta = joint_targets_from_action(_space("joint_delta", franka), np.append(motion, 1.0), franka, reference, 0.02)
    np.testing.assert_allclose(delta[arm.index], reference[arm.index] + motion)
    velocity = joint_targets_from_action(_space("joint_vel", franka), np.append(motion, 1.0), franka, reference, 0.02)
    np.testing.assert_allclose(velocity[arm.index], reference[arm.index] + motion * 0.02)
    assert delta[arm.gripper.index] == arm.gripper.open == velocity[arm.gripper.index]  # gripper is absolute


def test_joints_outside_the_action_keep_the_reference(aloha):
    left_only = _space("joint_pos", aloha, arms=["left"])
    reference = aloha.home + 0.05
    targets = joint_targets_from_action(left_only, np.zeros(7), aloha, reference, 0.02)
    right = aloha.arm("right")
    np.testing.assert_array_equal(targets[right.index], reference[right.index])
    assert targets[right.gripper.index] == reference[right.gripper.index]
    np.testing.assert_array_equal(targets[aloha.arm("left").index], 0.0)


@settings(max_examples=40)
@given(st.lists(st.floats(-3, 3), min_size=9, max_size=9), st.floats(0.001, 0.1))
def test_zero_delta_and_zero_velocity_hold_the_reference(reference, dt):
    robot = load_robot("franka")
    reference = np.array(reference[: robot.nq])
    for kind in ("joint_delta", "joint_vel"):
        space = _space(kind, robot, gripper=None)
        np.testing.assert_array_equal(joint_targets_from_action(space, np.zeros(7), robot, reference, dt), reference)


@pytest.mark.parametrize("action, error", [
    (np.zeros(7), BadChunkError),  # 8 columns expected
    (np.append(np.zeros(7), np.nan), BadChunkError),
])
def test_bad_actions_are_refused(franka, action, error):
    with pytest.raises(error):
        joint_targets_from_action(_space("joint_pos", franka), action, franka, franka.home, 0.02)


def test_space_robot_mismatches_are_config_errors(franka):
    ur5 = load_robot("ur5")
    with pytest.raises(ConfigError, match="no gripper"):
        joint_targets_from_action(_space("joint_pos", ur5), np.zeros(7), ur5, ur5.home, 0.02)
    with pytest.raises(ConfigError, match="needs IK"):
        joint_targets_from_action(ActionSpace("ee_delta"), np.zeros(7), franka, franka.home, 0.02)
    wrong_count = ActionSpace("joint_pos", arms=("arm",), joints_per_arm=(6,))
    with pytest.raises(ConfigError, match="has 7 joints"):
        joint_targets_from_action(wrong_count, np.zeros(7), franka, franka.home, 0.02)


class _Policy:
    def __init__(self, space: ActionSpace, horizon: int = 10, rate_hz: float = 10.0):
        self.metadata = PolicyMetadata("test", space, horizon, rate_hz)


def _run(pipeline: ControlPipeline, robot, chunk_actions: np.ndarray, seconds: float, start: float = 10.0):
    """Closed loop with a perfectly tracking robot: the measured state is the previous command."""
    q = robot.home.copy()
    dt = pipeline.control_dt
    submitted, ticks = False, []
    for k in range(int(seconds / dt)):
        now = start + k * dt
        pipeline.update_joint_state(robot.joint_names, q, now)
        tick = pipeline.tick(now, q)
        if tick.request and not submitted:
            space = pipeline.space
            pipeline.submit(ActionChunk(chunk_actions, space, 1.0 / pipeline.metadata.rate_hz, now), now)
            submitted = True
        if tick.command.sendable:
            q = tick.command.positions.copy()
        ticks.append(tick)
    return q, ticks


def test_joint_pos_chunk_is_executed_within_limits(franka):
    space = _space("joint_pos", franka)
    target = franka.home.copy()
    target[0] += 0.2
    actions = np.tile(np.append(target[:7], 0.0), (10, 1))  # hold the pose 1 s, gripper closing
    pipeline = ControlPipeline(franka, _Policy(space), ExecutorConfig(mode="sync", control_dt=0.02))
    q, ticks = _run(pipeline, franka, actions, 1.5)
    assert ticks[0].hold == "startup" and ticks[0].request
    assert q[0] == pytest.approx(target[0], abs=1e-3)
    assert q[franka.arm("arm").gripper.index] < franka.arm("arm").gripper.open
    velocities = np.diff([t.command.positions for t in ticks if t.command.sendable], axis=0) / 0.02
    assert np.all(np.abs(velocities) <= franka.limits.velocity * (1 + 1e-6))


def test_ee_delta_chunk_moves_the_end_effector(franka):
    space = ActionSpace("ee_delta")
    actions = np.zeros((10, 7))
    actions[:, 0] = 0.005  # +5 mm in x per 0.1 s step
    actions[:, 6] = 1.0
    pipeline = ControlPipeline(franka, _Policy(space), ExecutorConfig(mode="sync", control_dt=0.02))
    q, ticks = _run(pipeline, franka, actions, 1.5)
    moved = franka.fk(q, franka.arm("arm").ee_frame_id).translation - \
        franka.fk(franka.home, franka.arm("arm").ee_frame_id).translation
    assert moved[0] == pytest.approx(0.05, abs=2e-3)
    assert np.abs(moved[1:]).max() < 2e-3
    assert any(t.ik for t in ticks)


def test_control_period_must_match_the_robot(franka):
    with pytest.raises(ConfigError, match="control_rate_hz"):
        ControlPipeline(franka, _Policy(ActionSpace("ee_delta")), ExecutorConfig(control_dt=0.01))


def test_nothing_is_sent_before_a_joint_state(franka):
    pipeline = ControlPipeline(franka, _Policy(ActionSpace("ee_delta")), ExecutorConfig(control_dt=0.02))
    tick = pipeline.tick(1.0, franka.home)
    assert not tick.command.sendable and tick.command.state == "not_ready"


def test_stale_joint_state_holds_and_drops_the_plan(franka):
    space = _space("joint_pos", franka)
    pipeline = ControlPipeline(franka, _Policy(space), ExecutorConfig(mode="async", control_dt=0.02),
                               joint_state_timeout=0.1)
    q = franka.home.copy()
    actions = np.tile(np.append(q[:7] + 0.05, 1.0), (10, 1))
    for k in range(10):  # running on a chunk
        now = 1.0 + 0.02 * k
        pipeline.update_joint_state(franka.joint_names, q, now)
        tick = pipeline.tick(now, q)
        if k == 0:
            pipeline.submit(ActionChunk(actions, space, 0.1, now), now)
    assert tick.hold is None and tick.action is not None
    ticks = [pipeline.tick(1.2 + 0.02 * k, q) for k in range(10)]  # no joint state for up to 0.38 s
    stale = [t for t in ticks if t.hold == "joint_states_stale"]
    assert len(stale) >= 5 and all(t.action is None and not t.request for t in stale)
    assert ticks[-1].command.state in ("stopping", "stopped")  # the safety filter brakes on its own watchdog
    pipeline.update_joint_state(franka.joint_names, q, 1.41)
    resumed = pipeline.tick(1.42, q)
    assert resumed.request and resumed.hold is not None  # the old plan was dropped: waiting for a new chunk
