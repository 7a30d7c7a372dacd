"""The action-contract self-test: does a policy that holds still keep the robot still?

A policy config declares two halves of one convention: how the observation is encoded for the model (state parts:
joint order, gripper convention and the span the training data normalised the gripper over, EE pose form) and how
the model's actions are decoded (action space, gripper convention and span, the peer client's clip / binarise /
scale, GR00T's part order, ...). When the halves disagree, a model that answers "stay where you are" moves the
robot: against openpi's own server, ALOHA's grippers drifted from 0.975 to 0.74 over 29 chunks because the state
side normalised the finger over 0.01844..0.058 m and the action side mapped over the robot's 0.021..0.057 m.

The test replaces the model by an IDENTITY policy and runs it closed-loop through the real chain (the backend's own
request building and reply parsing, then `ControlPipeline`: executor -> joint targets or IK -> safety filter), with
a robot that follows the safety filter's commands exactly. The identity answers, in the policy's own convention:
  joint_pos           the state's joint values mapped back to the action columns (by joint name)
  ee_pose             the state's EE pose columns of the same rotation form (else the current EE pose by FK)
  ee_delta, joint_delta, joint_vel   zero motion
  gripper (any kind)  the observed opening as the state side encodes it (over the span the state side declares),
                      written in the action side's open / closed values
A backend takes part through `identity_chunk(observation, identity) -> ActionChunk` (encode the request as it would
be sent, let `identity` answer from the state vectors in it, parse that answer as a server reply) and says what the
identity cannot exercise in `contract_notes`. A backend without `identity_chunk` (the classical baseline, playback)
is checked from its action space onwards only, and the report says so.

Held still means: joint kinds keep every arm joint within `joint_tolerance` (rad or m) of the start; EE kinds keep
each arm's EE pose within `joint_tolerance` (m, rad) - a redundant arm may move in its null space; every gripper
stays within `gripper_tolerance` of its normalised opening over the robot's range, or, for a gripper column the
action transform binarises, ends at the end of the state side's span nearest to its observed opening. Judged on the targets the chain hands
the safety filter (the safety filter's own clamps near a limit are reported, not counted against the policy).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from vla_ros.core.executor import ExecutorConfig
from vla_ros.core.ik import IKConfig
from vla_ros.core.pipeline import ControlPipeline
from vla_ros.core.policies.preprocess import EE_COMPONENTS, ConstantColumn, EEPoseColumns, StateColumn
from vla_ros.core.policies.spec import checked_chunk
from vla_ros.core.robot import RobotModel
from vla_ros.core.rotations import from_matrix
from vla_ros.core.safety import SafetyConfig
from vla_ros.core.safety.config import SafetyLimits
from vla_ros.core.types import ActionChunk, ActionSpace, BadChunkError, Observation, Policy

# The wire carries float32; a value that comes back within this is unchanged by the decoding.
_DECODE_TOLERANCE = 1e-5

StateSlots = Mapping[str, tuple[Sequence[StateColumn | ConstantColumn | EEPoseColumns], np.ndarray]]


@dataclass(frozen=True)
class ContractConfig:
    joint_tolerance: float = 1e-3  # rad or m per arm joint; m and rad for an EE pose
    gripper_tolerance: float = 0.01  # of the normalised opening over the robot config's gripper range
    chunks: int = 3  # identity chunks run closed-loop


@dataclass(frozen=True)
class Column:
    """What one action column means: kind "delta" (zero motion holds still), "joint", "gripper" or "ee" (an
    absolute EE pose component, `component` indexing x, y, z then the rotation form's components)."""

    label: str
    kind: str
    arm: str
    joint: str | None = None
    component: int | None = None


def action_columns(space: ActionSpace, robot: RobotModel) -> list[Column]:
    columns = []
    for i, name in enumerate(space.arms):
        arm = robot.arm(name)
        if space.is_ee:
            names = ("x", "y", "z") + EE_COMPONENTS[space.rotation]
            kind = "ee" if space.kind == "ee_pose" else "delta"
            columns += [Column(f"{name}/{part}", kind, name, component=c) for c, part in enumerate(names)]
        else:
            kind = "joint" if space.kind == "joint_pos" else "delta"
            columns += [Column(f"{name}/{joint}", kind, name, joint=joint) for joint in arm.joints]
        if space.gripper is not None:
            columns.append(Column(f"{name}/gripper", "gripper", name, joint=arm.gripper.joint))
    return columns


class Identity:
    """Hold-still actions for one policy on one robot, from the state vectors a request carries (see the module
    docstring). Records which columns it could not take from the policy's state (`notes`) and, per gripper joint, the
    span the state side encodes it over (`state_spans`)."""

    def __init__(self, space: ActionSpace, robot: RobotModel):
        self.space, self.robot = space, robot
        self.columns = action_columns(space, robot)
        self.absolute = np.array([c.kind != "delta" for c in self.columns])
        self.notes: set[str] = set()
        self.state_spans: dict[str, tuple[float, float]] = {}
        self.rows: list[np.ndarray] = []  # every hold-still row answered, in order
        self._data = robot.new_data()

    def actions(self, states: StateSlots, observation: Observation) -> np.ndarray:
        """One hold-still action row (space.dim,) from `states` (request key -> (state columns, the values sent))."""
        held = {}  # ("joint" | "gripper", joint) or ("ee", arm, rotation, component) -> value in the action's terms
        for columns, values in states.values():
            i = 0
            for column in columns:
                segment, i = values[i : i + column.width], i + column.width
                if isinstance(column, EEPoseColumns):
                    held.update({("ee", column.arm, column.rotation, component): value for component, value in
                                 zip(column.components, self._as_action(column, segment))})
                elif isinstance(column, StateColumn):
                    held[("joint" if column.convention is None else "gripper", column.joint)] = \
                        self._as_action(column, segment)[0]
                    if column.convention is not None:
                        self.state_spans[column.joint] = column.convention.joint_span(None)
        q = np.array([observation.joint_positions[name] for name in self.robot.joint_names], dtype=float)
        row = np.zeros(len(self.columns))
        missing = defaultdict(list)
        for c, column in enumerate(self.columns):
            key = ("ee", column.arm, self.space.rotation, column.component) if column.kind == "ee" else \
                (column.kind, column.joint)
            if column.kind == "delta":
                continue
            if key in held:
                row[c] = held[key]
            elif column.kind == "joint":
                row[c] = q[self.robot.joint_names.index(column.joint)]
                missing[column.arm].append(column.joint)
            elif column.kind == "gripper":
                arm = self.robot.arm(column.arm)
                row[c] = self.space.gripper.encode(q[arm.gripper.index], arm.gripper)
                self.notes.add(f"arm {column.arm} gripper: the policy's state does not carry it, so the identity "
                               f"answers the measured opening over the action side's own span (the span is not "
                               f"checked)")
            else:
                pose = self.robot.fk(q, self.robot.arm(column.arm).ee_frame_id, self._data)
                row[c] = np.concatenate([pose.translation, from_matrix(self.space.rotation, pose.rotation)])[
                    column.component]
                self.notes.add(f"arm {column.arm}: the policy's state has no {self.space.rotation} EE pose, so the "
                               f"identity answers forward kinematics (the state side's pose is not checked)")
        for arm, names in missing.items():
            self.notes.add(f"arm {arm}: joints {', '.join(names)} are not in the policy's state, so the identity "
                           f"answers their measured values (their column order is not checked)")
        self.rows.append(row)
        return row

    def _as_action(self, column: StateColumn | EEPoseColumns, segment: np.ndarray) -> list[float]:
        """A state column's values as a hold-still action states them: a joint mapped back (its scale undone), a
        gripper's opening over the state side's span written in the action's open / closed values, EE pose
        components as they are."""
        if isinstance(column, StateColumn) and column.convention is not None:
            return [self.space.gripper.value(column.convention.opening(segment[0]))]
        if isinstance(column, StateColumn):
            return [float(segment[0]) / column.scale]
        return [float(value) for value in segment]

    def echo(self, columns: Sequence[StateColumn | ConstantColumn | EEPoseColumns], values: np.ndarray,
             action_columns: slice) -> np.ndarray | None:
        """A state segment answered as the action segment `action_columns`, as a server that echoes a state key into
        the action key of the same name would (see `_as_action`). None when it cannot be echoed: the widths differ,
        an action column is a delta, or the state holds a constant."""
        if sum(c.width for c in columns) != len(self.columns[action_columns]) or \
                not self.absolute[action_columns].all() or any(isinstance(c, ConstantColumn) for c in columns):
            return None
        out, i = [], 0
        for column in columns:
            out += self._as_action(column, values[i : i + column.width])
            i += column.width
        return np.array(out)


def identity_from_state(policy: Policy, states: StateSlots, observation: Observation,
                        identity: Identity) -> ActionChunk:
    """The hold-still chunk of an in-process model (no wire format): the identity from its state vectors."""
    row = identity.actions(states, observation)
    return checked_chunk(policy.metadata, np.tile(row, (policy.metadata.horizon, 1)), observation.stamp)


# --- the closed-loop run --------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One closed-loop run: per tick the targets handed to the safety filter (NaN rows: no target that tick) and the
    robot's positions (= the safety filter's commands); per answered request the decoded chunk's first action."""

    q_start: np.ndarray
    targets: list[np.ndarray] = field(default_factory=list)
    positions: list[np.ndarray] = field(default_factory=list)
    decoded_rows: list[np.ndarray] = field(default_factory=list)
    rejected: str | None = None


