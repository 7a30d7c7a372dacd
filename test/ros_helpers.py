"""Helpers for the rclpy graph tests: the shipped Fast DDS profile, bounded waits, a scripted policy, and a
test-side node that plays the robot (joint_states + cameras) and records the controller commands."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# Before any rclpy participant exists: the same transport setup as bringup / launch (SHM + loopback UDP).
os.environ.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(ROOT / "config" / "fastdds.xml"))
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(ROOT / "config" / "fastdds.xml"))

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from vla_ros.core.types import ActionChunk, ActionSpace, GripperConvention, PolicyMetadata  # noqa: E402
from vla_ros.ros import qos  # noqa: E402
from vla_ros.ros.base import now_sec  # noqa: E402
from vla_ros.ros.controllers import ControllerInput, make_adapters  # noqa: E402
from vla_ros.ros.messages import fill_image, fill_joint_state, source_joints  # noqa: E402


# Modules of the interface packages `make venv` builds into .venv (interfaces/). With None in sys.modules an import
# fails, as on an install without those packages: the Float64MultiArray override and the missing-package error.
CONTROLLER_MODULES = [f"{package}{sub}" for package in ("interbotix_xs_msgs", "control_msgs")
                      for sub in ("", ".msg", ".action")]


def hide_controller_packages(monkeypatch) -> None:
    for name in CONTROLLER_MODULES:
        monkeypatch.setitem(sys.modules, name, None)


def wait_for(predicate, timeout: float, period: float = 0.02) -> bool:
    """Poll `predicate` until true or `timeout` seconds pass (the graph spins in its own thread)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(period)
    return bool(predicate())


