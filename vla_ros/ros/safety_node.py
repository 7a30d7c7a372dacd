"""safety_node: the last word before hardware, a thin shell over core.safety.SafetyFilter and the controller adapters.

Joint targets (/vla_ros/joint_command, by name, stamped with the tick time) go through the filter at once and the
resulting command is published to the robot's real controller interface(s) (vla_ros.ros.controllers). When targets
stop arriving, a timer (every 1.5 control periods) keeps calling the filter, which holds and then brings the arm to
a graded stop (its own watchdogs on joint-state and target age). Services (std_srvs/Trigger):
  ~/estop   latch the e-stop: the filter brakes to rest at the limits and refuses targets
  ~/reset   clear it and re-anchor on the measured state (refused while joint states are stale or the arm moves)
Every intervention is counted and published on /diagnostics with the filter state.
"""

from __future__ import annotations

import sys
from collections import deque

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger

from vla_ros.core.safety import ResetRefused, SafetyConfig, SafetyFilter
from vla_ros.ros import diagnostics, params, qos
from vla_ros.ros.base import JointStateInput, now_sec
from vla_ros.ros.controllers import ControllerPort, make_adapters
from vla_ros.ros.messages import JOINT_COMMAND_TOPIC, stamp_to_sec

PARAMETERS = {
    "joint_command_topic": JOINT_COMMAND_TOPIC,
    "safety_config": "",  # a safety YAML (config/safety.yaml schema); empty = config/safety.yaml defaults
    "command_timeout": 0.1,  # s: a target stamped longer ago than this is refused (it was meant for an older tick)
    "trajectory_horizon": 0.0,  # s: JTC time_from_start of each point; 0 = one control period
    "gripper_max_effort": 20.0,  # N, gripper_command_action goals
    "diagnostics_period": 1.0,
}


class SafetyNode(Node):
    def __init__(self, *, robot=None, msg_types=None, **node_kwargs):
        super().__init__("safety_node", **node_kwargs)
        params.declare(self, PARAMETERS)
        self.robot = robot or params.robot_from_params(self)
        path = params.value(self, "safety_config")
        self.filter = SafetyFilter(self.robot, SafetyConfig.from_yaml(path, self.robot) if path else None)
        self.dt = 1.0 / self.robot.control_rate_hz
        self.command_timeout = params.value(self, "command_timeout")
        horizon = params.value(self, "trajectory_horizon") or self.dt
        adapters = make_adapters(self.robot, params.value(self, "controller_interface_override"), msg_types)
        self.ports = [ControllerPort(self, a, qos.COMMAND, horizon, params.value(self, "gripper_max_effort"))
                      for a in adapters]
        self.states = JointStateInput(self, self.robot, on_update=self._on_joint_state)
        self.topic = params.value(self, "joint_command_topic")
        self.create_subscription(JointState, self.topic, self._on_target, qos.COMMAND)
        self.create_service(Trigger, "~/estop", self._on_estop)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._last_call = -float("inf")  # node time of the last filter call
        self.state = "not_ready"  # SafeCommand.state of the last command
        self.counts = {"commands": 0, "targets": 0, "stale_targets": 0}
        # The last minute of sent commands (SafeCommand, with stamps and segments) for independent re-checks.
        self.sent: deque = deque(maxlen=int(60 * self.robot.control_rate_hz))
        self.last_error = ""
        # Restarted by every target, so it fires only once targets stop (no wake-ups competing with the target path);
        # 1.5 periods so a target with ordinary jitter is never preceded by a spurious hold command. While holding,
        # the filter is ticked every 1.5 periods (its braking is exact for any call spacing).
        self._watchdog_timer = self.create_timer(1.5 * self.dt, self._watchdog)
        self.create_timer(params.value(self, "diagnostics_period"), self._publish_diagnostics)

    def _on_joint_state(self, names, positions, now: float) -> None:
        for problem in self.filter.update_joint_state(names, positions, now):
            self._error(problem.detail)

    def _on_target(self, msg: JointState) -> None:
        now = now_sec(self)
        stamp = stamp_to_sec(msg.header.stamp)
        if now - stamp > self.command_timeout:
            self.counts["stale_targets"] += 1
            self._error(f"{self.topic}: target stamped {stamp:.3f} is {now - stamp:.3f} s old "
                        f"(max {self.command_timeout:g} s); refused")
            return
        self.counts["targets"] += 1
        self._send(self.filter.filter(msg.name, msg.position, now), now)
        self._watchdog_timer.reset()

    def _watchdog(self) -> None:
        now = now_sec(self)
        if now - self._last_call > self.dt:  # targets stopped: the filter holds, then stops the arm
            self._send(self.filter.tick(now), now)

    def _send(self, command, now: float) -> None:
        self._last_call = now
        for intervention in command.interventions:
            if intervention.limit in ("input", "estop", "state_stale", "command_stale", "time"):
                self._error(intervention.detail)
        if command.state != self.state:
            # rclpy fixes one severity per call site, hence two calls
            if command.state in ("stopping", "estop"):
                self.get_logger().warning(f"state {self.state} -> {command.state}")
            else:
                self.get_logger().info(f"state {self.state} -> {command.state}")
            self.state = command.state
        if command.sendable:
            for port in self.ports:
                port.send(command.positions)
            self.counts["commands"] += 1
            self.sent.append(command)

    def _error(self, message: str) -> None:
        self.last_error = message
        self.get_logger().error(message, throttle_duration_sec=2.0)

    def _on_estop(self, request, response):
        self.filter.estop("~/estop service")
        now = now_sec(self)
        self._send(self.filter.tick(now), now)  # start braking now, not at the next timer
        self.get_logger().error("E-STOP latched: braking to rest; targets refused until ~/reset")
        self._publish_diagnostics()
        response.success, response.message = True, "e-stop latched; call ~/reset to resume"
        return response

    def _on_reset(self, request, response):
        try:
            self.filter.reset(now_sec(self))
        except ResetRefused as exc:
            response.success, response.message = False, str(exc)
            return response
        self.get_logger().info("reset: re-anchored on the measured state, accepting targets")
        response.success, response.message = True, "reset; accepting targets"
        return response

    def _publish_diagnostics(self) -> None:
        now = now_sec(self)
        estopped = self.filter.estopped
        level = diagnostics.ERROR if estopped else diagnostics.OK if self.state == "ok" else diagnostics.WARN
        message = f"E-STOP latched ({self.filter.estop_reason})" if estopped else self.state
        values = {"state": self.state, "estop": estopped, **self.counts,
                  **{f"intervention.{k}": v for k, v in self.filter.intervention_counts().items()},
                  "joint_state_errors": self.states.errors, "last_error": self.last_error,
                  "controllers": ", ".join(f"{p.adapter.spec.name}:{p.adapter.interface}@{p.adapter.topic}"
                                           for p in self.ports)}
        status = diagnostics.status(f"vla_ros/safety_node ({self.robot.name})", level, message, values)
        self.diagnostics.publish(diagnostics.array([status], now))


def main(argv: list[str] | None = None) -> int:
    from vla_ros.ros.bringup import run_single_node

    return run_single_node(SafetyNode, sys.argv if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
