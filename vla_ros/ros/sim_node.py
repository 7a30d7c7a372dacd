"""sim_node: a simulated robot that looks like the real drivers from the outside, a thin shell over core.sim.

- obeys the robot's controller topics (and serves its gripper action) with their configured (or overridden) message
  types, through the same controller adapters the safety node commands with, and feeds the set-points to a
  JointTracker (a joint trajectory is followed as a JointTrajectoryController does: sampled at every servo update);
- publishes every joint_states source of the robot config with the driver's names (source prefix stripped, e.g.
  ALOHA's /follower_left/joint_states carries `waist`, not `follower_left/waist`);
- renders every configured camera with core.sim.SimScene (MuJoCo) and publishes rgb8 frames stamped with the
  render time.
All times are the node's clock (sim time works).
"""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState

from vla_ros.core.errors import VlaRosError
from vla_ros.core.sim.scene import SimScene
from vla_ros.core.sim.tracker import JointTracker, TrackerConfig
from vla_ros.ros import params, qos
from vla_ros.ros.base import RateLimitedLog, now_sec
from vla_ros.ros.controllers import ControllerInput, make_adapters
from vla_ros.ros.entry import run_single_node
from vla_ros.ros.messages import fill_image, fill_joint_state, source_joints

PARAMETERS = {
    "joint_state_rate_hz": 100.0,
    "camera_rate_hz": 10.0,
    "render_niceness": 10,  # the camera thread runs this much nicer (lower priority) than the node, see _render_loop
    "target_xyz": [0.0],  # the red target's centre in the base frame; [0.0] (no triple) = sampled from `seed`
    "seed": 0,
    "time_constant": TrackerConfig.time_constant,
    "delay": TrackerConfig.delay,
}


class SimNode(Node):
    def __init__(self, *, robot=None, **node_kwargs):
        super().__init__("sim_node", **node_kwargs)
        params.declare(self, PARAMETERS)
        self.robot = robot or params.robot_from_params(self)
        self.tracker = JointTracker(self.robot, TrackerConfig(time_constant=params.value(self, "time_constant"),
                                                              delay=params.value(self, "delay")))
        target = list(params.value(self, "target_xyz"))
        self.scene = SimScene(self.robot, target_xyz=target if len(target) == 3 else None, seed=params.value(self, "seed"))
        self.q = self.robot.home.copy()
        self.command_errors = 0
        self._log = RateLimitedLog(self)

        self.adapters = make_adapters(self.robot, params.value(self, "controller_interface_override"))
        self.inputs = [ControllerInput(self, adapter, qos.COMMAND, self.q[self.robot.indices(adapter.spec.joints)],
                                       self._on_command) for adapter in self.adapters]
        # Real drivers publish reliable joint states; a best-effort subscriber matches either.
        self.joint_publishers = [
            (self.create_publisher(JointState, source.topic, qos.COMMAND), source, joints, self.robot.indices(joints))
            for source, joints in source_joints(self.robot)
        ]
        self.camera_publishers = [(self.create_publisher(Image, c.topic, qos.SENSOR), c) for c in self.robot.cameras]
        self.create_timer(1.0 / params.value(self, "joint_state_rate_hz"), self._publish_joint_states)
        # Rendering (25 ms per 640x480 frame, 4 cameras on ALOHA) runs in its own thread, the only user of the
        # MuJoCo scene, so it never delays joint_states; the executor keeps commands and the tracker serialised.
        self._camera_period = 1.0 / params.value(self, "camera_rate_hz")
        self._stop = threading.Event()
        # The first frame compiles llvmpipe's shaders: 120 ms quiet, holding the GIL for up to 40 ms at a stretch
        # (measured), longer with the cores busy, when the demo's safety node saw 0.18 s old joint states at start-up.
        # So joint states start once every camera has rendered, as a driver's come once it is up.
        self._cameras_ready = threading.Event()
        self._renderer = threading.Thread(target=self._render_loop, name="sim-render", daemon=True)
        self._renderer.start()

    @property
    def commands_received(self) -> int:
        return sum(i.messages for i in self.inputs)

    def _on_command(self, source: ControllerInput, msg, now: float) -> bool:
        """Track the source's set-points; False (refused, logged) for ones the simulated driver rejects."""
        targets = source.setpoints(now)
        try:
            self.tracker.command(list(targets.values()), now, self.robot.indices(list(targets)))
            return True
        except VlaRosError as exc:
            self.command_errors += 1
            self._log("error", "command", f"command refused: {exc}")
            return False

    def _publish_joint_states(self) -> None:
        if not self._cameras_ready.is_set():
            return
        now = now_sec(self)
        for source in self.inputs:  # a trajectory's set-point moves between messages
            if source.follower is not None and source.messages:
                self._on_command(source, None, now)
        q, qd = self.tracker.step(now)
        self.q = q
        for publisher, source, joints, index in self.joint_publishers:
            names = [j[len(source.prefix):] for j in joints]
            publisher.publish(fill_joint_state(JointState(), names, q[index], now, qd[index]))

    def _render_loop(self) -> None:
        # Real cameras are hardware; simulated ones render on the CPU the control nodes need (~25 ms per 640x480
        # frame with llvmpipe). So this thread and the GL threads it starts run below the node's priority (Linux:
        # per thread), and rendering never outranks the control path. (Not measured on its own: the demo's hold
        # ticks did not change measurably with it.)
        os.nice(max(0, params.value(self, "render_niceness")))
        next_frame = time.monotonic()
        while not self._stop.wait(max(0.0, next_frame - time.monotonic())):
            next_frame += self._camera_period
            self.scene.set_joint_positions(self.q)
            try:
                for publisher, camera in self.camera_publishers:
                    pixels = self.scene.render(camera.name)
                    publisher.publish(fill_image(Image(), "rgb8", pixels, now_sec(self), f"{camera.name}_optical_frame"))
                self._cameras_ready.set()
            except Exception:
                if self.context.ok():
                    raise
                break  # Ctrl-C / SIGTERM shut the context down before destroy_node stopped this thread
        self.scene.close()  # GL contexts are released by the thread that made them

    def distance_to_target(self) -> float:
        return self.scene.ee_distance_to_target(np.asarray(self.q))

    def destroy_node(self):
        self._stop.set()
        self._renderer.join(timeout=5.0)
        return super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    return run_single_node(SimNode, sys.argv if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
