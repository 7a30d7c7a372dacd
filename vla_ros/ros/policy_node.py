"""policy_node: cameras + joint_states + instruction -> one action per control tick, a thin shell over
core.executor.ChunkExecutor and core.policy_worker.PolicyWorker (inference in a worker thread).

Each control tick (robot control_rate_hz, ROS time): hand finished inferences to the executor, tick it, request a
new chunk when it asks (observation = the latest frame of every camera the policy uses, captured after the
executor's `request_after`, with the *oldest* frame's capture stamp), and publish the tick's action:
  EE actions    -> /vla_ros/ee_command    (core.ik.EECommand per arm, to ik_node)
  joint actions -> /vla_ros/joint_command (joint targets by name, straight to safety_node)
Nothing is published while joint_states are stale or before the first chunk: the safety node holds. A policy that
raises, hangs or returns NaN is counted (executor / worker stats on /diagnostics) and the executor holds.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import fields

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from vla_ros.core.contract import check_contract
from vla_ros.core.errors import ConfigError, VlaRosError
from vla_ros.core.executor import ChunkExecutor, ExecutorConfig
from vla_ros.core.ik import ee_commands_from_action
from vla_ros.core.pipeline import joint_targets_from_action
from vla_ros.core.policies import make_policy
from vla_ros.core.policy_worker import PolicyWorker
from vla_ros.core.types import ActionChunk, Observation
from vla_ros.ros import diagnostics, params, qos
from vla_ros.ros.base import JointStateInput, RateLimitedLog, now_sec
from vla_ros.ros.markers import chunk_markers
from vla_ros.ros.entry import run_single_node
from vla_ros.ros.messages import (EE_COMMAND_TOPIC, JOINT_COMMAND_TOPIC, fill_ee_command, fill_joint_state,
                                  image_from_compressed, image_from_msg, stamp_to_sec)

# ROS parameters have no None: an optional count (execute_steps, max_blend_steps) is 0 for "not set".
_OPTIONAL = {f.name for f in fields(ExecutorConfig) if f.default is None}
_EXECUTOR_DEFAULTS = {f.name: 0 if f.default is None else f.default for f in fields(ExecutorConfig) if f.name != "control_dt"}

PARAMETERS = {
    "policy": "baseline",  # built-in policy name or a policy YAML path
    "instruction": "",  # initial task text; /vla_ros/instruction (std_msgs/String) replaces it
    "instruction_topic": "/vla_ros/instruction",
    "ee_command_topic": EE_COMMAND_TOPIC,
    "joint_command_topic": JOINT_COMMAND_TOPIC,
    "markers_topic": "/vla_ros/chunk_markers",
    "image_transport": "raw",  # raw: sensor_msgs/Image on the camera topic; compressed: CompressedImage on <topic>/compressed
    "image_timeout": 0.5,  # s: a frame received longer ago is not used for a new observation
    "inference_timeout": 5.0,  # s: an inference running longer is abandoned (the policy hung)
    # The action-contract self-test (core.contract, `vla-ros check-policy`) at start-up: the node refuses to start
    # when a policy that holds still would move the robot. false skips it (logged).
    "contract_check": True,
    "contract_check_wait": 1.0,  # s to wait for a measured joint state to check from; else the home pose
    "diagnostics_period": 1.0,
    **{f"executor.{name}": value for name, value in _EXECUTOR_DEFAULTS.items()},
}


class _Frame:
    __slots__ = ("pixels", "stamp", "received")

    def __init__(self, pixels: np.ndarray, stamp: float, received: float):
        self.pixels, self.stamp, self.received = pixels, stamp, received


class PolicyNode(Node):
    def __init__(self, *, robot=None, policy=None, **node_kwargs):
        super().__init__("policy_node", **node_kwargs)
        self._log = RateLimitedLog(self)
        params.declare(self, {k: v for k, v in PARAMETERS.items() if not k.startswith("executor.")})
        self.robot = robot or params.robot_from_params(self)
        self.policy = policy or make_policy(params.value(self, "policy"), self.robot)
        meta = self.policy.metadata
        self.space = meta.action_space
        check_space_fits_robot(self.space, self.robot, meta.name)
        self.control_dt = 1.0 / self.robot.control_rate_hz
        # Executor settings the policy prescribes (a LeRobot checkpoint's n_action_steps / temporal ensembling) are
        # the defaults; values given to the node (-p, params file, overrides) still win.
        prescribed = {name: 0 if value is None else value for name, value in meta.executor.items()}
        params.declare(self, {f"executor.{name}": prescribed.get(name, default)
                              for name, default in _EXECUTOR_DEFAULTS.items()})
        executor = {name: params.value(self, f"executor.{name}") for name in _EXECUTOR_DEFAULTS}
        executor.update({name: executor[name] or None for name in _OPTIONAL})
        self.chunks = ChunkExecutor(ExecutorConfig(control_dt=self.control_dt, **executor), meta)
        self.worker = PolicyWorker(self.policy, lambda: now_sec(self), params.value(self, "inference_timeout"))
        self.joint_timeout = params.value(self, "joint_state_timeout")
        self.image_timeout = params.value(self, "image_timeout")
        self.instruction = params.value(self, "instruction")
        self.arm_names = [a.name for a in self.robot.arms]
        self.grippers = self.robot.grippers

        self.states = JointStateInput(self, self.robot)
        if params.value(self, "contract_check"):
            self._check_contract(params.value(self, "contract_check_wait"))
        else:
            self.get_logger().warning("action-contract self-test skipped (contract_check false)")
        self.cameras = self._policy_cameras(meta.cameras)
        self._frames: dict[str, _Frame] = {}
        # a policy with an observation history (LeRobot Diffusion, n_obs_steps > 1) is shown every new frame
        self._observe = getattr(self.policy, "observe", None)
        self._observed_stamp = float("-inf")
        self.image_errors = 0
        self.last_image_error = ""
        transport = params.value(self, "image_transport")
        if transport not in ("raw", "compressed"):
            raise ConfigError("policy_node", "image_transport", f"expected raw or compressed, got {transport!r}")
        compressed = transport == "compressed"
        for camera in self.cameras:
            if compressed:
                self.create_subscription(CompressedImage, camera.topic.rstrip("/") + "/compressed",
                                         lambda m, c=camera: self._on_image(c, m, True), qos.SENSOR)
            else:
                self.create_subscription(Image, camera.topic, lambda m, c=camera: self._on_image(c, m, False),
                                         qos.SENSOR)
        self.create_subscription(String, params.value(self, "instruction_topic"), self._on_instruction, qos.LATCHED)

        self.ee_publisher = self.create_publisher(JointState, params.value(self, "ee_command_topic"), qos.COMMAND)
        self.joint_publisher = self.create_publisher(JointState, params.value(self, "joint_command_topic"), qos.COMMAND)
        self.markers = self.create_publisher(MarkerArray, params.value(self, "markers_topic"), 1)
        self.diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._lock = threading.Lock()  # instruction changes vs the tick
        self._last_joint_target: np.ndarray | None = None
        self._stale = True
        self.stale_ticks = 0
        self.published = 0
        # Camera -> command latency: the executor numbers accepted chunks 0, 1, 2, ... in acceptance order, so
        # chunk id k answered the observation stamped accepted_stamps[k]; `adoptions` records (tick time, that
        # stamp) the first time a chunk drives a command.
        self.accepted_stamps: list[float] = []
        self.adoptions: list[tuple[float, float]] = []
        self._adopted_id = -1
        self.last_hold = "startup"
        self.create_timer(self.control_dt, self._tick)
        self.create_timer(params.value(self, "diagnostics_period"), self._publish_diagnostics)

    def _check_contract(self, wait: float) -> None:
        """Refuse to start (ConfigError) unless the identity policy holds the robot still from the measured state
        (the home pose when no complete joint state arrives within `wait` s)."""
        if wait > 0:  # spin this node alone until the joint states are in: no timer exists yet
            executor = SingleThreadedExecutor(context=self.context)
            executor.add_node(self)
            deadline = time.monotonic() + wait
            try:
                while not self.states.fresh(now_sec(self), self.joint_timeout) and time.monotonic() < deadline:
                    executor.spin_once(timeout_sec=0.02)
            finally:
                executor.remove_node(self)
                executor.shutdown()
        if self.states.fresh(now_sec(self), self.joint_timeout):
            state, q = "measured", self.states.cache.positions.copy()
        else:
            state, q = "home", self.robot.home.copy()
        report = check_contract(self.policy, self.robot, [(state, q)])
        if not report.passed:
            raise ConfigError(f"policy {self.policy.metadata.name}", "action contract",
                              f"{report.first_cause()} (vla-ros check-policy gives the whole report; "
                              f"contract_check:=false skips this check)")
        self.get_logger().info(f"action contract holds from the {state} state ({len(report.notes)} notes: "
                               f"vla-ros check-policy lists them)")

    def _policy_cameras(self, names):
        by_name = {c.name: c for c in self.robot.cameras}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise VlaRosError(f"policy {self.policy.metadata.name} needs camera {missing[0]!r}, which robot "
                              f"{self.robot.name} does not configure (cameras: {', '.join(by_name) or 'none'})")
        return [by_name[n] for n in names] if names else list(self.robot.cameras)

    # --- inputs -------------------------------------------------------------------------------------------------
    def _on_image(self, camera, msg, compressed: bool) -> None:
        try:
            pixels = image_from_compressed(msg, camera) if compressed else image_from_msg(msg, camera)
        except VlaRosError as exc:
            self.image_errors += 1
            self.last_image_error = str(exc)
            self._log("error", f"image {camera.name}", str(exc))
            return
        self._frames[camera.name] = _Frame(pixels, stamp_to_sec(msg.header.stamp), now_sec(self))

    def _on_instruction(self, msg: String) -> None:
        with self._lock:
            if msg.data != self.instruction:
                self.instruction = msg.data
                self.chunks.reset(now_sec(self))  # a new task: never finish the old one's chunk
                self.get_logger().info(f"instruction: {msg.data!r}")

    def observation(self, now: float, after: float) -> Observation | None:
        """The latest frame of every policy camera (all fresh and captured after `after`) + joint state, or None."""
        frames = {}
        for camera in self.cameras:
            frame = self._frames.get(camera.name)
            if frame is None or now - frame.received > self.image_timeout or frame.stamp <= after:
                return None
            frames[camera.name] = frame
        cache = self.states.cache
        names = self.robot.joint_names
        return Observation(
            images={name: f.pixels for name, f in frames.items()},
            joint_positions=dict(zip(names, cache.positions.tolist())),
            instruction=self.instruction,
            stamp=min(f.stamp for f in frames.values()),
            joint_velocities=dict(zip(names, cache.velocities.tolist())),
        )

    # --- the control tick ---------------------------------------------------------------------------------------
    def _tick(self) -> None:
        now = now_sec(self)
        with self._lock:
            if not self.states.fresh(now, self.joint_timeout):
                if not self._stale:
                    self.get_logger().warning(f"holding: {self.states.stale_reason(now, self.joint_timeout)}")
                    self.chunks.reset(now)
                self._stale = True
                self.stale_ticks += 1
                self.last_hold = "joint_states_stale"
                return
            self._stale = False
            for result in self.worker.poll():
                if result.chunk is not None:
                    if self.chunks.submit(result.chunk, now):
                        # a repeat of the newest chunk (same stamp) is accepted but is not a new chunk
                        if not self.accepted_stamps or result.chunk.stamp != self.accepted_stamps[-1]:
                            self.accepted_stamps.append(result.chunk.stamp)
                            self._publish_markers(result.chunk, now)
                    else:
                        self._log("error", "chunk rejected", self.chunks.stats().last_rejection or "chunk rejected")
                else:
                    self.chunks.record_inference_error(result.error)
                    self._log("error", "inference error", result.error)
            tick = self.chunks.tick(now)
            self.last_hold = tick.hold or ""
            if tick.request and not self.worker.busy:
                observation = self.observation(now, tick.request_after)
                if observation is not None:
                    prefix = self.chunks.prefix(observation.stamp) if self.policy.metadata.supports_prefix else None
                    self.worker.request(observation, prefix)
            if self._observe is not None:
                self._show_frame(now)
            if tick.action is not None:
                self._publish_action(tick.action, now)
                newest = max(tick.sources, default=-1)
                if newest > self._adopted_id:
                    self._adopted_id = newest
                    self.adoptions.append((now, self.accepted_stamps[newest]))

    def _show_frame(self, now: float) -> None:
        observation = self.observation(now, self._observed_stamp)
        if observation is None:
            return
        self._observed_stamp = observation.stamp
        try:
            self._observe(observation)
        except VlaRosError as exc:  # e.g. a frame of the wrong format: the next inference reports it too
            self.image_errors += 1
            self.last_image_error = str(exc)
            self._log("error", "observe", str(exc))

    def _publish_action(self, action: np.ndarray, now: float) -> None:
        try:
            if self.space.is_ee:
                commands = ee_commands_from_action(self.space, action, self.arm_names, self.grippers)
                self.ee_publisher.publish(fill_ee_command(JointState(), commands, now))
            else:
                reference = self._last_joint_target if self._last_joint_target is not None else self.states.cache.positions
                q = joint_targets_from_action(self.space, action, self.robot, reference, self.control_dt)
                self._last_joint_target = q
                self.joint_publisher.publish(fill_joint_state(JointState(), self.robot.joint_names, q, now))
            self.published += 1
        except (VlaRosError, ValueError) as exc:  # e.g. a degenerate quaternion: hold rather than guess
            self.chunks.record_inference_error(str(exc))
            self._log("error", "action", f"action not published: {exc}")

    def _publish_markers(self, chunk: ActionChunk, now: float) -> None:
        if self.markers.get_subscription_count() == 0:
            return
        try:
            paths = predicted_ee_paths(self.robot, self.space, chunk.actions, self.states.cache.positions, self.control_dt)
        except (VlaRosError, ValueError):
            return
        self.markers.publish(chunk_markers(paths, self.robot.base_frame, now))

    def _publish_diagnostics(self) -> None:
        now = now_sec(self)
        stats = self.chunks.stats()
        worker = self.worker.stats()
        error = worker["last_error"] or stats.last_rejection or self.last_image_error or self.states.last_error or ""
        holding = self.last_hold not in ("", None)
        level = diagnostics.ERROR if (holding and error) else diagnostics.WARN if holding or error else diagnostics.OK
        message = f"holding ({self.last_hold})" if holding else "running"
        values = {
            "policy": self.policy.metadata.name, "mode": self.chunks.config.mode, "state": self.last_hold or "running",
            "ticks": stats.ticks, "commands": stats.commands, "published": self.published, "holds": stats.holds,
            "underflows": stats.underflows, "accepted_chunks": stats.accepted_chunks,
            "rejected_chunks": stats.rejected_chunks, "inference_errors": stats.inference_errors,
            "inference_timeouts": worker["timeouts"], "latency_last": stats.latency_last,
            "latency_max": stats.latency_max, "last_inference_time": worker["last_inference_time"],
            "stale_joint_state_ticks": self.stale_ticks, "joint_state_errors": self.states.errors,
            "image_errors": self.image_errors, "last_error": error,
        }
        status = diagnostics.status(f"vla_ros/policy_node ({self.robot.name})", level, message, values)
        self.diagnostics.publish(diagnostics.array([status], now))

    def destroy_node(self):
        self.worker.close()
        return super().destroy_node()


def check_space_fits_robot(space, robot, policy: str) -> None:
    """Refuse at start-up a policy whose action space names an arm the robot lacks or a gripper it does not have,
    instead of failing on every tick."""
    arms = {a.name: a for a in robot.arms}
    for i, name in enumerate(space.arms):
        if name not in arms:
            raise ConfigError(f"policy {policy}", "action_space.arms",
                              f"arm {name!r} is not an arm of robot {robot.name} (arms: {', '.join(arms)})")
        if space.gripper is not None and arms[name].gripper is None:
            raise ConfigError(f"policy {policy}", "action_space.gripper",
                              f"the action has a gripper column but arm {name!r} of robot {robot.name} has no gripper")
        if not space.is_ee and space.joints_per_arm[i] != len(arms[name].joints):
            raise ConfigError(f"policy {policy}", "action_space.joints_per_arm",
                              f"{space.joints_per_arm[i]} joint columns for arm {name!r}, which has "
                              f"{len(arms[name].joints)} joints")


def predicted_ee_paths(robot, space, actions: np.ndarray, q: np.ndarray, dt: float) -> dict[str, np.ndarray]:
    """EE positions (base frame) per arm along a chunk, from the measured q: EE actions composed as the IK composes
    them onto its target; joint actions through forward kinematics."""
    arms = [a.name for a in robot.arms]
    if not space.is_ee:
        paths = {name: [] for name in space.arms}
        reference = q
        for action in actions:
            reference = joint_targets_from_action(space, action, robot, reference, dt)
            for name in space.arms:
                paths[name].append(robot.fk(reference, robot.arm(name).ee_frame_id).translation)
        return {name: np.array(p) for name, p in paths.items()}
    poses = {name: robot.fk(q, robot.arm(name).ee_frame_id) for name in space.arms}
    grippers, paths = robot.grippers, {name: [] for name in space.arms}
    for action in actions:
        for name, cmd in ee_commands_from_action(space, action, arms, grippers).items():
            poses[name] = cmd.applied_to(poses[name])
            paths[name].append(poses[name].translation.copy())
    return {name: np.array(p) for name, p in paths.items()}


def main(argv: list[str] | None = None) -> int:
    return run_single_node(PolicyNode, sys.argv if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
