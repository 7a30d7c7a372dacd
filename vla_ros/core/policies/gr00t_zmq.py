"""Client for Isaac-GR00T policy servers (GR00T N1 / N1.5 / N1.6) over their ZeroMQ REQ/REP protocol.

Transport (NVIDIA/Isaac-GR00T gr00t/eval/service.py for N1 / N1.5, gr00t/policy/server_client.py for N1.6): a REP
socket (port 5555 by default); one request message {"endpoint": "get_action", "data": ..., "api_token": str
(only when set)}, one reply message. A failed request is answered {"error": str}; N1.6 clients also treat the raw
bytes b"ERROR" as a failure.

Serialisation (`serialization:` in the YAML):
  msgpack  Isaac-GR00T since 2025-09 (N1.5 after PR #329, N1.6): msgpack maps; numpy arrays travel as
           {"__ndarray_class__": True, "as_npy": np.save bytes} and are read back with np.load(allow_pickle=False),
           so no pickle is involved.
  torch    N1 and N1.5 servers from before 2025-09 (service.py TorchSerializer): torch.save both ways, and the
           server unpickles whatever arrives. Replies are read with torch.load(weights_only=True) admitting only
           numpy array reconstruction (NUMPY_GLOBALS): torch's restricted unpickler, never plain pickle, so a
           hostile server cannot run code here.

Request layout (`protocol:`):
  n1.5              data = {"video.<k>": uint8 (1, H, W, 3), "state.<k>": float32 (1, D), <language key>: [str]}
                    (Gr00tPolicy.get_action with T = 1, unbatched); reply {"action.<k>": (H, D)}, D = 1 parts
                    squeezed to (H,) by the server's squeeze_dict_values
  n1.6              data = {"observation": {"video": {k: uint8 (1, 1, H, W, 3)}, "state": {k: float32 (1, 1, D)},
                    "language": {<language key>: [[str]]}}, "options": None}; reply [{k: float32 (1, H, D)}, info]
  n1.6_sim_wrapper  a server started with --use-sim-policy-wrapper: "observation" holds flat keys "video.<k>"
                    (1, 1, H, W, 3), "state.<k>" (1, 1, D) and <language key>: [str]; reply [{"action.<k>": (1, H,
                    D)}, info]
Keys <k> are the modality keys of the server's embodiment (its modality config / modality.json).
"""

from __future__ import annotations

import io
import pickle
import urllib.parse
from dataclasses import dataclass
from typing import Any, Mapping

import msgpack
import numpy as np
import zmq

from vla_ros.core.config import Section
from vla_ros.core.errors import ConfigError
from vla_ros.core.policies.errors import PolicyServerError, PolicyUnavailableError
from vla_ros.core.policies.preprocess import RESIZE_MODES, StateColumn, camera_image, check_cameras, \
    parse_image_size, parse_state, resize_image, state_vector
from vla_ros.core.policies.spec import ActionTransform, OneRequestAtATime, checked_chunk, optional_str, \
    parse_action_space, parse_action_transform, positive_int
from vla_ros.core.types import ActionChunk, ActionSpace, BadChunkError, Observation, PolicyMetadata

PROTOCOLS = ("n1.5", "n1.6", "n1.6_sim_wrapper")
# What msgpack, np.load and torch.load raise on malformed or forbidden input (torch's restricted unpickler raises
# pickle.UnpicklingError, a bad zip RuntimeError; truncated data EOFError).
_DECODE_ERRORS = (ValueError, TypeError, KeyError, EOFError, RuntimeError, pickle.UnpicklingError,
                  msgpack.UnpackException)
SERIALIZATIONS = ("msgpack", "torch")


# --- serialisation --------------------------------------------------------------------------------------------------


