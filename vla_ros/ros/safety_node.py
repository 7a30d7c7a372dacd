"""safety_node: the last word before hardware, a thin shell over core.safety.SafetyFilter and the controller adapters.

Joint targets (/vla_ros/joint_command, by name, stamped with the tick time) go through the filter at once and the
resulting command is published to the robot's real controller interface(s) (vla_ros.ros.controllers): a trajectory
controller gets the filter's own trajectory (its last commands and the stop after the new one, see
core.safety.controller_trajectory), position interfaces the commanded positions. When targets stop arriving, a timer
keeps calling the filter once the controller delay has passed since the last call, so the arm holds toward the last
target and then comes to a graded stop (the filter's own watchdogs on joint-state and target age). Services
(std_srvs/Trigger):
  ~/estop   latch the e-stop: the filter brakes to rest at the limits and refuses targets
  ~/reset   clear it and re-anchor on the measured state (refused while joint states are stale or the arm moves)
Mode changes (not_ready / tracking / stopping / estop) are logged once each with their reason, rate-limited; every
intervention is counted and published on /diagnostics with the filter state. With `report` set, the node writes its
summary, the commands it sent and its hold ticks' times (the last `sent_history` s) there when it stops
(core/node_report.py), for an independent re-check by whoever started it (`vla-ros demo`).
"""

from __future__ import annotations

import sys
from collections import Counter, deque
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger

from vla_ros.core.errors import ConfigError
from vla_ros.core.node_report import NodeReport
from vla_ros.core.safety import SafetyConfig, SafetyFilter
from vla_ros.core.safety.state_rate import StateRateCheck
from vla_ros.ros import diagnostics, params, qos
from vla_ros.ros.base import JointStateInput, RateLimitedLog, now_sec
from vla_ros.ros.controllers import ControllerPort, make_adapters
from vla_ros.ros.entry import run_single_node
from vla_ros.ros.messages import JOINT_COMMAND_TOPIC, stamp_to_sec

PARAMETERS = {
    "joint_command_topic": JOINT_COMMAND_TOPIC,
    "safety_config": "",  # a safety YAML (config/safety.yaml schema); empty = config/safety.yaml defaults
    "command_timeout": 0.1,  # s: a target stamped longer ago than this is refused (it was meant for an older tick)
    "trajectory_start": "stamp",  # joint_trajectory header.stamp: "stamp" (the command's time) or "receipt" (zero)
    "gripper_max_effort": 20.0,  # N, gripper_command_action goals
    "diagnostics_period": 1.0,
    "transition_log_period": 2.0,  # s: the same mode change is logged at most once per this period (others counted)
    "startup_grace": 5.0,  # s after start: until the first anchor, "not anchored" is logged as info, not an error
    "report": "",  # .npz written when the node stops: summary and sent commands (core/node_report.py); empty: none
    "sent_history": 60.0,  # s of sent commands kept for the report and re-checks
}
_ERROR_LIMITS = ("input", "estop", "state_stale", "command_stale", "time", "not_ready", "reset")


