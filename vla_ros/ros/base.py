"""What every node of the graph shares: ROS time in seconds, joint_states inputs, throttled one-line errors."""

from __future__ import annotations

import gc
import time

from rclpy.node import Node

from vla_ros.core.errors import VlaRosError
from vla_ros.core.robot import RobotModel
from vla_ros.ros import qos
from vla_ros.ros.messages import JointStateCache


def now_sec(node: Node) -> float:
    """The node's ROS time (sim time when use_sim_time is set), seconds."""
    return node.get_clock().now().nanoseconds * 1e-9


def freeze_startup_objects() -> None:
    """Keep everything built so far (modules, robot models, policies, nodes) out of the cyclic garbage collector's
    scans. A full collection of the graph's process otherwise walks all of them with every control thread stopped:
    29 ms for the one-process graph, 42-81 ms in the demo (measured), longer than a control period's slack, so each
    one delays a target past the safety node's hold timer. This is gc.freeze's documented use; `thaw_startup_objects`
    undoes it at shutdown so they are released as usual (nanobind reports instances still alive at exit)."""
    gc.collect()
    gc.freeze()


def thaw_startup_objects() -> None:
    gc.unfreeze()


class RateLimitedLog:
    """Log lines at most once per `period` seconds per call site (`key`), the ones in between counted and reported
    with the next line. Checked before rclpy's logger, whose own `throttle_duration_sec` inspects the call stack on
    every call (measured: 6 % of the one-process demo graph's CPU when a node logged on every tick)."""

    def __init__(self, node: Node, period: float = 2.0):
        self._logger, self._period = node.get_logger(), period
        self._last: dict[str, tuple[float, int]] = {}  # key -> (monotonic time of the last line, suppressed since)

    def __call__(self, level: str, key: str, message: str) -> None:
        now = time.monotonic()
        last, suppressed = self._last.get(key, (-float("inf"), 0))
        if now - last < self._period:
            self._last[key] = (last, suppressed + 1)
            return
        self._last[key] = (now, 0)
        if suppressed:
            message += f" ({suppressed} more in the last {now - last:.1f} s)"
        # rclpy fixes one severity per call site (it raises on a change), hence one call per level
        if level == "error":
            self._logger.error(message)
        elif level == "warning":
            self._logger.warning(message)
        else:
            self._logger.info(message)


class JointStateInput:
    """Subscribes to every joint_states source of the robot and keeps a JointStateCache of it.

    A bad message is refused whole and reported once per `error_period` per topic (never a crash); the joints it
    should have refreshed go stale, so the nodes hold. `errors` counts refused messages.
    """

    def __init__(self, node: Node, robot: RobotModel, error_period: float = 2.0, on_update=None):
        from sensor_msgs.msg import JointState

        self.node, self.cache, self.errors = node, JointStateCache(robot), 0
        self._log = RateLimitedLog(node, error_period)
        # called (model joint names, positions, velocities or None when the driver sent none, receipt time, topic) for
        # each accepted message
        self._on_update = on_update
        self.last_error: str | None = None
        self.subscriptions = [
            node.create_subscription(JointState, source.topic, lambda msg, i=i: self._on_message(i, msg), qos.SENSOR)
            for i, (source, _) in enumerate(self.cache.sources)
        ]

    def _on_message(self, index: int, msg) -> None:
        now = now_sec(self.node)
        try:
            self.cache.update(index, msg, now)
        except VlaRosError as exc:
            self.errors += 1
            self.last_error = str(exc)
            self._log("error", f"joint_states {index}", str(exc))
            return
        if self._on_update is not None:
            source, joints = self.cache.sources[index]
            rows = self.cache.robot.indices(joints)
            velocities = self.cache.velocities[rows] if len(msg.velocity) else None
            self._on_update(joints, self.cache.positions[rows], velocities, now, source.topic)

    def fresh(self, now: float, timeout: float) -> bool:
        return self.cache.fresh(now, timeout)

    def stale_reason(self, now: float, timeout: float) -> str:
        joint = self.cache.stale_joint(now, timeout)
        if joint is None:
            return ""
        age = now - self.cache.received[self.cache.robot.joint_names.index(joint)]
        source = next((s.topic for s, owned in self.cache.sources if joint in owned), "?")
        what = "never received" if age == float("inf") else f"last update {age:.3f} s ago"
        return f"{source}: joint {joint!r} {what} (timeout {timeout:g} s)"
