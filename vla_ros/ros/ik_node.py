"""ik_node: EE commands per arm (/vla_ros/ee_command) -> joint targets (/vla_ros/joint_command), a thin shell over
core.ik.DifferentialIK.

One IK step per incoming command, from the measured joint state; the output keeps the command's stamp (the tick time)
so the safety node can refuse stale targets and latency is measurable end to end. While joint_states are stale the
node publishes nothing (the safety node holds) and re-anchors the IK targets on the measured pose when they return.
With `report` set, the node writes its counts there when it stops (core/node_report.py).
"""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import JointState

from vla_ros.core.errors import VlaRosError
from vla_ros.core.ik import DifferentialIK, IKConfig
from vla_ros.core.node_report import NodeReport
from vla_ros.ros import diagnostics, params, qos
from vla_ros.ros.base import JointStateInput, RateLimitedLog, now_sec
from vla_ros.ros.entry import run_single_node
from vla_ros.ros.messages import EE_COMMAND_TOPIC, JOINT_COMMAND_TOPIC, ee_commands_from_msg, fill_joint_state, stamp_to_sec

PARAMETERS = {
    "ee_command_topic": EE_COMMAND_TOPIC,
    "joint_command_topic": JOINT_COMMAND_TOPIC,
    "command_timeout": 0.1,  # s: refuse an EE command older than this (by its stamp)
    "reanchor_after": 0.25,  # s without commands -> re-anchor the IK targets on the measured pose
    "diagnostics_period": 1.0,
    "report": "",  # .npz written when the node stops: its counts (core/node_report.py); empty: none
    # IKConfig fields as ik.<field> (defaults from the core)
    **{f"ik.{f.name}": f.default for f in fields(IKConfig)},
}


class IKNode(Node):
    def __init__(self, *, robot=None, **node_kwargs):
        super().__init__("ik_node", **node_kwargs)
        params.declare(self, PARAMETERS)
        self.robot = robot or params.robot_from_params(self)
        config = IKConfig(**{f.name: params.value(self, f"ik.{f.name}") for f in fields(IKConfig)})
        self.ik = DifferentialIK(self.robot, config)
        self.dt = 1.0 / self.robot.control_rate_hz
        self.joint_timeout = params.value(self, "joint_state_timeout")
        self.command_timeout = params.value(self, "command_timeout")
        self.reanchor_after = params.value(self, "reanchor_after")
        self.arm_names = [a.name for a in self.robot.arms]
        self.states = JointStateInput(self, self.robot)
        self.ee_topic = params.value(self, "ee_command_topic")
        self.publisher = self.create_publisher(JointState, params.value(self, "joint_command_topic"), qos.COMMAND)
        self.create_subscription(JointState, self.ee_topic, self._on_command, qos.COMMAND)
        self.diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(params.value(self, "diagnostics_period"), self._publish_diagnostics)
        self._last_command = -float("inf")
        self.counts = {"steps": 0, "stale_commands": 0, "stale_joint_states": 0, "bad_commands": 0, "unreachable": 0,
                       "limited": 0, "near_singular": 0, "target_clamped": 0}
        self.last_error = ""
        self._log = RateLimitedLog(self)

    def _on_command(self, msg: JointState) -> None:
        now = now_sec(self)
        if not self.states.fresh(now, self.joint_timeout):
            self.counts["stale_joint_states"] += 1
            self.last_error = self.states.stale_reason(now, self.joint_timeout)
            self._log("warning", "stale state", f"holding: {self.last_error}")
            self._last_command = -float("inf")  # re-anchor when the state comes back
            return
        stamp = stamp_to_sec(msg.header.stamp)
        if now - stamp > self.command_timeout:
            self.counts["stale_commands"] += 1
            self.last_error = f"{self.ee_topic}: command stamped {stamp:.3f} is {now - stamp:.3f} s old (max {self.command_timeout:g})"
            self._log("warning", "stale command", self.last_error)
            return
        try:
            commands = ee_commands_from_msg(msg, self.arm_names, self.ee_topic)
        except (VlaRosError, ValueError) as exc:
            self.counts["bad_commands"] += 1
            self.last_error = str(exc)
            self._log("error", "bad command", self.last_error)
            return
        q = self.states.cache.positions
        if now - self._last_command > self.reanchor_after:
            self.ik.reset(q)
        self._last_command = now
        try:
            result = self.ik.step(q, commands, self.dt)
        except ValueError as exc:  # e.g. a gripper command for an arm without one: refuse, never crash the node
            self.counts["bad_commands"] += 1
            self.last_error = f"{self.ee_topic}: {exc}"
            self._log("error", "refused command", self.last_error)
            return
        self.counts["steps"] += 1
        for status in result.arms.values():
            for flag in ("unreachable", "limited", "near_singular", "target_clamped"):
                self.counts[flag] += bool(getattr(status, flag))
        self.publisher.publish(fill_joint_state(JointState(), self.robot.joint_names, result.q_target, stamp))

    def summary(self) -> dict:
        return dict(self.counts)

    def destroy_node(self):
        if report := params.value(self, "report"):
            NodeReport(self.summary()).save(Path(report))
        return super().destroy_node()

    def _publish_diagnostics(self) -> None:
        now = now_sec(self)
        level = diagnostics.OK if not self.last_error else diagnostics.WARN
        values = {**self.counts, "joint_states_fresh": self.states.fresh(now, self.joint_timeout),
                  "joint_state_errors": self.states.errors, "last_error": self.last_error}
        status = diagnostics.status(f"vla_ros/ik_node ({self.robot.name})", level, self.last_error or "ok", values)
        self.diagnostics.publish(diagnostics.array([status], now))


def main(argv: list[str] | None = None) -> int:
    return run_single_node(IKNode, sys.argv if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
