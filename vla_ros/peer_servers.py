"""Loopback policy servers speaking the peers' wire protocols, for the protocol tests and `vla-ros bench policies`.

The peers' servers need GPUs and their whole stacks; these answer on 127.0.0.1 exactly as the peers' servers do on
the wire, each built from its peer's protocol definition:
  LoopbackOpenpiServer    openpi websocket_policy_server.py, encoded with openpi_client.msgpack_numpy (the peer's
                          own codec, from PyPI)
  LoopbackOpenVLAServer   OpenVLA / OpenVLA-OFT vla-scripts/deploy.py: POST /act, json_numpy, "error" on failure
  LoopbackGr00tServer     Isaac-GR00T's ZeroMQ REP server: msgpack + np.save (MsgSerializer) or torch.save
                          (TorchSerializer); {"error": str} on failure
  LoopbackLeRobotServer   LeRobot's async-inference policy_server (gRPC transport.AsyncInference), pickling
                          TimedAction lists of torch tensors like the real one
Each serves from a daemon thread, calls `policy(request) -> reply` (an exception becomes the peer's error reply)
and records what it received. Use them as context managers.
"""

from __future__ import annotations

import dataclasses
import http.server
import importlib
import importlib.util
import io
import pickle
import queue
import sys
import threading
import time
import traceback
import types
from concurrent import futures
from typing import Any, Callable

import grpc
import json_numpy
import numpy as np
import websockets.exceptions
import websockets.sync.server
import zmq

from vla_ros.core.policies import lerobot_async_pb2 as pb
from vla_ros.core.policies.gr00t_zmq import pack_msgpack, pack_torch, unpack_msgpack


class LoopbackOpenpiServer:
    """An openpi-protocol websocket server that decodes and encodes with openpi_client.msgpack_numpy. `policy(obs)
    -> reply dict`; an exception becomes openpi's error frame + close 1011."""

    def __init__(self, policy: Callable[[dict], dict], metadata: dict | None = None, port: int = 0,
                 first_frame: bytes | str | None = None):
        from openpi_client import msgpack_numpy

        self._codec = msgpack_numpy
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
        connection.send(self._codec.packb(self.metadata) if self.first_frame is None else self.first_frame)
        while True:
            try:
                request = self._codec.unpackb(connection.recv())
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
            connection.send(self._codec.packb(reply))

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