def red_disc_image(width: int, height: int, radius: int = 25) -> np.ndarray:
    """A grey frame with a red disc in the centre: what the colour-target baseline servos to."""
    image = np.full((height, width, 3), 90, dtype=np.uint8)
    yy, xx = np.mgrid[:height, :width]
    image[(yy - height // 2) ** 2 + (xx - width // 2) ** 2 <= radius**2] = (220, 20, 20)
    return image


class ScriptedPolicy:
    """A policy whose behaviour the test switches at run time: "ok", "raise", "hang", "nan".

    EE robots get ee_delta chunks moving every arm's EE on a small circle (2 mm per step, gripper open);
    `joint=True` gives joint_pos chunks at the robot's home plus a small sine. Either way commands keep changing.
    """

    def __init__(self, robot, joint: bool = False, horizon: int = 10, rate_hz: float = 10.0):
        arms = tuple(a.name for a in robot.arms)
        self.gripper = all(a.gripper is not None for a in robot.arms)
        gripper = GripperConvention() if self.gripper else None
        if joint:
            space = ActionSpace("joint_pos", arms=arms, joints_per_arm=tuple(len(a.joints) for a in robot.arms),
                                gripper=gripper)
        else:
            space = ActionSpace("ee_delta", arms=arms, gripper=gripper)
        self.metadata = PolicyMetadata("scripted_test_policy", space, horizon, rate_hz)
        self.robot, self.joint, self.mode = robot, joint, "ok"
        self.calls = 0
        self._release = threading.Event()

    def infer(self, observation):
        self.calls += 1
        if self.mode == "raise":
            raise RuntimeError("scripted failure")
        if self.mode == "hang":
            self._release.wait(30.0)
        space, horizon = self.metadata.action_space, self.metadata.horizon
        actions = np.zeros((horizon, space.dim))
        if self.joint:
            row = []
            for arm in self.robot.arms:
                row += list(arm.home) + ([1.0] if self.gripper else [])
            actions[:] = row
            col = 0
            for arm in self.robot.arms:
                actions[:, col] += 0.05 * np.sin(observation.stamp + np.arange(horizon) * 0.1)
                col += len(arm.joints) + int(self.gripper)
        else:
            phase = observation.stamp + np.arange(horizon) / self.metadata.rate_hz
            width = 6 + int(self.gripper)
            for i in range(len(space.arms)):
                actions[:, i * width] = 0.002 * np.cos(2 * np.pi * 0.5 * phase)
                actions[:, i * width + 1] = 0.002 * np.sin(2 * np.pi * 0.5 * phase)
                if self.gripper:
                    actions[:, i * width + 6] = 1.0
        if self.mode == "nan":
            actions[horizon // 2, 0] = np.nan
        return ActionChunk(actions, space, 1.0 / self.metadata.rate_hz, observation.stamp)

    def release(self):
        self._release.set()


class RobotIO(Node):
    """Plays the robot side: publishes joint_states (per source, prefixes stripped) and camera frames, records
    every controller command (an action: every goal) as (receipt time, message) per controller name."""

    def __init__(self, context, robot, override: str = "", joint_rate: float = 100.0,
                 camera_rate: float = 15.0, follow: bool = True):
        super().__init__("test_robot_io", context=context)
        self.robot = robot
        self.q = robot.home.copy()
        self.publish_joints = True
        self.drop_joint: str | None = None  # a model joint name left out of its source's message
        self.image = red_disc_image(robot.cameras[0].width, robot.cameras[0].height) if robot.cameras else None
        self.image_encoding = "rgb8"
        self.sources = [(self.create_publisher(JointState, s.topic, qos.COMMAND), s, joints)
                        for s, joints in source_joints(robot)]
        self.cameras = [(self.create_publisher(Image, c.topic, qos.SENSOR), c) for c in robot.cameras]
        self.commands: dict[str, list[tuple[float, object]]] = {}
        self.follow = follow  # a perfectly tracking robot: the measured state is the last command
        self.adapters = make_adapters(robot, override)
        self.inputs = []
        for adapter in self.adapters:  # topics, and the gripper action's goals
            self.commands[adapter.spec.name] = []
            self.inputs.append(ControllerInput(self, adapter, qos.COMMAND, self.q[robot.indices(adapter.spec.joints)],
                                               self._on_command))
        self.markers = []  # MarkerArrays of predicted chunks
        self.create_subscription(MarkerArray, "/vla_ros/chunk_markers", self.markers.append, 10)
        self.diagnostics: dict[str, dict[str, str]] = {}  # latest /diagnostics values per status name
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.create_timer(1.0 / joint_rate, self._publish_joints)
        self.create_timer(1.0 / camera_rate, self._publish_images)
        self._spinner = SingleThreadedExecutor(context=context)
        self._spinner.add_node(self)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _on_command(self, source, msg, now):
        self.commands[source.adapter.spec.name].append((time.monotonic(), msg))
        if self.follow:
            self._follow(now)

    def _follow(self, now):
        """Where a robot that tracks its controllers perfectly is: a trajectory's desired state at `now`."""
        for source in self.inputs:
            targets = source.setpoints(now)
            self.q[self.robot.indices(list(targets))] = list(targets.values())

    def _on_diagnostics(self, msg):
        for status in msg.status:
            self.diagnostics[status.name.split(" ")[0]] = {kv.key: kv.value for kv in status.values} | {
                "_level": int.from_bytes(status.level, "little") if isinstance(status.level, bytes) else status.level,
                "_message": status.message}

    def _spin(self):
        try:
            self._spinner.spin()
        except Exception:  # context shut down under us at teardown
            pass

    def _publish_joints(self):
        if not self.publish_joints:
            return
        now = now_sec(self)
        if self.follow:
            self._follow(now)
        for publisher, source, joints in self.sources:
            names = [j for j in joints if j != self.drop_joint]
            q = self.q[self.robot.indices(names)]
            publisher.publish(fill_joint_state(JointState(), [n[len(source.prefix):] for n in names], q, now))

    def _publish_images(self):
        if self.image is None:
            return
        now = now_sec(self)
        for publisher, camera in self.cameras:
            msg = fill_image(Image(), "rgb8", self.image, now, camera.name)
            if self.image_encoding != "rgb8":
                msg.encoding = self.image_encoding
            publisher.publish(msg)

    def recent(self, name: str, since: float) -> list:
        return [m for t, m in list(self.commands[name]) if t >= since]

    def positions(self, name: str, since: float) -> np.ndarray:
        """(N, joints) joint values of a controller's commands received since `since` (monotonic)."""
        adapter = next(a for a in self.adapters if a.spec.name == name)
        return np.array([list(adapter.targets(m).values()) for m in self.recent(name, since)])

    def close(self):
        self._spinner.shutdown(timeout_sec=1.0)
        self.destroy_node()