def run_closed_loop(robot: RobotModel, policy: Policy, answer: Callable[[Observation], ActionChunk],
                    q_start: np.ndarray, chunks: int, *, ik_config: IKConfig | None = None,
                    safety_config: SafetyConfig | None = None, instruction: str = "hold still") -> Run:
    """Run `answer` (observation -> chunk) for `chunks` chunks through ControlPipeline, the robot following the
    safety filter's commands exactly; camera frames are black at each camera's resolution."""
    meta = policy.metadata
    dt = 1.0 / robot.control_rate_hz
    prescribed = meta.executor.get("execute_steps") if meta.executor.get("mode", "sync") == "sync" else None
    pipeline = ControlPipeline(robot, policy, ExecutorConfig(mode="sync", control_dt=dt, execute_steps=prescribed),
                               ik_config, safety_config)
    cameras = [c for c in robot.cameras if not meta.cameras or c.name in meta.cameras]
    images = {c.name: np.zeros((c.height, c.width, 3), dtype=np.uint8) for c in cameras}
    steps = prescribed or meta.horizon
    max_ticks = (chunks + 1) * int(np.ceil(steps / (meta.rate_hz * dt))) + 10
    run = Run(np.asarray(q_start, dtype=float).copy())
    q, now, answered = run.q_start.copy(), 100.0, 0
    for _ in range(max_ticks):
        refused = pipeline.update_joint_state(robot.joint_names, q, now)
        if refused:
            run.rejected = f"the safety filter refuses the measured state: {refused[0].detail}"
            break
        tick = pipeline.tick(now, q)
        if tick.rejected_action:
            run.rejected = tick.rejected_action
            break
        if tick.request:
            if answered == chunks:
                break
            observation = Observation(images, dict(zip(robot.joint_names, q.tolist())), instruction, now)
            chunk = answer(observation)
            run.decoded_rows.append(chunk.actions[0].copy())
            if not pipeline.submit(chunk, now):
                run.rejected = pipeline.executor_stats().last_rejection or "the executor rejected the chunk"
                break
            answered += 1
        run.targets.append(np.full(robot.nq, np.nan) if tick.q_target is None else tick.q_target.copy())
        if tick.command.sendable:
            q = tick.command.positions.copy()
        run.positions.append(q.copy())
        now += dt
    return run


