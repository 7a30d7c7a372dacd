"""Shared helpers for the policy backend tests: observations, a robot with a wrist camera, a loopback openpi server."""

from __future__ import annotations

import threading
import traceback
from pathlib import Path
from typing import Callable

import numpy as np
import websockets.exceptions
import websockets.sync.server
import yaml
from openpi_client import msgpack_numpy

from vla_ros.core.robot import load_robot
from vla_ros.core.types import Observation
from vla_ros.resources import robot_config_dir


def observation(robot, images: dict, q: np.ndarray | None = None, instruction: str = "pick up the block",
                stamp: float = 10.0, dq: np.ndarray | None = None) -> Observation:
    q = robot.home if q is None else q
    velocities = {} if dq is None else dict(zip(robot.joint_names, map(float, dq)))
    return Observation(images, dict(zip(robot.joint_names, map(float, q))), instruction, stamp, velocities)


def franka_with_wrist_camera(directory: Path):
    """The built-in franka plus a wrist camera on the hand (DROID needs an exterior and a wrist image)."""
    config = yaml.safe_load((robot_config_dir() / "franka.yaml").read_text())
    config["urdf"] = str((robot_config_dir() / config["urdf"]).resolve())
    config["cameras"].append({
        "name": "wrist", "topic": "/wrist/image_raw", "encoding": "rgb8", "width": 320, "height": 240,
        "fov_y_deg": 58.0, "pose": {"parent": "panda_hand", "xyz": [0.05, 0.0, 0.05], "rpy": [0.0, 0.0, -1.5708]},
    })
    path = directory / "franka_wrist.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return load_robot(path)


class LoopbackOpenpiServer:
    """An openpi-protocol websocket server on 127.0.0.1 that decodes and encodes with openpi_client.msgpack_numpy
    (the peer's own code). `policy(obs) -> reply dict`; an exception becomes openpi's error frame + close 1011."""

    def __init__(self, policy: Callable[[dict], dict], metadata: dict | None = None, port: int = 0,
                 first_frame: bytes | str | None = None):
        self.policy, self.metadata, self.first_frame = policy, metadata or {}, first_frame
        self.received: list[dict] = []
        self.connections = 0
        self._open: list = []
        self._server = websockets.sync.server.serve(self._handle, "127.0.0.1", port, compression=None, max_size=None)
        self.port = self._server.socket.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _handle(self, connection) -> None:
        self.connections += 1
        self._open.append(connection)
        connection.send(msgpack_numpy.packb(self.metadata) if self.first_frame is None else self.first_frame)
        while True:
            try:
                request = msgpack_numpy.unpackb(connection.recv())
            except websockets.exceptions.ConnectionClosed:
                return
            self.received.append(request)
            try:
                reply = self.policy(request)
            except Exception:
                connection.send(traceback.format_exc())
                connection.close(code=1011, reason="Internal server error. Traceback included in previous frame.")
                return
            reply.setdefault("server_timing", {"infer_ms": 1.5})
            connection.send(msgpack_numpy.packb(reply))

    def stop(self) -> None:
        """Shut down like a server process exiting: stop listening and close every open connection."""
        self._server.shutdown()
        for connection in self._open:
            connection.close(code=1001)
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