def _encode_ndarray(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        output = io.BytesIO()
        np.save(output, obj, allow_pickle=False)
        return {"__ndarray_class__": True, "as_npy": output.getvalue()}
    raise TypeError(f"GR00T protocol: cannot encode {type(obj).__name__}")


def _decode_ndarray(obj: dict) -> Any:
    if "__ndarray_class__" in obj:
        return np.load(io.BytesIO(obj["as_npy"]), allow_pickle=False)
    return obj  # ModalityConfig and other maps stay plain dicts


def pack_msgpack(message: Any) -> bytes:
    return msgpack.packb(message, default=_encode_ndarray)


def unpack_msgpack(data: bytes) -> Any:
    return msgpack.unpackb(data, object_hook=_decode_ndarray)


def _numpy_globals() -> list:
    # numpy >= 2 pickles arrays as numpy._core.multiarray._reconstruct, numpy 1.x as numpy.core...; both name the
    # same function. ndarray, dtype and the numeric dtype classes (bool, integers, floats) complete an array's
    # pickle; object, string and void dtypes are not admitted. Nothing else is.
    reconstruct = np._core.multiarray._reconstruct
    numeric = {type(np.dtype(code)) for code in "?bBhHiIlLqQefd"}
    return [reconstruct, (reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype, *numeric]


def pack_torch(message: Any) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(message, buffer)
    return buffer.getvalue()


def unpack_torch(data: bytes) -> Any:
    import torch

    with torch.serialization.safe_globals(_numpy_globals()):
        return torch.load(io.BytesIO(data), weights_only=True)


# --- request / reply layout -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionPart:
    key: str  # modality key, without the "action." prefix
    width: int


@dataclass(frozen=True)
class Gr00tLayout:
    protocol: str
    video: tuple[tuple[str, str], ...]  # (modality key, robot camera)
    state: tuple[tuple[str, tuple[StateColumn, ...]], ...]  # (modality key, parts)
    language_key: str
    actions: tuple[ActionPart, ...]

    def request(self, images: Mapping[str, np.ndarray], states: Mapping[str, np.ndarray], instruction: str) -> dict:
        if self.protocol == "n1.5":
            data = {f"video.{key}": image[None] for key, image in images.items()}
            data.update({f"state.{key}": state[None] for key, state in states.items()})
            data[self.language_key] = [instruction]
            return {"endpoint": "get_action", "data": data}
        if self.protocol == "n1.6":
            observation = {"video": {key: image[None, None] for key, image in images.items()},
                           "state": {key: state[None, None] for key, state in states.items()},
                           "language": {self.language_key: [[instruction]]}}
        else:
            observation = {f"video.{key}": image[None, None] for key, image in images.items()}
            observation.update({f"state.{key}": state[None, None] for key, state in states.items()})
            observation[self.language_key] = [instruction]
        return {"endpoint": "get_action", "data": {"observation": observation, "options": None}}

    def states_in(self, request: dict) -> dict[str, np.ndarray]:
        """The state vectors of a `request` by modality key (the inverse of `request` for the state)."""
        if self.protocol == "n1.5":
            return {key: request["data"][f"state.{key}"][0] for key, _ in self.state}
        observation = request["data"]["observation"]
        if self.protocol == "n1.6":
            return {key: observation["state"][key][0, 0] for key, _ in self.state}
        return {key: observation[f"state.{key}"][0, 0] for key, _ in self.state}

    def reply(self, parts: Mapping[str, np.ndarray]) -> Any:
        """What a server answers for action parts {key: (H, width)} (the inverse of `actions_from`)."""
        if self.protocol == "n1.5":  # the server squeezes (H, 1) to (H,)
            return {f"action.{key}": values[:, 0] if values.shape[1] == 1 else values for key, values in parts.items()}
        prefix = "" if self.protocol == "n1.6" else "action."
        return [{prefix + key: values[None] for key, values in parts.items()}, {}]

    def actions_from(self, reply: Any, policy: str) -> np.ndarray:
        """The reply's action parts, checked and concatenated in `actions` order: (H, sum of widths)."""
        if self.protocol != "n1.5":
            if not isinstance(reply, (list, tuple)) or len(reply) != 2:
                raise BadChunkError(f"policy {policy}: GR00T {self.protocol} reply is {type(reply).__name__}, "
                                    f"expected [actions, info]")
            reply = reply[0]
        if not isinstance(reply, dict):
            raise BadChunkError(f"policy {policy}: GR00T reply actions are {type(reply).__name__}, expected a map")
        prefix = "" if self.protocol == "n1.6" else "action."
        columns = []
        for part in self.actions:
            name = prefix + part.key
            if name not in reply:
                keys = ", ".join(map(str, reply))
                raise BadChunkError(f"policy {policy}: GR00T reply has no {name!r} (keys: {keys})")
            try:
                values = np.asarray(reply[name], dtype=np.float64)
            except (TypeError, ValueError):
                raise BadChunkError(f"policy {policy}: GR00T reply {name!r} is not numeric") from None
            if self.protocol != "n1.5":
                if values.ndim != 3 or values.shape[0] != 1:
                    raise BadChunkError(f"policy {policy}: GR00T reply {name!r} has shape {values.shape}, expected "
                                        f"(1, H, {part.width})")
                values = values[0]
            elif values.ndim == 1 and part.width == 1:
                values = values[:, None]  # the server squeezes (H, 1) to (H,)
            if values.ndim != 2 or values.shape[1] != part.width:
                raise BadChunkError(f"policy {policy}: GR00T reply {name!r} has shape {values.shape}, expected "
                                    f"(H, {part.width})")
            columns.append(values)
        if len({len(c) for c in columns}) != 1:
            raise BadChunkError(f"policy {policy}: GR00T reply action parts have different horizons "
                                f"{[len(c) for c in columns]}")
        return np.concatenate(columns, axis=1)


# --- the client -----------------------------------------------------------------------------------------------------


class Gr00tZmqPolicy:
    """A policy served by an Isaac-GR00T inference server. The REQ socket is created lazily; after a timeout or a
    transport error it is discarded (a REQ socket that missed its reply cannot send again) and the next call opens
    a fresh one, so a late reply never answers the next request."""

    # what the action-contract self-test (core.contract) cannot exercise
    contract_notes = ("not checked: the server's model and its modality transforms (normalisation, the embodiment's "
                      "action representation)",)

    def __init__(self, url: str, *, name: str, layout: Gr00tLayout, action_space: ActionSpace, horizon: int,
                 rate_hz: float, serialization: str = "msgpack", image_size: tuple[int, int] | None = None,
                 resize: str = "stretch", transform: ActionTransform = ActionTransform(), api_token: str | None = None,
                 timeout_s: float = 10.0):
        check_zmq_url(url, f"policy {name}")
        self.url, self.layout, self.resize, self.transform = url, layout, resize, transform
        self.api_token, self.timeout_s = api_token, timeout_s
        self._pack, self._unpack = (pack_msgpack, unpack_msgpack) if serialization == "msgpack" else \
            (pack_torch, unpack_torch)
        self.serialization = serialization
        self.metadata = PolicyMetadata(name=name, action_space=action_space, horizon=horizon, rate_hz=rate_hz,
                                       cameras=tuple(camera for _, camera in layout.video), image_size=image_size)
        self._socket: zmq.Socket | None = None
        self._one_at_a_time = OneRequestAtATime(f"GR00T server {url}")

    def close(self) -> None:
        socket, self._socket = self._socket, None
        if socket is not None:
            socket.close(linger=0)

    def _exchange(self, payload: bytes) -> bytes:
        with self._one_at_a_time():  # a ZeroMQ socket must never be used by two threads at once
            return self._send_and_receive(payload)

    def _send_and_receive(self, payload: bytes) -> bytes:
        if self._socket is None:
            socket = zmq.Context.instance().socket(zmq.REQ)
            timeout_ms = int(self.timeout_s * 1000)
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.SNDTIMEO, timeout_ms)
            socket.setsockopt(zmq.RCVTIMEO, timeout_ms)
            socket.connect(self.url)
            self._socket = socket
        try:
            self._socket.send(payload)
            return self._socket.recv()
        except zmq.Again:
            self.close()
            raise PolicyUnavailableError(f"GR00T server {self.url}: no reply within {self.timeout_s:.1f} s (server "
                                         f"down, busy, or not an Isaac-GR00T policy server)") from None
        except zmq.ZMQError as exc:
            self.close()
            raise PolicyUnavailableError(f"GR00T server {self.url}: {exc}") from None

    def call(self, message: dict) -> Any:
        """Send one request (adding the API token) and return the decoded reply; server errors raise."""
        if self.api_token is not None:
            message = dict(message, api_token=self.api_token)
        reply = self._exchange(self._pack(message))
        if reply == b"ERROR":
            raise PolicyServerError(f"GR00T server {self.url}: answered ERROR (check the server's log)")
        try:
            decoded = self._unpack(reply)
        except _DECODE_ERRORS as exc:
            text = str(exc).splitlines()[0][:200] if str(exc) else ""
            raise PolicyServerError(f"GR00T server {self.url}: reply is not {self.serialization}-serialised GR00T "
                                    f"data ({type(exc).__name__}: {text})", detail=repr(reply[:2000])) from None
        if isinstance(decoded, dict) and "error" in decoded:
            lines = str(decoded["error"]).strip().splitlines() or ["(empty error)"]
            raise PolicyServerError(f"GR00T server {self.url}: server error: {lines[-1]}", detail=str(decoded["error"]))
        return decoded

    def encode(self, observation: Observation) -> dict:
        """The request message as it is sent (without the API token)."""
        meta, layout = self.metadata, self.layout
        images = {}
        for key, camera in layout.video:
            image = camera_image(observation, camera, meta.name)
            images[key] = image if meta.image_size is None else resize_image(image, meta.image_size, self.resize)
        states = {key: state_vector(columns, observation, meta.name) for key, columns in layout.state}
        return layout.request(images, states, observation.instruction)

    def decode(self, reply: Any, observation: Observation) -> ActionChunk:
        """A decoded reply -> the chunk: the action parts concatenated in `action:` order, then the transform."""
        actions = self.layout.actions_from(reply, self.metadata.name)
        return checked_chunk(self.metadata, actions, observation.stamp, transform=self.transform)

    def infer(self, observation: Observation) -> ActionChunk:
        return self.decode(self.call(self.encode(observation)), observation)

    def identity_chunk(self, observation: Observation, identity) -> ActionChunk:
        """The action-contract self-test (core.contract): the request as sent, answered as a server that holds
        still would: each action.<key> is state.<key> when the state has that key in the same width (so the parts'
        order is exercised), else the identity's values for those columns."""
        layout, horizon = self.layout, self.metadata.horizon
        states = layout.states_in(self.encode(observation))
        columns = dict(layout.state)
        row = identity.actions({key: (columns[key], values) for key, values in states.items()}, observation)
        parts, start = {}, 0
        for part in layout.actions:
            where = slice(start, start + part.width)
            echoed = identity.echo(columns[part.key], states[part.key], where) if part.key in states else None
            parts[part.key] = np.tile(row[where] if echoed is None else echoed, (horizon, 1)).astype(np.float32)
            start += part.width
        return self.decode(layout.reply(parts), observation)


def check_zmq_url(url: str, source: str, field: str = "url") -> None:
    parsed = urllib.parse.urlparse(url)
    try:
        port = parsed.port
    except ValueError:
        port = None
    if parsed.scheme != "tcp" or not parsed.hostname or port is None:
        raise ConfigError(source, field, f"expected tcp://host:port (GR00T's default port is 5555), got {url!r}")


def _parse_layout(cfg: Section, robot, protocol: str) -> Gr00tLayout:
    video = cfg.section("video")
    pairs = [(key, video.str(key)) for key in video.data]
    if not pairs:
        raise cfg.error("video", "expected at least one modality key -> robot camera")
    for key, camera in pairs:
        check_cameras([camera], robot, cfg.source, f"video.{key}")
    state = cfg.section("state")
    parts = tuple((key, parse_state(state.sections(key), robot)) for key in state.data)
    actions = []
    for item in cfg.sections("action"):
        item.unknown_keys({"key", "width"})
        actions.append(ActionPart(item.str("key"), positive_int(item, "width")))
    if not actions:
        raise cfg.error("action", "expected at least one {key, width}")
    return Gr00tLayout(protocol, tuple(pairs), parts, cfg.str("language"), tuple(actions))


def from_config(cfg: Section, robot=None) -> Gr00tZmqPolicy:
    """YAML keys: name, url (tcp://host:port), protocol (n1.5 | n1.6 | n1.6_sim_wrapper), serialization (msgpack |
    torch), api_token, horizon, rate_hz, image_size (omit to send camera frames unresized), resize, video (modality
    key -> robot camera), state (modality key -> parts, see preprocess.parse_state), language (the language
    modality key), action (list of {key, width} in column order), actions (clip / binarize / scale), action_space,
    timeout_s."""
    cfg.unknown_keys({"backend", "name", "url", "protocol", "serialization", "api_token", "horizon", "rate_hz",
                      "image_size", "resize", "video", "state", "language", "action", "actions", "action_space",
                      "timeout_s"})
    url = cfg.str("url")
    check_zmq_url(url, cfg.source)
    layout = _parse_layout(cfg, robot, cfg.choice("protocol", PROTOCOLS))
    action_space = parse_action_space(cfg.section("action_space"), robot)
    width = sum(part.width for part in layout.actions)
    if width != action_space.dim:
        raise cfg.error("action", f"widths add up to {width}, the action space has {action_space.dim} columns")
    return Gr00tZmqPolicy(
        url, name=cfg.str("name"), layout=layout, action_space=action_space, horizon=positive_int(cfg, "horizon"),
        rate_hz=cfg.float("rate_hz", positive=True), serialization=cfg.choice("serialization", SERIALIZATIONS,
                                                                               "msgpack"),
        image_size=parse_image_size(cfg), resize=cfg.choice("resize", RESIZE_MODES, "stretch"),
        transform=parse_action_transform(cfg.section("actions", {}), action_space.dim),
        api_token=optional_str(cfg, "api_token"), timeout_s=cfg.float("timeout_s", 10.0, positive=True),
    )
