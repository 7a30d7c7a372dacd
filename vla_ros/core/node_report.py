"""What a control node run as its own process reports when it stops (its `report` parameter names the file): its
summary, the dict `vla-ros bringup --summary` shows for it, and for safety_node every command it sent with the
safety settings it used, so the process that started it re-checks them with the independent checker
(core/safety/independent_check.py) instead of trusting the node's own account, and when it held (hold ticks), so
holds at start-up and during a run are told apart."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vla_ros.core.npz_file import save_atomic
from vla_ros.core.safety import SafeCommand, SafetyConfig

# SafeCommand fields stored per command; interventions are not (the checker judges the command, not its reasons)
_COMMAND_ARRAYS = ("stamp", "positions", "velocities", "accelerations", "state", "segment", "timeline")


@dataclass
class NodeReport:
    summary: dict
    sent: list[SafeCommand] = field(default_factory=list)
    safety_config: SafetyConfig | None = None
    hold_times: np.ndarray = field(default_factory=lambda: np.zeros(0))  # node clock, s

    def save(self, path: Path) -> None:
        arrays = {"summary": np.array(json.dumps(self.summary, default=str)),
                  "hold_times": np.asarray(self.hold_times, dtype=float)}
        if self.safety_config is not None:
            arrays["safety_config"] = np.array(json.dumps(asdict(self.safety_config)))
        if self.sent:
            arrays.update({f"sent.{name}": np.array([getattr(c, name) for c in self.sent])
                           for name in _COMMAND_ARRAYS})
        save_atomic(path, arrays)

    @classmethod
    def load(cls, path: Path) -> NodeReport:
        with np.load(path, allow_pickle=False) as data:
            config = SafetyConfig(**json.loads(str(data["safety_config"]))) if "safety_config" in data else None
            sent = []
            if "sent.stamp" in data:
                columns = {name: data[f"sent.{name}"] for name in _COMMAND_ARRAYS}
                sent = [SafeCommand(stamp=float(columns["stamp"][k]), positions=columns["positions"][k],
                                    velocities=columns["velocities"][k], accelerations=columns["accelerations"][k],
                                    state=str(columns["state"][k]), interventions=(),
                                    segment=int(columns["segment"][k]), timeline=float(columns["timeline"][k]))
                        for k in range(len(columns["stamp"]))]
            return cls(json.loads(str(data["summary"])), sent, config, data["hold_times"])