class LoopbackOpenVLAServer:
    """Answers POST /act like OpenVLA's and OpenVLA-OFT's deploy.py: json_numpy body in (double-encoded bodies
    unwrapped), `reply(payload) -> body text` (or a fixed text) out with `status`, after `delay_s`."""

    def __init__(self, reply: str | Callable[[dict], str], status: int = 200, delay_s: float = 0.0):
        self.requests: list[dict] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                payload = json_numpy.loads(body)
                if "encoded" in payload:
                    payload = json_numpy.loads(payload["encoded"])
                outer.requests.append({"path": self.path, **payload})
                time.sleep(delay_s)
                data = (reply(payload) if callable(reply) else reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.handle_error = lambda request, address: None  # a client that timed out and hung up
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/act"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class LoopbackGr00tServer:
    """Isaac-GR00T's REP server loop: decode, `policy(data) -> reply` for the "get_action" endpoint, encode; an
    exception (or an unknown endpoint, or a wrong api_token) becomes {"error": str}. `raw_reply` replaces every
    reply with those bytes (a server speaking something else)."""

    def __init__(self, policy: Callable[[Any], Any], serialization: str = "msgpack", api_token: str | None = None,
                 raw_reply: bytes | None = None, delay_s: float = 0.0):
        self.policy, self.api_token, self.raw_reply, self.delay_s = policy, api_token, raw_reply, delay_s
        self._pack, self._unpack = (pack_msgpack, unpack_msgpack) if serialization == "msgpack" else \
            (pack_torch, self._trusted_torch_load)
        self.received: list[dict] = []
        self._socket = zmq.Context.instance().socket(zmq.REP)
        self._socket.setsockopt(zmq.LINGER, 0)
        self.port = self._socket.bind_to_random_port("tcp://127.0.0.1")
        self.url = f"tcp://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @staticmethod
    def _trusted_torch_load(data: bytes) -> Any:
        import torch

        return torch.load(io.BytesIO(data), weights_only=False)  # the peer's TorchSerializer; our own client's bytes

    def _answer(self, message: bytes) -> bytes:
        if self.raw_reply is not None:
            return self.raw_reply
        try:
            request = self._unpack(message)
            self.received.append(request)
            if self.api_token is not None and request.get("api_token") != self.api_token:
                return self._pack({"error": "Unauthorized: Invalid API token"})
            if request.get("endpoint", "get_action") != "get_action":
                raise ValueError(f"Unknown endpoint: {request.get('endpoint')}")
            time.sleep(self.delay_s)
            return self._pack(self.policy(request.get("data", {})))
        except Exception as exc:
            return self._pack({"error": str(exc)})

    def _serve(self) -> None:
        while not self._stop.is_set():
            if self._socket.poll(50):
                self._socket.send(self._answer(self._socket.recv()))
        self._socket.close(linger=0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)


# --- LeRobot ---------------------------------------------------------------------------------------------------------

_HELPERS = "lerobot.async_inference.helpers"


def _stand_in_helpers() -> types.ModuleType:
    """lerobot.async_inference.helpers' pickled dataclasses (field names and order as in LeRobot 0.4.x), for a
    machine without LeRobot: the server's pickles must name LeRobot's classes."""
    module = types.ModuleType(_HELPERS)

    @dataclasses.dataclass
    class TimedData:
        timestamp: float
        timestep: int

    @dataclasses.dataclass
    class TimedAction(TimedData):
        action: Any

    @dataclasses.dataclass
    class TimedObservation(TimedData):
        observation: dict
        must_go: bool = False

    @dataclasses.dataclass
    class RemotePolicyConfig:
        policy_type: str
        pretrained_name_or_path: str
        lerobot_features: dict
        actions_per_chunk: int
        device: str = "cpu"
        rename_map: dict = dataclasses.field(default_factory=dict)

    for cls in (TimedData, TimedAction, TimedObservation, RemotePolicyConfig):
        cls.__module__, cls.__qualname__ = _HELPERS, cls.__name__
        setattr(module, cls.__name__, cls)
    return module


class LoopbackLeRobotServer:
    """LeRobot's policy_server on the wire: Ready resets, SendPolicyInstructions / SendObservations are unpickled
    (this is our own client's data) and recorded, GetActions answers the newest observation with `policy(obs) ->
    (T, D) actions` as TimedActions of torch tensors, timed from the observation at `fps`, or with empty Actions
    when no observation arrives within `obs_queue_timeout_s`. An exception in `policy` fails the call (gRPC
    UNKNOWN, as a raising servicer does); `reply_data` replaces the GetActions payload; `delay_s` delays GetActions
    and `load_delay_s` SendPolicyInstructions (loading the policy)."""

    def __init__(self, policy: Callable[[Any], np.ndarray], fps: float = 50.0, obs_queue_timeout_s: float = 2.0,
                 reply_data: bytes | None = None, delay_s: float = 0.0, load_delay_s: float = 0.0):
        self.policy, self.fps, self.obs_queue_timeout_s = policy, fps, obs_queue_timeout_s
        self.reply_data, self.delay_s, self.load_delay_s = reply_data, delay_s, load_delay_s
        self.calls: list[str] = []
        self.configs: list[Any] = []
        self.observations: list[Any] = []
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._registered = self._register_helpers()
        self.helpers = importlib.import_module(_HELPERS)
        empty = (pb.Empty.FromString, pb.Empty.SerializeToString)
        handlers = {
            "Ready": grpc.unary_unary_rpc_method_handler(self._ready, *empty),
            "SendPolicyInstructions": grpc.unary_unary_rpc_method_handler(
                self._instructions, pb.PolicySetup.FromString, pb.Empty.SerializeToString),
            "SendObservations": grpc.stream_unary_rpc_method_handler(
                self._observations, pb.Observation.FromString, pb.Empty.SerializeToString),
            "GetActions": grpc.unary_unary_rpc_method_handler(
                self._get_actions, pb.Empty.FromString, pb.Actions.SerializeToString),
        }
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("transport.AsyncInference",
                                                                                    handlers),))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"
        self._server.start()

    @staticmethod
    def _register_helpers() -> dict[str, types.ModuleType]:
        if importlib.util.find_spec("lerobot") is not None:
            return {}  # the real LeRobot is installed: its classes are the ones to pickle
        helpers = _stand_in_helpers()
        modules = {"lerobot": types.ModuleType("lerobot"),
                   "lerobot.async_inference": types.ModuleType("lerobot.async_inference"), _HELPERS: helpers}
        modules["lerobot"].async_inference = modules["lerobot.async_inference"]
        modules["lerobot.async_inference"].helpers = helpers
        sys.modules.update(modules)
        return modules

    def _ready(self, request, context):
        self.calls.append("Ready")
        self._queue = queue.Queue(maxsize=1)
        return pb.Empty()

    def _instructions(self, request, context):
        self.calls.append("SendPolicyInstructions")
        config = pickle.loads(request.data)
        self.configs.append(config)
        time.sleep(self.load_delay_s)
        if config.policy_type not in ("act", "smolvla", "diffusion", "tdmpc", "vqbet", "pi0", "pi05", "groot"):
            raise ValueError(f"Policy type {config.policy_type} not supported.")
        return pb.Empty()

    def _observations(self, request_iterator, context):
        self.calls.append("SendObservations")
        self.chunk_states = []
        buffer = io.BytesIO()
        for item in request_iterator:
            self.chunk_states.append((item.transfer_state, len(item.data)))
            if item.transfer_state == pb.TRANSFER_BEGIN:
                buffer = io.BytesIO()
            buffer.write(item.data)
        observation = pickle.loads(buffer.getvalue())
        self.observations.append(observation)
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put(observation)
        return pb.Empty()

    def _get_actions(self, request, context):
        import torch

        self.calls.append("GetActions")
        try:
            observation = self._queue.get(timeout=self.obs_queue_timeout_s)
        except queue.Empty:
            return pb.Actions()
        time.sleep(self.delay_s)
        if self.reply_data is not None:
            return pb.Actions(data=self.reply_data)
        chunk = torch.as_tensor(np.asarray(self.policy(observation), dtype=np.float32))
        timed = [self.helpers.TimedAction(timestamp=observation.timestamp + i / self.fps,
                                          timestep=observation.timestep + i, action=action)
                 for i, action in enumerate(chunk)]
        return pb.Actions(data=pickle.dumps(timed))

    def stop(self) -> None:
        self._server.stop(grace=None).wait(5)
        for name in self._registered:
            sys.modules.pop(name, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
