"""The deterministic replay loop: a bag's camera, joint-state and instruction messages drive the control chain in
bag time, at the robot's control rate, as fast as the machine allows.

Time. Tick k runs at bag time `start + k / control_rate_hz`; before it, every message recorded (log time) up to
then is applied. Joint states reach the safety watchdog stamped with their log (receive) time, the clock the
control loop runs on. Observation stamps are the cameras' capture stamps (header.stamp; the log time when a driver
leaves it zero), as on the robot.

Inference. There is no thread: when a tick asks for a chunk, the policy is called at once on the newest observation
(deterministic) and its answer is handed to the executor at `request time + latency`, the latency being the injected
`latency` plus seeded uniform jitter in [-jitter, +jitter] (or, with `measured_latency`, what the call really took:
realistic for a real model, not reproducible). One request is in flight at a time, as with the live worker.

Reading. The bag is read once, in log-time order. Camera frames are kept as raw CDR bytes, newest per topic; when a
tick asks for a chunk the newest frame's capture stamp is read from those bytes (`raw_header_stamp`), and the frame
is deserialized and converted only when an observation is built from it (once per frame, however often it is used).
Joint states: only the newest message per source is deserialized at each tick.

Bad input is counted by reason in `record.skipped` (undecodable messages, unusable images or joint states, camera
stamps that go backwards) or raised as a one-line BagError when the run cannot be meaningful (a topic the chain
needs is missing, a commanded joint never appears in any joint state). Camera frames are validated when they are
looked at: a frame superseded before any request looked at it is neither decoded nor counted;
`record.notes["camera_frames"]` gives, per camera topic, the frames received, whose stamp was read, and decoded.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import numpy as np

from vla_ros.core.errors import VlaRosError
from vla_ros.core.executor import ExecutorConfig
from vla_ros.core.ik import IKConfig
from vla_ros.core.images import ImageError
from vla_ros.core.pipeline import ControlPipeline
from vla_ros.core.replay.bag import Bag, BagError, BagMessage, MessageDecodeError, raw_header_stamp
from vla_ros.core.replay.messages import (ACTION_TYPE, COMMAND_TYPES, IMAGE_TYPES, JOINT_STATE_TYPE, STRING_TYPE,
                                          CommandReader, JointStateReader, UnusableMessage, action_vector, header_stamp,
                                          image_rgb)
from vla_ros.core.replay.metrics import Inference, ReplayRecord
from vla_ros.core.robot import CameraSpec, RobotModel
from vla_ros.core.safety import SafetyConfig
from vla_ros.core.types import Observation, Policy


_TIME_EPS = 1e-9  # s: bag times from integer nanoseconds and tick times from float sums agree to this


@dataclass(frozen=True)
class ReplayOptions:
    latency: float = 0.0  # s, injected inference latency
    jitter: float = 0.0  # s, uniform jitter half-width around `latency`
    seed: int = 0  # of the jitter
    measured_latency: bool = False  # use each call's wall time as its latency instead (not reproducible)
    instruction: str | None = None  # used when the bag has no instruction topic
    instruction_topic: str = "/vla_ros/instruction"  # the policy node's default
    image_timeout: float = 0.5  # s: frames received longer ago are not used for an observation (policy node's)
    joint_state_timeout: float = 0.1  # s: the policy node holds when a joint was not measured for this long
    actions_topic: str | None = None  # recorded actions (std_msgs/Float64MultiArray, one action per message)

    def __post_init__(self):
        for name in ("latency", "jitter", "image_timeout", "joint_state_timeout"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise VlaRosError(f"replay {name}: expected >= 0 s, got {value:g}")


@dataclass(frozen=True)
class ChainInputs:
    """The bag topics one replay reads, resolved against the robot and policy."""

    cameras: dict[str, tuple[CameraSpec, str]]  # camera name -> (spec, bag topic)
    joint_state_topics: tuple[str, ...]
    instruction_topic: str | None
    command_topics: tuple[str, ...]
    actions_topic: str | None
    uncompared: dict[str, str]  # joint -> why its recorded commands are not compared


def resolve_inputs(bag: Bag, robot: RobotModel, policy: Policy, options: ReplayOptions) -> ChainInputs:
    """Which bag topics feed the chain; a one-line BagError for a topic that is needed but missing or mistyped."""
    wanted = policy.metadata.cameras or tuple(c.name for c in robot.cameras)
    by_name = {c.name: c for c in robot.cameras}
    cameras = {}
    for name in wanted:
        if name not in by_name:
            raise BagError(f"policy {policy.metadata.name} needs camera {name!r}, which robot {robot.name} does not "
                           f"define (cameras: {', '.join(by_name) or 'none'})")
        camera = by_name[name]
        topic = camera.topic
        compressed = f"{topic.rstrip('/')}/compressed"
        if topic not in bag.topics and compressed in bag.topics:  # image_transport's compressed republish
            topic = compressed
        bag.topic(topic, IMAGE_TYPES, f"camera {name}")
        cameras[name] = (camera, topic)
    joint_state_topics = tuple(source.topic for source in robot.joint_state_sources)
    for topic in joint_state_topics:
        bag.topic(topic, (JOINT_STATE_TYPE,), f"joint states of robot {robot.name}")
    instruction_topic = None
    if options.instruction_topic in bag.topics:
        instruction_topic = bag.topic(options.instruction_topic, (STRING_TYPE,), "instruction").name
    command_topics, uncompared = [], {}
    for controller in robot.controllers:
        expected = COMMAND_TYPES[controller.interface]
        info = bag.topics.get(controller.topic)
        if not expected:
            why = f"{controller.interface} is an action interface, not recorded as a topic"
        elif info is None:
            why = f"topic {controller.topic} not in the bag"
        elif info.msgtype not in expected:
            why = f"topic {controller.topic} has type {info.msgtype}, expected {expected[0]}"
        elif not bag.can_decode(info.msgtype):
            why = f"topic {controller.topic}: no definition of {info.msgtype} in the bag"
        else:
            command_topics.append(controller.topic)
            continue
        uncompared.update({joint: why for joint in controller.joints})
    actions_topic = None
    if options.actions_topic:
        actions_topic = bag.topic(options.actions_topic, (ACTION_TYPE,), "recorded actions").name
    return ChainInputs(cameras, joint_state_topics, instruction_topic, tuple(command_topics), actions_topic,
                       uncompared)


def read_actions(bag: Bag, topic: str, dim: int) -> tuple[np.ndarray, np.ndarray, Counter]:
    """Recorded actions of an actions topic: (times (N,), actions (N, dim)), skipping unusable messages (counted)."""
    bag.topic(topic, (ACTION_TYPE,), "recorded actions")
    times, actions, skipped = [], [], Counter()
    for message in bag.messages([topic]):
        try:
            values = action_vector(bag.decode(message), dim, topic)
        except MessageDecodeError:
            skipped["undecodable_message"] += 1
            continue
        except UnusableMessage as exc:
            skipped[exc.reason] += 1
            continue
        if times and message.log_time <= times[-1]:
            skipped["action_time_not_increasing"] += 1
            continue
        times.append(message.log_time)
        actions.append(values)
    if not actions:
        raise BagError(f"bag {bag.path}: topic {topic} has no usable {dim}-value action")
    return np.array(times), np.array(actions), skipped


class _SimulatedInference:
    """Policy calls with injected latency: computed at request time, delivered at request time + latency."""

    def __init__(self, policy: Policy, options: ReplayOptions):
        self.policy, self.options = policy, options
        self._rng = np.random.default_rng(options.seed)
        self.pending: tuple[float, object, Inference] | None = None  # (delivery time, chunk or error, record)
        self.log: list[Inference] = []

    @property
    def busy(self) -> bool:
        return self.pending is not None

    def request(self, observation: Observation, prefix, now: float) -> None:
        started = time.perf_counter()
        error = None
        try:
            result = self.policy.infer(observation) if prefix is None else self.policy.infer(observation, prefix=prefix)
        except Exception as exc:  # any backend failure is what the live worker reports too: counted, not fatal
            detail = " ".join(str(exc).split())
            error = f"policy {self.policy.metadata.name}: infer raised {type(exc).__name__}: {detail}"
            result = None
        wall = time.perf_counter() - started
        if self.options.measured_latency:
            latency = wall
        else:
            jitter = self._rng.uniform(-self.options.jitter, self.options.jitter) if self.options.jitter else 0.0
            latency = max(0.0, self.options.latency + jitter)
        record = Inference(now, observation.stamp, latency, wall, now + latency, error)
        self.log.append(record)
        self.pending = (now + latency, result if error is None else error, record)

    def deliver(self, now: float, pipeline: ControlPipeline) -> None:
        if self.pending is None or self.pending[0] > now + _TIME_EPS:
            return
        _, result, _ = self.pending
        self.pending = None
        if isinstance(result, str):
            pipeline.record_inference_error(result)
        else:
            pipeline.submit(result, now)


class _Replay:
    """State of one run: the latest inputs, what the chain did per tick, and what was skipped."""

    def __init__(self, bag: Bag, robot: RobotModel, policy: Policy, inputs: ChainInputs, pipeline: ControlPipeline,
                 options: ReplayOptions):
        self.bag, self.robot, self.policy, self.inputs, self.pipeline = bag, robot, policy, inputs, pipeline
        self.joint_states = JointStateReader(robot)
        self.commands = CommandReader(robot)
        self.skipped: Counter = Counter()
        self.camera_topics = {topic for _, topic in inputs.cameras.values()}
        self.latest_images: dict[str, BagMessage] = {}  # newest frame per camera topic, decoded only when used
        self._stamps: dict[str, tuple[BagMessage, float]] = {}  # capture stamp of the newest frame per topic
        self._pixels: dict[str, tuple[BagMessage, np.ndarray]] = {}  # decoded newest frame per topic
        self.frame_counts = {topic: Counter() for topic in self.camera_topics}  # received / stamp_read / decoded
        self.used_stamps: dict[str, float] = {}
        self.pending_states: dict[str, list[BagMessage]] = {topic: [] for topic in inputs.joint_state_topics}
        self.state_stamps: dict[str, float] = {}
        self.q = np.full(robot.nq, np.nan)
        self.qd = np.full(robot.nq, np.nan)
        self.recorded: dict[int, tuple[list[float], list[float]]] = {}
        self.recorded_actions: tuple[list[float], list[np.ndarray]] = ([], [])
        self.image_timeout = options.image_timeout
        self.instruction = options.instruction or ""
        self.instruction_source = inputs.instruction_topic or ("--instruction" if options.instruction else "none")
        self._instruction_received = False
        self._index_names: dict[int, tuple[np.ndarray, list[str]]] = {}

    def decode(self, message: BagMessage):
        try:
            return self.bag.decode(message)
        except MessageDecodeError:
            self.skipped["undecodable_message"] += 1
            return None

    def apply(self, message: BagMessage) -> None:
        """One recorded message, in log-time order (joint states are only queued: see apply_joint_states)."""
        topic, inputs = message.topic, self.inputs
        if topic in self.camera_topics:
            self.latest_images[topic] = message
            self.frame_counts[topic]["received"] += 1
            return
        if topic in self.pending_states:
            self.pending_states[topic].append(message)
            return
        decoded = self.decode(message)
        if decoded is None:
            return
        try:
            if topic == inputs.instruction_topic:
                if self._instruction_received and decoded.data != self.instruction:
                    self.pipeline.reset(message.log_time)  # a new task: chunks for the old one must not run
                self.instruction, self._instruction_received = decoded.data, True
            elif topic in inputs.command_topics:
                reading = self.commands.read(topic, decoded)
                for index, value in zip(reading.index, reading.positions):
                    times, values = self.recorded.setdefault(int(index), ([], []))
                    times.append(message.log_time)
                    values.append(float(value))
            elif topic == inputs.actions_topic:
                values = action_vector(decoded, self.policy.metadata.action_space.dim, topic)
                self.recorded_actions[0].append(message.log_time)
                self.recorded_actions[1].append(values)
        except UnusableMessage as exc:
            self.skipped[exc.reason] += 1

    def apply_joint_states(self) -> None:
        """The newest usable joint state of each source received since the last tick.

        Only the newest message per source matters to the tick (the positions and the watchdog's stamp it leaves are
        the same as after applying every message in turn), so older ones are not decoded: at 100 Hz joint states and
        a 50 Hz control rate that halves the deserialization work. An unusable newest message is counted and the
        next newest is tried, as the live node would still hold that one.
        """
        for topic, messages in self.pending_states.items():
            while messages:
                message = messages.pop()
                decoded = self.decode(message)
                if decoded is None:
                    continue
                try:
                    stamp = header_stamp(decoded)
                    if stamp is not None and stamp < self.state_stamps.get(topic, -np.inf):
                        raise UnusableMessage("joint_state_stamp_out_of_order",
                                              f"topic {topic}: header stamp went backwards")
                    reading = self.joint_states.read(topic, decoded)
                except UnusableMessage as exc:
                    self.skipped[exc.reason] += 1
                    continue
                if stamp is not None:
                    self.state_stamps[topic] = stamp
                self.q[reading.index] = reading.positions
                if reading.velocities is not None:
                    self.qd[reading.index] = reading.velocities
                self.pipeline.update_joint_state(self._names(reading.index), reading.positions, message.log_time)
                messages.clear()

    def _names(self, index: np.ndarray) -> list[str]:
        """Joint names of a reading's index (the reader returns the same index array for the same source layout)."""
        cached = self._index_names.get(id(index))
        if cached is None or cached[0] is not index:
            cached = self._index_names[id(index)] = (index, [self.robot.joint_names[i] for i in index])
        return cached[1]

    def _drop_frame(self, topic: str, exc: Exception) -> None:
        """Count an unusable newest frame and drop it (the next frame is awaited)."""
        self.skipped["undecodable_message" if isinstance(exc, MessageDecodeError) else
                     getattr(exc, "reason", "image_unusable")] += 1
        del self.latest_images[topic]

    def _frame_stamp(self, name: str, topic: str, now: float) -> float | None:
        """Capture stamp of the newest frame of one camera, read from its CDR bytes (the frame is not decoded);
        None when there is no usable frame: none yet, the camera stopped, or this one is unusable (counted once)."""
        message = self.latest_images.get(topic)
        if message is None:
            return None
        if now - message.log_time > self.image_timeout:
            return None  # the camera stopped: as the policy node, do not act on an old frame
        cached = self._stamps.get(topic)
        if cached is not None and cached[0] is message:
            return cached[1]
        self.frame_counts[topic]["stamp_read"] += 1
        try:
            stamp = raw_header_stamp(message)
            if stamp is None:
                self.skipped["image_without_stamp"] += 1
                stamp = message.log_time
            if stamp < self.used_stamps.get(topic, -np.inf):
                raise UnusableMessage("image_stamp_out_of_order", f"camera {name}: capture stamp went backwards")
        except (MessageDecodeError, UnusableMessage) as exc:
            self._drop_frame(topic, exc)
            return None
        self._stamps[topic] = (message, stamp)
        return stamp

    def _frame_pixels(self, name: str, topic: str) -> np.ndarray | None:
        """The newest frame of one camera as RGB, decoded once per frame; None (counted, dropped) when unusable."""
        message = self.latest_images[topic]
        cached = self._pixels.get(topic)
        if cached is not None and cached[0] is message:
            return cached[1]
        self.frame_counts[topic]["decoded"] += 1
        try:
            pixels = image_rgb(self.bag.decode(message), message.msgtype, f"camera {name} ({topic})")
        except (MessageDecodeError, ImageError, UnusableMessage) as exc:
            self._drop_frame(topic, exc)
            return None
        self._pixels[topic] = (message, pixels)
        return pixels

    def observation(self, now: float, request_after: float) -> Observation | None:
        """The newest observation if every camera has a usable frame captured after `request_after`, else None.
        With several cameras the observation is as old as its oldest frame. Frames are decoded only once the
        stamps show the observation will be used."""
        stamps = {}
        for name, (_, topic) in self.inputs.cameras.items():
            stamps[topic] = self._frame_stamp(name, topic, now)
            if stamps[topic] is None:
                return None
        stamp = min(stamps.values()) if stamps else now
        if stamp <= request_after:
            return None
        images = {}
        for name, (_, topic) in self.inputs.cameras.items():
            images[name] = self._frame_pixels(name, topic)
            if images[name] is None:
                return None
        self.used_stamps.update(stamps)
        names = self.robot.joint_names
        return Observation(images, dict(zip(names, self.q.tolist())), self.instruction, stamp,
                           {n: v for n, v in zip(names, self.qd.tolist()) if math.isfinite(v)})


