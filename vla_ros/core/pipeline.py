"""The control chain in one process: executor tick -> (IK per arm | joint targets) -> safety filter.

The ROS graph runs the same steps in three nodes (policy, IK, safety); offline replay and anything else that runs
the chain in one process uses `ControlPipeline`, so both execute the same core code. The pipeline does not call the
policy: the caller runs inference (a `PolicyWorker` thread live, a simulated-latency call in replay) whenever a tick
asks for it, and hands the chunk back with `submit`.

Per tick (`tick(now, q_measured)`):
  1. the executor turns the chunks received so far into this tick's action (or a hold);
  2. an end-effector action goes through `DifferentialIK.step` from the measured joints; a joint-space action
     becomes joint targets through `joint_targets_from_action` (deltas and velocities integrate on the previous
     target, not on the measurement, so tracking lag does not feed back into the plan);
  3. the safety filter turns the targets (or, without a new target, its own hold / graded stop) into the command.
The safety filter needs the measured joint state with its stamps for its staleness watchdog: feed every joint-state
message through `update_joint_state` as it arrives; `q_measured` (a full vector) is what IK starts from.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from vla_ros.core.errors import ConfigError
from vla_ros.core.executor import ActionPrefix, ChunkExecutor, ExecutorConfig, ExecutorStats
from vla_ros.core.ik import ArmIKStatus, DifferentialIK, IKConfig, ee_commands_from_action
from vla_ros.core.robot import RobotModel
from vla_ros.core.safety import Intervention, SafeCommand, SafetyConfig, SafetyFilter
from vla_ros.core.types import ActionSpace, BadChunkError, Policy

IK_FLAGS = ("unreachable", "limited", "near_singular", "target_clamped")


def joint_targets_from_action(space: ActionSpace, action: np.ndarray, robot: RobotModel, q_reference: np.ndarray,
                              dt: float) -> np.ndarray:
    """One joint-space action -> joint targets (nq,), robot.joint_names order.

    joint_pos: the arm columns are the targets; joint_delta: added to `q_reference` (the previous target);
    joint_vel: integrated over `dt` from `q_reference`. Arm columns follow the robot config's joint order of each arm
    in `space.arms`; the gripper column (absolute in every kind) goes through the space's GripperConvention (over
    its joint span, or the arm's GripperSpec range) to a joint value inside the gripper's range. Joints the action
    does not cover keep `q_reference`.
    """
    if space.is_ee:
        raise ConfigError("action space", "kind", f"{space.kind!r} is an end-effector action; it needs IK")
    action = np.asarray(action, dtype=float)
    if action.shape != (space.dim,):
        raise BadChunkError(f"{space.kind} action: expected shape ({space.dim},), got {action.shape}")
    if not np.all(np.isfinite(action)):
        column = int(np.flatnonzero(~np.isfinite(action))[0])
        raise BadChunkError(f"{space.kind} action: non-finite value at column {column}")
    q_reference = np.asarray(q_reference, dtype=float)
    if q_reference.shape != (robot.nq,):
        raise ValueError(f"q_reference: expected shape ({robot.nq},) in robot.joint_names order, "
                         f"got {q_reference.shape}")
    if not (np.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be > 0, got {dt!r}")
    check_action_space(space, robot)
    targets = q_reference.copy()
    for arm_name, motion, grip in space.split(action):
        arm = robot.arm(arm_name)
        if space.kind == "joint_pos":
            targets[arm.index] = motion
        elif space.kind == "joint_delta":
            targets[arm.index] = q_reference[arm.index] + motion
        else:  # joint_vel
            targets[arm.index] = q_reference[arm.index] + motion * dt
        if grip is not None:
            targets[arm.gripper.index] = space.gripper.to_joint(grip, arm.gripper)
    return targets


def check_action_space(space: ActionSpace, robot: RobotModel) -> None:
    """ConfigError unless every arm of `space` is an arm of `robot` with the right joint count and a gripper where
    the space has a gripper column."""
    arms = {arm.name: arm for arm in robot.arms}
    for i, name in enumerate(space.arms):
        arm = arms.get(name)
        if arm is None:
            raise ConfigError("action space", "arms", f"arm {name!r} is not an arm of robot {robot.name} "
                                                      f"(arms: {', '.join(arms)})")
        if not space.is_ee and space.motion_width(i) != len(arm.joints):
            raise ConfigError("action space", "joints_per_arm", f"{space.motion_width(i)} columns for arm {name!r}, "
                                                                f"which has {len(arm.joints)} joints")
        if space.gripper is not None and arm.gripper is None:
            raise ConfigError("action space", "gripper", f"the action has a gripper column but arm {name!r} of robot "
                                                         f"{robot.name} has no gripper; set gripper: false")


@dataclass(frozen=True)
class PipelineTick:
    """What one control tick did.

    action:   the executor's action for this tick (policy action space), None when it had nothing to execute
    hold:     why no chunk action runs: the executor's reason (startup / awaiting_chunk / underflow), or
              "joint_states_stale"; None while executing a chunk
    request:  the executor wants a chunk answering an observation captured after `request_after`
    q_target: joint targets handed to the safety filter (None: no new target this tick)
    ik:       per-arm IK status for EE actions (None for joint-space actions or without a target)
    command:  the safety filter's command (`command.sendable` False: nothing to send yet)
    rejected_action: why the executor's action could not be turned into targets (None normally)
    """

    now: float
    action: np.ndarray | None
    hold: str | None
    request: bool
    request_after: float
    q_target: np.ndarray | None
    ik: Mapping[str, ArmIKStatus] | None
    command: SafeCommand
    rejected_action: str | None = None

    @property
    def interventions(self) -> tuple[Intervention, ...]:
        return self.command.interventions

    def ik_flags(self) -> Counter:
        """IK status flags raised this tick, counted over arms."""
        flags = Counter()
        for status in (self.ik or {}).values():
            flags.update(flag for flag in IK_FLAGS if getattr(status, flag))
        return flags


class ControlPipeline:
    """Executor -> IK / joint targets -> safety for one robot and one policy's action space. Single-threaded.

    The nodes' own gates are kept (defaults = config/nodes.yaml): the policy node holds and drops its chunks while
    any joint has not been measured for `joint_state_timeout` (the safety filter meanwhile holds / brakes on its
    own watchdog), and the IK node re-anchors its targets on the measured pose after `ik_reanchor_after` without
    an EE command. `keep_trajectory`: the safety filter also keeps what a trajectory controller is sent
    (SafetyFilter.controller_trajectory).
    """

    def __init__(self, robot: RobotModel, policy: Policy, executor_config: ExecutorConfig,
                 ik_config: IKConfig | None = None, safety_config: SafetyConfig | None = None, *,
                 joint_state_timeout: float = 0.1, ik_reanchor_after: float = 0.25, keep_trajectory: bool = False):
        self.robot = robot
        self.metadata = policy.metadata
        self.space = self.metadata.action_space
        check_action_space(self.space, robot)
        control_dt = 1.0 / robot.control_rate_hz
        if not np.isclose(executor_config.control_dt, control_dt, rtol=1e-9):
            raise ConfigError("executor config", "control_dt",
                              f"{executor_config.control_dt:g} s does not match robot {robot.name}'s control_rate_hz "
                              f"{robot.control_rate_hz:g}")
        self.control_dt = executor_config.control_dt
        self.executor = ChunkExecutor(executor_config, self.metadata)
        self.ik = DifferentialIK(robot, ik_config) if self.space.is_ee else None
        self.safety = SafetyFilter(robot, safety_config, keep_trajectory)  # keep_trajectory: for a JTC's messages
        self._arm_names = tuple(arm.name for arm in robot.arms)
        self._grippers = robot.grippers
        self._index = {name: i for i, name in enumerate(robot.joint_names)}
        self.joint_state_timeout, self.ik_reanchor_after = joint_state_timeout, ik_reanchor_after
        self._received = np.full(robot.nq, -np.inf)  # when each joint was last measured
        self._stale = False
        self._previous_target: np.ndarray | None = None
        self._last_ee_action = -np.inf

    # --- inputs -----------------------------------------------------------------------------------------------------

    def update_joint_state(self, names: Sequence[str], positions: Sequence[float],
                           stamp: float) -> tuple[Intervention, ...]:
        """A measured joint state (any subset of joints, by name), received at `stamp`; names the robot does not
        command are ignored. Returns what the safety filter refused (the update is then not applied at all)."""
        refused = self.safety.update_joint_state(names, positions, stamp)
        if not refused:
            self._received[[self._index[n] for n in names if n in self._index]] = stamp
        return refused

    def submit(self, chunk: object, now: float) -> bool:
        """A chunk the policy returned, arriving at `now`; False if the executor rejected it (counted in stats)."""
        return self.executor.submit(chunk, now)

    def record_inference_error(self, message: str) -> None:
        self.executor.record_inference_error(message)

    def prefix(self, stamp: float) -> ActionPrefix | None:
        """Committed actions for a request answering the observation at `stamp` (real-time chunking), if any."""
        return self.executor.prefix(stamp)

    def reset(self, now: float) -> None:
        """Drop every chunk and hold (e.g. a new instruction); IK targets restart from the measured pose."""
        self.executor.reset(now)
        self._previous_target = None

    # --- the tick ---------------------------------------------------------------------------------------------------

    def tick(self, now: float, q_measured: np.ndarray) -> PipelineTick:
        # The checks in Python floats, not numpy reductions (a few microseconds each, every tick); same comparisons.
        q_measured = np.asarray(q_measured, dtype=float)
        if q_measured.shape != (self.robot.nq,) or not all(map(math.isfinite, q_measured.tolist())):
            raise ValueError(f"q_measured: expected {self.robot.nq} finite values in robot.joint_names order")
        timeout = self.joint_state_timeout
        if not all(now - received <= timeout for received in self._received.tolist()):
            if not self._stale:  # as the policy node: never resume an old plan from a state it could not see
                self.reset(now)
            self._stale = True
            return PipelineTick(now, None, "joint_states_stale", False, -np.inf, None, None, self.safety.tick(now))
        self._stale = False
        step = self.executor.tick(now)
        q_target, ik, rejected = None, None, None
        if step.action is not None:
            try:
                q_target, ik = self._targets(step.action, q_measured, now)
            except BadChunkError as exc:  # a value the executor could not know is invalid (e.g. a zero quaternion)
                rejected = str(exc)
        if q_target is None:
            command = self.safety.tick(now)
        else:
            command = self.safety.filter(self.robot.joint_names, q_target, now)
            self._previous_target = q_target
        return PipelineTick(now, step.action, step.hold, step.request, step.request_after, q_target, ik, command,
                            rejected)

    def _targets(self, action: np.ndarray, q_measured: np.ndarray,
                 now: float) -> tuple[np.ndarray, Mapping[str, ArmIKStatus] | None]:
        if self.ik is not None:
            if self._previous_target is None or now - self._last_ee_action > self.ik_reanchor_after:
                self.ik.reset(q_measured)
            self._last_ee_action = now
            result = self.ik.step(q_measured, ee_commands_from_action(self.space, action, self._arm_names,
                                                                      self._grippers), self.control_dt)
            return result.q_target, result.arms
        reference = q_measured if self._previous_target is None else self._previous_target
        return joint_targets_from_action(self.space, action, self.robot, reference, self.control_dt), None

    def executor_stats(self) -> ExecutorStats:
        return self.executor.stats()
