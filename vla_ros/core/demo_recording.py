"""What the demo's recorder heard, as one file: the recorder is its own process (as a rosbag recorder is), so it hands
its recording to the demo through `Recording.save` / `Recording.load` (a plain .npz, no pickle)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vla_ros.core.npz_file import save_atomic


@dataclass
class Snapshot:
    """A camera frame and the policy's predicted EE path per arm (chunk markers) at the frame's stamp."""

    stamp: float
    pixels: np.ndarray
    paths: dict[str, np.ndarray]


@dataclass
class Recording:
    """command_times (N,) / command_q (N, nq): every controller-topic message, the full commanded q after it (NaN for
    joints of action controllers, whose goals only their client and server see); measured_times / measured_q: the
    measured joint state once per control period; arm_command_times: when each message on the first controller topic
    (the arm's) arrived, for the command rate."""

    command_times: np.ndarray
    command_q: np.ndarray
    measured_times: np.ndarray
    measured_q: np.ndarray
    arm_command_times: np.ndarray
    snapshots: list[Snapshot] = field(default_factory=list)

    def save(self, path: Path) -> None:
        arrays = {"command_times": self.command_times, "command_q": self.command_q,
                  "measured_times": self.measured_times, "measured_q": self.measured_q,
                  "arm_command_times": self.arm_command_times}
        for k, snapshot in enumerate(self.snapshots):
            arrays[f"snapshot{k}.stamp"] = np.array(snapshot.stamp)
            arrays[f"snapshot{k}.pixels"] = snapshot.pixels
            arrays.update({f"snapshot{k}.path.{arm}": points for arm, points in snapshot.paths.items()})
        save_atomic(path, arrays)

    @classmethod
    def load(cls, path: Path) -> Recording:
        with np.load(path, allow_pickle=False) as data:
            snapshots = []
            while f"snapshot{len(snapshots)}.stamp" in data:
                prefix = f"snapshot{len(snapshots)}."
                paths = {key[len(prefix) + 5:]: data[key] for key in data if key.startswith(prefix + "path.")}
                snapshots.append(Snapshot(float(data[prefix + "stamp"]), data[prefix + "pixels"], paths))
            return cls(data["command_times"], data["command_q"], data["measured_times"], data["measured_q"],
                       data["arm_command_times"], snapshots)