class _TickLog:
    """What the chain did, tick by tick."""

    def __init__(self):
        self.times: list[float] = []
        self.commanded: list[np.ndarray | None] = []
        self.measured: list[np.ndarray] = []
        self.actions: list[np.ndarray | None] = []
        self.holds: list[str | None] = []
        self.safety_states: list[str] = []
        self.interventions: list[tuple[float, str, str]] = []
        self.ik_flags: Counter = Counter()

    def add(self, now: float, measured: np.ndarray, step=None) -> None:
        self.times.append(now)
        self.measured.append(measured.copy())
        if step is None:  # the chain has not started: some commanded joint was never measured yet
            self.commanded.append(None)
            self.actions.append(None)
            self.holds.append("no_joint_state")
            self.safety_states.append("not_ready")
            return
        self.commanded.append(step.command.positions if step.command.sendable else None)
        self.actions.append(step.action)
        self.holds.append(step.hold)
        self.safety_states.append(step.command.state)
        self.interventions += [(now, item.limit, item.joint or item.arm or "") for item in step.interventions]
        self.ik_flags.update(step.ik_flags())

    @staticmethod
    def rows(values: list[np.ndarray | None], width: int) -> np.ndarray:
        out = np.full((len(values), width), np.nan)
        for k, row in enumerate(values):
            if row is not None:
                out[k] = row
        return out


