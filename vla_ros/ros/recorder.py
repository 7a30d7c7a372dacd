"""demo_recorder: listens to a running graph from the outside, as a user's rosbag would, for the demo's summary.

Records what reached the robot's controller topics (through the same controller adapters the sim obeys), the
measured joint state, the primary camera and the policy's predicted chunk (markers), all on this node's clock, and
writes it to `recording` (core.demo_recording) when the node is destroyed. It reports on /diagnostics how many arm
commands it has heard, so the demo starts its run only once the recorder hears the safety node (matching is pairwise
in DDS: another participant seeing both endpoints proves nothing). It runs as its own process (`vla-ros demo`
starts it with ros/node_process.py): in the control graph's process its ~260 callbacks a second (joint states,
commands, markers, 640x480 frames) delayed the control nodes' targets past the safety node's hold timer.
A gripper action's goals are service requests that only its client and server see (as for a rosbag in Jazzy), so
the joints of action controllers (the franka gripper) have no commanded values here (NaN).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import Image
from visualization_msgs.msg import Marker, MarkerArray

from vla_ros.core.demo_recording import Recording, Snapshot
from vla_ros.ros import diagnostics, params, qos
from vla_ros.ros.base import JointStateInput, now_sec
from vla_ros.ros.controllers import ControllerInput, make_adapters
from vla_ros.ros.entry import run_single_node
from vla_ros.ros.messages import image_from_msg

CHUNK_NAMESPACE = "vla_ros/chunk/"
PARAMETERS = {
    "markers_topic": "/vla_ros/chunk_markers",
    "snapshot_period": 4.0,  # s between saved camera frames
    "recording": "",  # the .npz written at the end; empty: nothing written
    "diagnostics_period": 0.5,
}


class DemoRecorder(Node):
    def __init__(self, **node_kwargs):
        super().__init__("demo_recorder", **node_kwargs)
        params.declare(self, PARAMETERS)
        self.robot = robot = params.robot_from_params(self)
        adapters = make_adapters(robot, params.value(self, "controller_interface_override"))
        self.recording = params.value(self, "recording")
        self.states = JointStateInput(self, robot)
        self._lock = threading.Lock()
        self._q_command = np.full(robot.nq, np.nan)
        topics = [adapter for adapter in adapters if not adapter.is_action]
        for adapter in topics:
            self._q_command[adapter.index] = robot.home[adapter.index]
        self.commands: list[tuple[float, np.ndarray]] = []  # (receipt time, full commanded q)
        self.measured: list[tuple[float, np.ndarray]] = []
        self.snapshots: list[Snapshot] = []
        self._paths: dict[str, np.ndarray] = {}
        self._frame: tuple[float, np.ndarray] | None = None
        self.arm_command_times: list[float] = []  # receipt times of messages on the first controller topic
        self.inputs = [ControllerInput(self, adapter, qos.COMMAND, robot.home[adapter.index], self._on_command)
                       for adapter in topics]
        camera = robot.cameras[0]
        self.camera = camera
        self.create_subscription(Image, camera.topic, self._on_image, qos.SENSOR)
        self.create_subscription(MarkerArray, params.value(self, "markers_topic"), self._on_markers, 1)
        self.create_timer(1.0 / robot.control_rate_hz, self._sample_measured)
        self.create_timer(params.value(self, "snapshot_period"), self._snapshot)
        self.diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(params.value(self, "diagnostics_period"), self._publish_diagnostics)

    def _on_command(self, source: ControllerInput, msg, now: float) -> None:
        targets = source.setpoints(now)
        with self._lock:
            if source is self.inputs[0]:
                self.arm_command_times.append(now)
            self._q_command[self.robot.indices(list(targets))] = list(targets.values())
            self.commands.append((now, self._q_command.copy()))

    def _on_image(self, msg: Image) -> None:
        self._frame = (msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec, image_from_msg(msg, self.camera))

    def _on_markers(self, msg: MarkerArray) -> None:
        for marker in msg.markers:
            if marker.type == Marker.LINE_STRIP and marker.ns.startswith(CHUNK_NAMESPACE):
                self._paths[marker.ns[len(CHUNK_NAMESPACE):]] = np.array([[p.x, p.y, p.z] for p in marker.points])

    def _sample_measured(self) -> None:
        now = now_sec(self)
        if self.states.fresh(now, 1.0):
            self.measured.append((now, self.states.cache.positions.copy()))

    def _snapshot(self) -> None:
        if self._frame is not None:
            stamp, pixels = self._frame
            self.snapshots.append(Snapshot(stamp, pixels, dict(self._paths)))

    def _publish_diagnostics(self) -> None:
        values = {"arm_commands": len(self.arm_command_times), "commands": len(self.commands),
                  "measured": len(self.measured), "snapshots": len(self.snapshots)}
        status = diagnostics.status(f"vla_ros/demo_recorder ({self.robot.name})", diagnostics.OK, "recording", values)
        self.diagnostics.publish(diagnostics.array([status], now_sec(self)))

    def result(self) -> Recording:
        with self._lock:
            commands = list(self.commands)
        return Recording(*self._series(commands), *self._series(list(self.measured)),
                         np.array(self.arm_command_times), list(self.snapshots))

    def _series(self, rows: list[tuple[float, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """[(time, q)] -> (times (N,), qs (N, nq)), empty arrays of those shapes for no rows."""
        if not rows:
            return np.zeros(0), np.zeros((0, self.robot.nq))
        times, qs = zip(*rows)
        return np.array(times), np.array(qs)

    def destroy_node(self):
        if self.recording:
            self.result().save(Path(self.recording))
        return super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    return run_single_node(DemoRecorder, sys.argv if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