# --- judging a run --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Motion:
    """How far one joint, gripper or EE moved under the identity policy (targets handed to the safety filter).
    `expected`: where holding still leaves it (its start, or a binarised gripper's settled end); `motion`: the largest
    distance from it over the run (a binarised gripper: at the end); grippers also as a fraction of the opening."""

    name: str
    unit: str
    start: float
    expected: float
    motion: float
    tolerance: float
    opening_motion: float | None = None
    commanded_motion: float = 0.0  # the safety filter's commands (the robot), for the report
    cause: str | None = None

    @property
    def ok(self) -> bool:
        return self.motion <= self.tolerance


@dataclass(frozen=True)
class StateResult:
    label: str
    ticks: int
    chunks: int
    motions: tuple[Motion, ...]
    rejected: str | None = None

    @property
    def passed(self) -> bool:
        return self.rejected is None and all(m.ok for m in self.motions)


@dataclass(frozen=True)
class ContractReport:
    policy: str
    backend: str
    robot: str
    space: ActionSpace
    horizon: int
    rate_hz: float
    states: tuple[StateResult, ...]
    notes: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return all(state.passed for state in self.states)

    def first_cause(self) -> str:
        """One line for the failure (the first moving joint's cause), '' when the contract holds."""
        for state in self.states:
            if state.rejected is not None:
                return f"state {state.label}: the identity chunk was rejected: {state.rejected}"
            for motion in state.motions:
                if not motion.ok:
                    return f"state {state.label}: {motion.cause}"
        return ""