class SafetyNode(Node):
    def __init__(self, *, robot=None, **node_kwargs):
        super().__init__("safety_node", **node_kwargs)
        params.declare(self, PARAMETERS)
        self.robot = robot or params.robot_from_params(self)
        path = params.value(self, "safety_config")
        adapters = make_adapters(self.robot, params.value(self, "controller_interface_override"))
        self.filter = SafetyFilter(self.robot, SafetyConfig.from_yaml(path, self.robot) if path else None,
                                   keep_trajectory=self.robot.trajectory_controlled)
        self.command_timeout = params.value(self, "command_timeout")
        start = params.value(self, "trajectory_start")
        if start not in ("stamp", "receipt"):
            raise ConfigError("safety_node", "trajectory_start", f"expected stamp or receipt, got {start!r}")
        self.ports = [ControllerPort(self, a, qos.COMMAND, params.value(self, "gripper_max_effort"),
                                     start_on_receipt=start == "receipt") for a in adapters]
        self.state_rate = StateRateCheck(self.filter.config.joint_state_hold_after)
        self.states = JointStateInput(self, self.robot, on_update=self._on_joint_state)
        self.topic = params.value(self, "joint_command_topic")
        self.create_subscription(JointState, self.topic, self._on_target, qos.COMMAND)
        self.create_service(Trigger, "~/estop", self._on_estop)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._last_call = -float("inf")  # node time of the last filter call
        self._sent_timeline = None  # timeline time of the last command published (a repeat is not re-sent)
        self.state = "not_ready"  # SafeCommand.state of the last command
        self.mode = "not_ready"  # the filter's mode after the last call
        # hold_ticks: timer calls once targets had been arriving (late targets); idle_ticks: timer calls before the
        # first target (anchoring and holding while the policy starts up)
        self.counts = {"commands": 0, "targets": 0, "stale_targets": 0, "hold_ticks": 0, "idle_ticks": 0}
        self.states_seen: Counter[str] = Counter()  # commands by SafeCommand.state
        self.transitions: Counter[str] = Counter()  # mode changes, "from -> to"
        self._transition_log = RateLimitedLog(self, params.value(self, "transition_log_period"))
        # The last sent_history s of sent commands (SafeCommand, with stamps and segments) for independent re-checks.
        self.sent: deque = deque(maxlen=int(params.value(self, "sent_history") * self.robot.control_rate_hz))
        self.hold_times: deque = deque(maxlen=self.sent.maxlen)  # node time of each hold tick, for the report
        self.last_error = ""
        self._log = RateLimitedLog(self)
        self._grace_until = now_sec(self) + params.value(self, "startup_grace")
        # Restarted by every call, so it fires only once targets are late by the controller delay: until then the
        # controller still executes the last command's trajectory, and a target with ordinary jitter (or a loaded
        # machine's) is never preceded by a hold command. While holding, it ticks the filter at that period (its
        # braking is exact for any call spacing).
        self._watchdog_timer = self.create_timer(self.filter.controller_delay, self._watchdog)
        self.create_timer(params.value(self, "diagnostics_period"), self._publish_diagnostics)

    def _on_joint_state(self, names, positions, velocities, now: float, topic: str) -> None:
        for problem in self.filter.update_joint_state(names, positions, now, velocities):
            self._error(problem.detail, "joint state")
        if warning := self.state_rate.observe(topic, now):
            self.get_logger().warning(warning)

    def _on_target(self, msg: JointState) -> None:
        now = now_sec(self)
        stamp = stamp_to_sec(msg.header.stamp)
        if now - stamp > self.command_timeout:
            self.counts["stale_targets"] += 1
            self._error(f"{self.topic}: target stamped {stamp:.3f} is {now - stamp:.3f} s old "
                        f"(max {self.command_timeout:g} s); refused", "stale target")
            return
        self.counts["targets"] += 1
        self._send(self.filter.filter(msg.name, msg.position, now), now)

    def _watchdog(self) -> None:
        now = now_sec(self)
        if now - self._last_call >= self.filter.controller_delay * 0.999:  # targets stopped: hold, then stop the arm
            if self.counts["targets"]:
                self.counts["hold_ticks"] += 1
                self.hold_times.append(now)
            else:
                self.counts["idle_ticks"] += 1
            self._send(self.filter.tick(now), now)

    def _send(self, command, now: float) -> None:
        self._last_call = now
        self._watchdog_timer.reset()
        for intervention in command.interventions:
            if intervention.limit == "not_ready" and self.mode == "not_ready" and now < self._grace_until:
                # the drivers' joint states are still coming up: normal at start, an error only if it lasts
                self._log("info", "not_ready", intervention.detail)
            elif intervention.limit in _ERROR_LIMITS:
                self._error(intervention.detail, intervention.limit)
        self.states_seen[command.state] += 1
        self.state = command.state
        if self.filter.mode != self.mode:
            self._log_transition(self.mode, self.filter.mode, command)
            self.mode = self.filter.mode
        if command.sendable and command.timeline != self._sent_timeline:
            trajectory = self.filter.controller_trajectory() if self.filter.keep_trajectory else None
            for port in self.ports:
                port.send(command.positions, trajectory)
            self._sent_timeline = command.timeline
            self.counts["commands"] += 1
            self.sent.append(command)

    def _log_transition(self, before: str, after: str, command) -> None:
        """Once per mode change with its reason; the same change again within transition_log_period is counted and
        reported with the next one logged."""
        key = f"{before} -> {after}"
        self.transitions[key] += 1
        reasons = "; ".join(dict.fromkeys(i.detail for i in command.interventions if i.limit in _ERROR_LIMITS))
        self._transition_log("warning" if after in ("stopping", "estop") else "info", key,
                             f"mode {key}" + (f": {reasons}" if reasons else ""))

    def _error(self, message: str, key: str = "error") -> None:
        self.last_error = message
        self._log("error", key, message)

    def _on_estop(self, request, response):
        self.filter.estop("~/estop service")
        now = now_sec(self)
        self._send(self.filter.tick(now), now)  # start braking now, not at the next timer
        self._publish_diagnostics()
        response.success, response.message = True, "e-stop latched; call ~/reset to resume"
        return response

    def _on_reset(self, request, response):
        result = self.filter.reset(now_sec(self))
        if result:
            self.get_logger().info("reset: re-anchoring on the measured state, accepting targets")
        response.success, response.message = result.accepted, result.reason
        return response

    def summary(self) -> dict:
        return {"estop": self.filter.estopped, "state": self.state, **self.counts,
                "commands_by_state": dict(self.states_seen), "mode_changes": dict(self.transitions),
                "interventions": self.filter.intervention_counts()}

    def destroy_node(self):
        if report := params.value(self, "report"):
            report_data = NodeReport(self.summary(), list(self.sent), self.filter.config, np.array(self.hold_times))
            report_data.save(Path(report))
        return super().destroy_node()

    def _publish_diagnostics(self) -> None:
        now = now_sec(self)
        estopped = self.filter.estopped
        level = diagnostics.ERROR if estopped else diagnostics.OK if self.state in ("ok", "hold") else diagnostics.WARN
        message = f"E-STOP latched ({self.filter.estop_reason})" if estopped else self.state
        values = {"state": self.state, "mode": self.mode, "estop": estopped, **self.counts,
                  **{f"intervention.{k}": v for k, v in self.filter.intervention_counts().items()},
                  "joint_state_errors": self.states.errors, "last_error": self.last_error,
                  **{f"joint_state_period_ms.{topic}": round(period * 1e3, 1)
                     for topic, period in self.state_rate.periods.items()},
                  "controllers": ", ".join(f"{p.adapter.spec.name}:{p.adapter.interface}@{p.adapter.topic}"
                                           for p in self.ports)}
        status = diagnostics.status(f"vla_ros/safety_node ({self.robot.name})", level, message, values)
        self.diagnostics.publish(diagnostics.array([status], now))


def main(argv: list[str] | None = None) -> int:
    return run_single_node(SafetyNode, sys.argv if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