def run_replay(bag: Bag, robot: RobotModel, policy: Policy, executor_config: ExecutorConfig,
               options: ReplayOptions = ReplayOptions(), ik_config: IKConfig | None = None,
               safety_config: SafetyConfig | None = None,
               progress: Callable[[float], None] | None = None) -> ReplayRecord:
    """Replay `bag` through the chain; `progress(fraction)` is called as bag time advances.

    Ticks run from the bag's first message to the last message of a topic that feeds the chain (cameras, joint
    states, instruction): recorded commands or other topics that outlast the inputs do not add ticks in which the
    chain could only report stale state.
    """
    inputs = resolve_inputs(bag, robot, policy, options)
    pipeline = ControlPipeline(robot, policy, executor_config, ik_config, safety_config,
                               joint_state_timeout=options.joint_state_timeout)
    run = _Replay(bag, robot, policy, inputs, pipeline, options)
    inference = _SimulatedInference(policy, options)
    log = _TickLog()
    # Lists, not sets: the order of topics decides how rosbags breaks ties between equal log times.
    chain_inputs = [topic for _, topic in inputs.cameras.values()] + list(inputs.joint_state_topics) + \
        ([inputs.instruction_topic] if inputs.instruction_topic else [])
    recorded_topics = list(inputs.command_topics) + ([inputs.actions_topic] if inputs.actions_topic else [])
    dt, start, duration = 1.0 / robot.control_rate_hz, bag.start_time, max(bag.duration, 1e-9)
    next_tick = 0

    def tick_until(limit: float, inclusive: bool) -> None:
        """Run every tick before `limit` (at or before it when `inclusive`): they see the messages applied so far."""
        nonlocal next_tick
        while True:
            now = start + next_tick * dt
            if now > limit + _TIME_EPS or (not inclusive and now >= limit - _TIME_EPS):
                return
            next_tick += 1
            run.apply_joint_states()
            if not all(map(math.isfinite, run.q.tolist())):
                log.add(now, run.q)
                continue
            inference.deliver(now, pipeline)
            step = pipeline.tick(now, run.q)
            if step.rejected_action is not None:
                run.skipped["action_not_convertible"] += 1
            log.add(now, run.q, step)
            if step.request and not inference.busy:
                observation = run.observation(now, step.request_after)
                if observation is not None:
                    prefix = pipeline.prefix(observation.stamp) if policy.metadata.supports_prefix else None
                    inference.request(observation, prefix, now)
            if progress is not None and next_tick % 50 == 0:
                progress(min(1.0, (now - start) / duration))

    last_input = None
    for message in bag.messages(chain_inputs + recorded_topics):
        if message.topic in chain_inputs:
            tick_until(message.log_time, inclusive=False)  # a message at a tick's time is applied before that tick
            last_input = message.log_time
        run.apply(message)
    if last_input is not None:
        tick_until(last_input, inclusive=True)
    if progress is not None:
        progress(1.0)

    missing = [robot.joint_names[i] for i in np.flatnonzero(~np.isfinite(run.q))]
    if missing:
        seen = sorted(run.joint_states.ignored_names)[:6]
        raise BagError(f"bag {bag.path}: joint {missing[0]!r} of robot {robot.name} never appears in the joint-state "
                       f"topics ({', '.join(inputs.joint_state_topics)}); names there that match no robot joint: "
                       f"{', '.join(seen) or 'none'}")
    notes = {
        "compared_topics": list(inputs.command_topics),
        "uncompared_joints": inputs.uncompared,
        "no_commands_reason": _no_commands_reason(inputs, robot),
        "instruction": run.instruction,
        "instruction_source": run.instruction_source,
        "cameras": {name: topic for name, (_, topic) in inputs.cameras.items()},
        "ignored_joint_state_names": sorted(run.joint_states.ignored_names),
        "messages_with_trailing_bytes": bag.messages_with_trailing_bytes,
        "camera_frames": {topic: {key: counts[key] for key in ("received", "stamp_read", "decoded")}
                          for topic, counts in run.frame_counts.items()},
    }
    dim = policy.metadata.action_space.dim
    recorded_actions = None
    if inputs.actions_topic:
        recorded_actions = (np.array(run.recorded_actions[0]), np.array(run.recorded_actions[1]).reshape(-1, dim))
    return ReplayRecord(
        robot=robot, action_space=policy.metadata.action_space, start_time=start, times=np.array(log.times),
        commanded=log.rows(log.commanded, robot.nq), measured=np.array(log.measured).reshape(-1, robot.nq),
        actions=log.rows(log.actions, dim), holds=log.holds, safety_states=log.safety_states,
        interventions=log.interventions, ik_flags=log.ik_flags,
        recorded={j: (np.array(t), np.array(v)) for j, (t, v) in run.recorded.items()},
        recorded_actions=recorded_actions, inferences=inference.log,
        executor_stats=pipeline.executor_stats().as_dict(), skipped=run.skipped, notes=notes,
    )


def _no_commands_reason(inputs: ChainInputs, robot: RobotModel) -> str:
    if inputs.command_topics:
        return "the recorded command topics had no usable message"
    topics = ", ".join(c.topic for c in robot.controllers)
    return f"the bag has no recorded controller commands (looked for {topics})"