def check_contract(policy: Policy, robot: RobotModel, states: Sequence[tuple[str, np.ndarray]],
                   config: ContractConfig = ContractConfig(), *, ik_config: IKConfig | None = None,
                   safety_config: SafetyConfig | None = None) -> ContractReport:
    """Run the identity policy closed-loop from each (label, q_start) of `states` and judge whether it held still."""
    meta = policy.metadata
    notes = list(getattr(policy, "contract_notes", ()))
    if not hasattr(policy, "identity_chunk"):
        notes.append(f"{type(policy).__name__} has no observation encoding or action decoding of its own: checked "
                     f"from its action space through executor -> IK -> safety only")
    limits = SafetyLimits.of(robot, safety_config or SafetyConfig())
    results, identity_notes = [], set()
    for label, q_start in states:
        identity = Identity(meta.action_space, robot)

        def answer(observation: Observation, identity: Identity = identity) -> ActionChunk:
            if hasattr(policy, "identity_chunk"):
                return policy.identity_chunk(observation, identity)
            return identity_from_state(policy, {}, observation, identity)

        try:
            run = run_closed_loop(robot, policy, answer, q_start, config.chunks, ik_config=ik_config,
                                  safety_config=safety_config)
        except BadChunkError as exc:  # the backend's own reply parsing refused the identity's answer
            run = Run(np.asarray(q_start, dtype=float), rejected=str(exc))
        results.append(_judge(label, run, identity, policy, robot, config, limits))
        identity_notes |= identity.notes
    return ContractReport(meta.name, type(policy).__name__, robot.name, meta.action_space, meta.horizon, meta.rate_hz,
                          tuple(results), tuple(notes) + tuple(sorted(identity_notes)))


def _judge(label: str, run: Run, identity: Identity, policy: Policy, robot: RobotModel, config: ContractConfig,
           limits: SafetyLimits) -> StateResult:
    if run.rejected is not None or not run.targets:
        return StateResult(label, len(run.targets), len(run.decoded_rows), (), run.rejected or "no tick ran")
    space = policy.metadata.action_space
    targets = np.array(run.targets)
    targets = targets[~np.isnan(targets).any(axis=1)]
    positions = np.array(run.positions)
    # the safety filter brings a joint resting outside its margined range inside it, whatever the policy does
    q0 = np.clip(run.q_start, limits.lower, limits.upper)
    columns = identity.columns
    changed = _decoding_changes(identity, run)
    motions = []
    for arm in robot.arms:
        covered = [c for c, column in enumerate(columns) if column.arm == arm.name]
        if space.is_ee and arm.name in space.arms:
            motion_columns = [c for c in covered if columns[c].kind != "gripper"]
            motions += _ee_motions(robot, arm, q0, targets, positions, config, _cause(changed, motion_columns))
        else:
            for joint in arm.joints:
                i = robot.joint_names.index(joint)
                motion = float(np.abs(targets[:, i] - q0[i]).max()) if len(targets) else 0.0
                unit = "m" if limits.prismatic[i] else "rad"
                mine = [c for c in covered if columns[c].joint == joint]
                cause = _cause(changed, mine) or f"{joint}: a hold-still policy moves it {motion:.4g} {unit}"
                motions.append(Motion(joint, unit, q0[i], q0[i], motion, config.joint_tolerance,
                                      commanded_motion=float(np.abs(positions[:, i] - q0[i]).max()), cause=cause))
        if arm.gripper is not None:
            unit = "m" if limits.prismatic[arm.gripper.index] else "rad"
            motions.append(_gripper_motion(unit, arm, q0, targets, positions, identity, policy, config, changed,
                                           covered))
    return StateResult(label, len(run.targets), len(run.decoded_rows), tuple(motions))


def _decoding_changes(identity: Identity, run: Run) -> dict[int, str]:
    """Action columns whose decoded value differs from the identity's hold-still value (first chunk) -> why."""
    if not identity.rows or not run.decoded_rows:
        return {}
    sent, decoded = identity.rows[0], run.decoded_rows[0]
    return {c: f"action column {c} ({identity.columns[c].label}): the action decoding turns the hold-still value "
               f"{sent[c]:.6g} into {decoded[c]:.6g} (part order, clip, scale or binarise of the config's actions)"
            for c in np.flatnonzero(np.abs(decoded - sent) > _DECODE_TOLERANCE)}


