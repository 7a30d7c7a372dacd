"""diagnostic_msgs/DiagnosticArray from plain status dicts (one DiagnosticStatus per component)."""

from __future__ import annotations

from typing import Mapping

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

from vla_ros.ros.messages import sec_to_stamp

OK, WARN, ERROR, STALE = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR, DiagnosticStatus.STALE


def status(name: str, level: int, message: str, values: Mapping[str, object], hardware_id: str = "") -> DiagnosticStatus:
    msg = DiagnosticStatus(name=name, level=level, message=message, hardware_id=hardware_id)
    msg.values = [KeyValue(key=str(k), value=_text(v)) for k, v in values.items()]
    return msg


def array(statuses: list[DiagnosticStatus], t: float) -> DiagnosticArray:
    msg = DiagnosticArray(status=statuses)
    sec_to_stamp(t, msg.header.stamp)
    return msg


def values_of(msg: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in msg.values}


def _text(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


class DiagnosticsListener(Node):
    """The latest /diagnostics values of each component, by name without the robot ("vla_ros/safety_node"): how a
    process watches nodes running in other processes."""

    def __init__(self, **node_kwargs):
        super().__init__("vla_ros_diagnostics_listener", **node_kwargs)
        self.latest: dict[str, dict[str, str]] = {}
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            self.latest[status.name.split(" ")[0]] = values_of(status)

    def value(self, component: str, key: str) -> str | None:
        """What the component last reported for `key` (None before its first report)."""
        return self.latest.get(component, {}).get(key)

    def count(self, component: str, key: str) -> int:
        """An integer value the component last reported (0 before its first report)."""
        return int(self.value(component, key) or 0)
