"""Client for openpi policy servers (π0 / π0.5 / π0-FAST) over their websocket protocol.

Protocol (Physical-Intelligence/openpi@15a9616a00 src/openpi/serving/websocket_policy_server.py and
packages/openpi-client): the server's first frame is msgpack(metadata); then each binary frame we send is
msgpack(observation dict) and each reply is msgpack({"actions": (H, D), "policy_timing", "server_timing"}).
numpy arrays travel as {b"__ndarray__": True, b"data": bytes, b"dtype": dtype.str, b"shape": shape}, scalars as
{b"__npgeneric__": True, b"data": item, b"dtype": dtype.str}; object / void / complex dtypes are refused. A server
error is a text frame (the traceback) followed by close code 1011. Implemented here on `websockets` + `msgpack`
rather than importing openpi-client, whose package pins numpy<2.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import msgpack
import numpy as np
import websockets.exceptions
import websockets.sync.client
from websockets.frames import CloseCode
from websockets.uri import parse_uri

from vla_ros.core.config import Section
from vla_ros.core.errors import ConfigError, one_line
from vla_ros.core.policies.errors import PolicyServerError, PolicyUnavailableError
from vla_ros.core.policies.preprocess import LAYOUTS, RESIZE_MODES, StateColumn, camera_image, check_cameras, \
    parse_image_size, parse_state, prepare_image, state_vector
from vla_ros.core.policies.spec import ActionTransform, checked_chunk, optional_str, parse_action_space, \
    parse_action_transform, positive_int
from vla_ros.core.types import ActionChunk, ActionSpace, BadChunkError, Observation, PolicyMetadata

# --- msgpack + numpy, byte-compatible with openpi_client.msgpack_numpy -----------------------------------------------


def _encode_numpy(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)):
        if obj.dtype.kind in ("V", "O", "c"):
            raise TypeError(f"openpi protocol: numpy dtype {obj.dtype} cannot be sent")
        if isinstance(obj, np.ndarray):
            return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"openpi protocol: cannot encode {type(obj).__name__}")


def _decode_numpy(obj: dict) -> Any:
    # openpi writes the marker keys as bytes; str keys are accepted too, for servers written in other languages.
    if b"__ndarray__" in obj or "__ndarray__" in obj:
        return np.frombuffer(_key(obj, "data"), dtype=np.dtype(_key(obj, "dtype"))).reshape(_key(obj, "shape"))
    if b"__npgeneric__" in obj or "__npgeneric__" in obj:
        return np.dtype(_key(obj, "dtype")).type(_key(obj, "data"))
    return obj


def _key(obj: dict, name: str) -> Any:
    return obj[name.encode()] if name.encode() in obj else obj[name]


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, default=_encode_numpy)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, object_hook=_decode_numpy)


# --- request template -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageField:
    camera: str
    layout: str


@dataclass(frozen=True)
class StateField:
    columns: tuple[StateColumn, ...]


@dataclass(frozen=True)
class InstructionField:
    pass


def parse_request(section: Section, robot) -> dict[str, Any]:
    """The observation dict the server expects. Every mapping with a `from:` key is a leaf:
        {from: image, camera: NAME, layout: hwc | chw}   uint8 image at the policy's image_size
        {from: state, parts: [...]}                      float32 vector (parts as preprocess.parse_state)
        {from: instruction}                              the language instruction (str)
    other mappings nest (ALOHA's "images": {"cam_high": ...}); keys are sent verbatim ("observation/...")."""
    template: dict[str, Any] = {}
    for key in section.data:
        sub = section.section(key)
        if "from" not in sub.data:
            template[key] = parse_request(sub, robot)
            continue
        kind = sub.choice("from", ("image", "state", "instruction"))
        if kind == "image":
            sub.unknown_keys({"from", "camera", "layout"})
            template[key] = ImageField(sub.str("camera"), sub.choice("layout", LAYOUTS, "hwc"))
            check_cameras([template[key].camera], robot, sub.source, f"{sub.field}.camera")
        elif kind == "state":
            sub.unknown_keys({"from", "parts"})
            template[key] = StateField(parse_state(sub.sections("parts"), robot))
        else:
            sub.unknown_keys({"from"})
            template[key] = InstructionField()
    return template


def _template_cameras(template: Mapping[str, Any]) -> list[str]:
    cameras = []
    for value in template.values():
        if isinstance(value, ImageField):
            cameras.append(value.camera)
        elif isinstance(value, dict):
            cameras.extend(_template_cameras(value))
    return cameras


# --- the client -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: initial_s, initial_s * factor, ... capped at max_s."""

    initial_s: float = 0.1
    factor: float = 2.0
    max_s: float = 2.0

    def delays(self) -> Iterator[float]:
        delay = self.initial_s
        while True:
            yield delay
            delay = min(delay * self.factor, self.max_s)


class OpenpiWebsocketPolicy:
    """A policy served by an openpi websocket server. Connects lazily on the first `infer` (or `connect()`),
    reconnects with exponential backoff when the connection drops, and never waits longer than
    `reconnect_budget_s` for a server that is down or `infer_timeout_s` for one reply."""

    # what the action-contract self-test (core.contract) cannot exercise
    contract_notes = ("not checked: what the server does between request and reply (its model and its own input / "
                      "output transforms); the identity answers from the state vectors of the request",)

    def __init__(self, url: str, *, name: str, request: Mapping[str, Any], action_space: ActionSpace, horizon: int,
                 rate_hz: float, image_size: tuple[int, int] | None = (224, 224), resize: str = "pad",
                 transform: ActionTransform = ActionTransform(), api_key: str | None = None,
                 connect_timeout_s: float = 5.0, infer_timeout_s: float = 10.0, reconnect_budget_s: float = 10.0,
                 backoff: Backoff = Backoff(), clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        try:
            parse_uri(url)
        except websockets.exceptions.InvalidURI:
            raise ConfigError(f"policy {name}", "url", f"expected ws://host:port or wss://..., got {url!r}") from None
        self.url, self.request, self.resize, self.transform = url, dict(request), resize, transform
        self.api_key = api_key
        self.connect_timeout_s, self.infer_timeout_s = connect_timeout_s, infer_timeout_s
        self.reconnect_budget_s, self.backoff, self.clock, self.sleep = reconnect_budget_s, backoff, clock, sleep
        self.metadata = PolicyMetadata(name=name, action_space=action_space, horizon=horizon, rate_hz=rate_hz,
                                       cameras=tuple(_template_cameras(self.request)), image_size=image_size)
        self._connection: websockets.sync.client.ClientConnection | None = None
        self._server_metadata: dict | None = None

    # -- connection management --

    @property
    def server_metadata(self) -> dict | None:
        """The server's first frame (e.g. openpi's `reset_pose`), once connected."""
        return self._server_metadata

    def connect(self) -> dict:
        self._ensure_connected(self.clock() + self.reconnect_budget_s, self.backoff.delays())
        return self._server_metadata

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _ensure_connected(self, deadline: float, delays: Iterator[float]) -> websockets.sync.client.ClientConnection:
        if self._connection is not None:
            return self._connection
        while True:
            remaining = deadline - self.clock()
            try:
                self._connection, self._server_metadata = self._open(max(min(self.connect_timeout_s, remaining), 0.05))
                return self._connection
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
                error = exc
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise PolicyUnavailableError(
                    f"openpi server {self.url}: unreachable for {self.reconnect_budget_s:.1f} s ({one_line(error)})"
                )
            self.sleep(min(next(delays), remaining))

    def _open(self, timeout: float) -> tuple[websockets.sync.client.ClientConnection, dict]:
        headers = {"Authorization": f"Api-Key {self.api_key}"} if self.api_key else None
        # proxy=None: connect directly; environment proxy settings are not meant for the robot-to-GPU link.
        # legacy=True: a plain connection that outlives this call (websockets' own `reconnect` iterator retries for
        # ever with delays up to a minute; the control loop needs a bounded budget and an injectable clock).
        connection = websockets.sync.client.connect(
            self.url, compression=None, max_size=None, additional_headers=headers, open_timeout=timeout, proxy=None,
            legacy=True,
        )
        try:
            first = connection.recv(timeout=timeout)
        except BaseException:
            connection.close()
            raise
        metadata = self._unpack(first, "first frame") if isinstance(first, bytes) else None
        if not isinstance(metadata, dict):
            connection.close()
            raise PolicyServerError(f"openpi server {self.url}: first frame is not msgpack metadata, is this an "
                                    f"openpi policy server?", detail=repr(first)[:2000])
        return connection, metadata

    def _unpack(self, data: bytes, what: str) -> Any:
        try:
            return unpack(data)
        except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
            raise PolicyServerError(
                f"openpi server {self.url}: {what} is not openpi msgpack ({one_line(exc)})") from None

    def _exchange(self, payload: bytes) -> dict:
        deadline = self.clock() + self.reconnect_budget_s
        delays = self.backoff.delays()
        while True:
            connection = self._ensure_connected(deadline, delays)
            try:
                connection.send(payload)
                reply = connection.recv(timeout=self.infer_timeout_s)
            except TimeoutError:
                self.close()  # a late reply would otherwise answer the next request
                raise PolicyUnavailableError(f"openpi server {self.url}: no reply within {self.infer_timeout_s:.1f} s")
            except websockets.exceptions.ConnectionClosed as exc:
                self._connection = None
                if exc.rcvd is not None and exc.rcvd.code == CloseCode.INTERNAL_ERROR:
                    raise PolicyServerError(f"openpi server {self.url}: closed with 1011 (internal error): "
                                            f"{exc.rcvd.reason}") from None
                remaining = deadline - self.clock()
                if remaining <= 0:
                    raise PolicyUnavailableError(f"openpi server {self.url}: connection lost ({one_line(exc)}) and "
                                                 f"not back within {self.reconnect_budget_s:.1f} s") from None
                # The server restarted or the link dropped: reconnect and send the same observation again.
                self.sleep(min(next(delays), remaining))
                continue
            if isinstance(reply, str):
                self.close()  # the server closes with 1011 after its error text
                lines = [line for line in reply.strip().splitlines() if line.strip()]
                raise PolicyServerError(f"openpi server {self.url}: inference failed: "
                                        f"{lines[-1] if lines else 'empty error'}", detail=reply)
            decoded = self._unpack(reply, "reply")
            if not isinstance(decoded, dict) or "actions" not in decoded:
                keys = list(decoded) if isinstance(decoded, dict) else type(decoded).__name__
                raise BadChunkError(f"policy {self.metadata.name}: openpi reply has no 'actions' (got {keys})")
            return decoded

    # -- inference --

    def _build(self, template: Mapping[str, Any], observation: Observation) -> dict[str, Any]:
        meta = self.metadata
        request = {}
        for key, field in template.items():
            if isinstance(field, ImageField):
                image = camera_image(observation, field.camera, meta.name)
                request[key] = prepare_image(image, meta.image_size, self.resize, field.layout, False)
            elif isinstance(field, StateField):
                request[key] = state_vector(field.columns, observation, meta.name)
            elif isinstance(field, InstructionField):
                request[key] = observation.instruction
            else:
                request[key] = self._build(field, observation)
        return request

    def encode(self, observation: Observation) -> dict[str, Any]:
        """The observation dict as it is sent."""
        return self._build(self.request, observation)

    def decode(self, reply: dict, observation: Observation) -> ActionChunk:
        """A server reply -> the chunk (shape and value checks, then the `actions:` transform)."""
        actions = np.asarray(reply["actions"])
        if actions.dtype.kind not in "fiu":
            raise BadChunkError(f"policy {self.metadata.name}: openpi actions have dtype {actions.dtype}")
        info = {key: _plain(reply[key]) for key in ("policy_timing", "server_timing") if key in reply}
        return checked_chunk(self.metadata, actions, observation.stamp, info, transform=self.transform)

    def infer(self, observation: Observation) -> ActionChunk:
        return self.decode(self._exchange(pack(self.encode(observation))), observation)

    def identity_chunk(self, observation: Observation, identity) -> ActionChunk:
        """The action-contract self-test (core.contract): the request as sent, answered by `identity` as a reply."""
        row = identity.actions(dict(_state_values(self.request, self.encode(observation))), observation)
        return self.decode({"actions": np.tile(row, (self.metadata.horizon, 1)).astype(np.float32)}, observation)


def _state_values(template: Mapping[str, Any], request: Mapping[str, Any], prefix: str = "") -> Iterator[tuple]:
    """(request key path, (state columns, the vector sent)) for every state leaf of the template."""
    for key, field in template.items():
        if isinstance(field, StateField):
            yield prefix + key, (field.columns, request[key])
        elif isinstance(field, dict):
            yield from _state_values(field, request[key], f"{prefix}{key}/")


def _plain(value: Any) -> Any:
    """Timing dicts with numpy scalars -> plain Python values (chunk info is logged / serialised)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def from_config(cfg: Section, robot=None) -> OpenpiWebsocketPolicy:
    """YAML keys: name, url, horizon, rate_hz, image_size, resize, request (template, see parse_request),
    actions (ActionTransform: clip, binarize, scale), action_space, api_key, connect_timeout_s, infer_timeout_s,
    reconnect_budget_s, backoff {initial_s, factor, max_s}."""
    cfg.unknown_keys({"backend", "name", "url", "horizon", "rate_hz", "image_size", "resize", "request", "actions",
                      "action_space", "api_key", "connect_timeout_s", "infer_timeout_s", "reconnect_budget_s",
                      "backoff"})
    url = cfg.str("url")
    try:
        parse_uri(url)
    except websockets.exceptions.InvalidURI:
        raise cfg.error("url", f"expected ws://host:port or wss://..., got {url!r}") from None
    action_space = parse_action_space(cfg.section("action_space"), robot)
    backoff = Backoff()
    if cfg.has("backoff"):
        b = cfg.section("backoff")
        b.unknown_keys({"initial_s", "factor", "max_s"})
        backoff = Backoff(b.float("initial_s", 0.1, positive=True), b.float("factor", 2.0, positive=True),
                          b.float("max_s", 2.0, positive=True))
        if backoff.factor < 1.0:
            raise b.error("factor", f"expected >= 1, got {backoff.factor}")
    return OpenpiWebsocketPolicy(
        url, name=cfg.str("name"), request=parse_request(cfg.section("request"), robot), action_space=action_space,
        horizon=positive_int(cfg, "horizon"), rate_hz=cfg.float("rate_hz", positive=True),
        image_size=parse_image_size(cfg, default=(224, 224)), resize=cfg.choice("resize", RESIZE_MODES, "pad"),
        transform=parse_action_transform(cfg.section("actions", {}), action_space.dim),
        api_key=optional_str(cfg, "api_key"), connect_timeout_s=cfg.float("connect_timeout_s", 5.0, positive=True),
        infer_timeout_s=cfg.float("infer_timeout_s", 10.0, positive=True),
        reconnect_budget_s=cfg.float("reconnect_budget_s", 10.0, positive=True), backoff=backoff,
    )