def _cause(changed: Mapping[int, str], columns: Sequence[int]) -> str:
    return next((changed[c] for c in columns if c in changed), "")


def _ee_motions(robot, arm, q0, targets, positions, config, cause: str) -> list[Motion]:
    data = robot.new_data()
    start = robot.fk(q0, arm.ee_frame_id, data)

    def poses(rows: np.ndarray) -> tuple[float, float]:
        linear, angular = [0.0], [0.0]
        for q in rows:
            pose = robot.fk(q, arm.ee_frame_id, data)
            linear.append(float(np.linalg.norm(pose.translation - start.translation)))
            angular.append(float(np.linalg.norm(from_matrix("axis_angle", start.rotation.T @ pose.rotation))))
        return max(linear), max(angular)

    (linear, angular), (linear_cmd, angular_cmd) = poses(targets), poses(positions)
    out = []
    for name, unit, motion, commanded in ((f"{arm.name} EE position", "m", linear, linear_cmd),
                                          (f"{arm.name} EE rotation", "rad", angular, angular_cmd)):
        out.append(Motion(name, unit, 0.0, 0.0, motion, config.joint_tolerance, commanded_motion=commanded,
                          cause=cause or f"{name}: zero-delta actions move it {motion:.4g} {unit} through IK"))
    return out


def _gripper_motion(unit, arm, q0, targets, positions, identity, policy, config, changed, covered) -> Motion:
    gripper, space = arm.gripper, policy.metadata.action_space
    i, width = gripper.index, abs(gripper.open - gripper.closed)
    start = float(q0[i])
    state_span = identity.state_spans.get(gripper.joint, (gripper.open, gripper.closed))
    column = next((c for c in covered if identity.columns[c].kind == "gripper"), None)
    transform = getattr(policy, "transform", None)
    threshold = dict(transform.binarize).get(column) if transform is not None and column is not None else None
    expected, motion = start, float(np.abs(targets[:, i] - start).max()) if len(targets) else 0.0
    if threshold is not None and identity.rows and len(targets):
        # The peer's client thresholds this column: holding still, the gripper goes to the end of the state side's
        # span nearest to the observed opening (either end from about half open) and is judged there.
        observed = space.gripper.opening(identity.rows[0][column])
        ends = [gripper.to_joint(gripper.opening(state_span[1] + end * (state_span[0] - state_span[1])))
                for end in ((0.0, 1.0) if abs(observed - 0.5) < 0.05 else (float(observed > 0.5),))]
        expected = min(ends, key=lambda end: abs(targets[-1, i] - end))
        motion = abs(float(targets[-1, i]) - expected)
    cause = _cause(changed, [column] if column is not None else [])
    if not cause and column is not None:
        action_span = space.gripper.joint_span(gripper)
        if not np.allclose(action_span, state_span):
            cause = (f"{gripper.joint}: state side normalises over {state_span[1]:g}..{state_span[0]:g} {unit}, "
                     f"action side maps over {action_span[1]:g}..{action_span[0]:g} {unit}: a hold-still policy moves "
                     f"it {motion:.2g} {unit} (declare the state side's span in action_space.gripper: joint_open: "
                     f"{state_span[0]:g}, joint_closed: {state_span[1]:g})")
    if not cause:
        settles = f" from its settled end {expected:.4g} {unit} (binarised at {threshold:g})" if threshold is not None \
            else ""
        cause = f"{gripper.joint}: a hold-still policy moves it {motion:.2g} {unit}{settles}"
    return Motion(gripper.joint, unit, start, expected, motion, config.gripper_tolerance * width,
                  opening_motion=motion / width, commanded_motion=float(np.abs(positions[:, i] - start).max()),
                  cause=cause)


def offset_state(robot: RobotModel) -> np.ndarray:
    """The home pose with every arm joint moved by a different amount (0.05 rad / m, then 0.02 more per joint) toward
    the middle of its range and every gripper 30 % open: arms and joints no longer share values, so swapped columns
    or arms move the robot, and grippers sit between their end stops, where a span mismatch is not clipped away."""
    q = robot.home.copy()
    k = 0
    for arm in robot.arms:
        for i in arm.index:
            lower, upper = robot.limits.lower[i], robot.limits.upper[i]
            step = min(0.05 + 0.02 * k, 0.25 * (upper - lower))
            q[i] += step if q[i] <= 0.5 * (lower + upper) else -step
            k += 1
        if arm.gripper is not None:
            q[arm.gripper.index] = arm.gripper.to_joint(0.3)
    return q
