"""Client for OpenVLA's REST server (openvla/openvla@c8f03f48af vla-scripts/deploy.py).

POST /act with a json_numpy body {"image": uint8 (H, W, 3), "instruction": str, "unnorm_key": str?}; the reply is
the un-normalised 7-D action as a json_numpy array, or the JSON string "error" (HTTP 200) when the server failed.
With `double_encode` the body is {"encoded": json_numpy.dumps(payload)} and the reply a json_numpy string, for
servers behind proxies that mangle nested JSON. One action per call: a 1-step chunk.

`JsonNumpyEndpoint` is that transport alone; OpenVLA-OFT's server (openvla_oft.py) speaks it too.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import json_numpy
import numpy as np

from vla_ros.core.config import Section
from vla_ros.core.errors import ConfigError
from vla_ros.core.policies.action_tokenizer import BoundsQ99, load_bounds_q99
from vla_ros.core.policies.errors import PolicyServerError, PolicyUnavailableError
from vla_ros.core.policies.preprocess import RESIZE_MODES, camera_image, check_cameras, parse_image_size, \
    resize_image
from vla_ros.core.policies.spec import checked_chunk, optional_str, parse_action_space
from vla_ros.core.types import ActionChunk, ActionSpace, BadChunkError, GripperConvention, Observation, \
    PolicyMetadata

# Bridge / OpenVLA: Δxyz (m) and Δroll, Δpitch, Δyaw (rad) with world-aligned axes, then the absolute gripper
# (1 open, 0 closed) — robots.md §5 [B1][B2][V1].
BRIDGE_ACTION_SPACE = ActionSpace(kind="ee_delta", frame="base", rotation="rpy", gripper=GripperConvention(1.0, 0.0))

# Connect directly: environment proxy settings are not meant for the robot-to-GPU link.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def check_http_url(url: str, source: str, field: str = "url") -> None:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(source, field, f"expected http://host:port/act, got {url!r}")


class JsonNumpyEndpoint:
    """POST a json_numpy payload to an openvla-style `/act` endpoint and decode its json_numpy reply.

    `server` names the peer in errors ("OpenVLA server http://..."); `expects` describes the request the server
    wants, for the error that its "error" reply carries no detail of."""

    def __init__(self, url: str, *, server: str, expects: str, timeout_s: float = 5.0, double_encode: bool = False):
        self.url, self.server, self.expects = url, server, expects
        self.timeout_s, self.double_encode = timeout_s, double_encode

    def act(self, payload: dict[str, Any]) -> Any:
        text = json_numpy.dumps(payload)
        if self.double_encode:
            text = json.dumps({"encoded": text})
        return self._decode(self._post(text.encode()))

    def _post(self, body: bytes) -> bytes:
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with _OPENER.open(request, timeout=self.timeout_s) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace").strip().replace("\n", " ")[:300]
            raise PolicyServerError(f"{self.server} server {self.url}: HTTP {exc.code} {exc.reason}: {text}",
                                    detail=text) from None
        except (urllib.error.URLError, TimeoutError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            if isinstance(reason, TimeoutError):
                raise PolicyUnavailableError(
                    f"{self.server} server {self.url}: no reply within {self.timeout_s:.1f} s") from None
            raise PolicyUnavailableError(f"{self.server} server {self.url}: unreachable ({reason})") from None
        except (http.client.HTTPException, OSError) as exc:
            raise PolicyUnavailableError(f"{self.server} server {self.url}: connection failed ({exc!r})") from None

    def _decode(self, body: bytes) -> Any:
        try:
            reply = json_numpy.loads(body)
            if isinstance(reply, str) and reply != "error":
                reply = json_numpy.loads(reply)  # double-encoded reply
        except (ValueError, TypeError, KeyError) as exc:
            raise PolicyServerError(f"{self.server} server {self.url}: reply is not json_numpy ({exc})",
                                    detail=body[:2000].decode(errors="replace")) from None
        if isinstance(reply, str):
            raise PolicyServerError(f"{self.server} server {self.url}: the server reported an error (see its log); "
                                    f"it expects {self.expects}")
        return reply


def numeric_array(reply: Any, policy: str, server: str) -> np.ndarray:
    """A decoded reply as a float64 array, or BadChunkError when it is not numeric (a dict, strings, ragged lists)."""
    try:
        action = np.asarray(reply)
    except ValueError:  # ragged nested lists
        action = np.asarray(None)
    if action.dtype.kind not in "fiu":
        raise BadChunkError(f"policy {policy}: {server} reply {reply!r:.100} is not a numeric array")
    return action.astype(np.float64)


class OpenVLARestPolicy:
    # what the action-contract self-test (core.contract) cannot exercise
    contract_notes = ("not checked: the server's de-tokenisation and un-normalisation by unnorm_key need the model (the "
                      "reply check against the configured statistics is exercised)",)

    def __init__(self, url: str, *, name: str, camera: str = "primary", image_size: tuple[int, int] = (224, 224),
                 resize: str = "stretch", unnorm_key: str | None = "bridge_orig",
                 action_space: ActionSpace = BRIDGE_ACTION_SPACE, rate_hz: float = 5.0, timeout_s: float = 5.0,
                 bounds: BoundsQ99 | None = None, double_encode: bool = False):
        check_http_url(url, f"policy {name}")
        if bounds is not None and bounds.dim != action_space.dim:
            raise ConfigError(f"policy {name}", "stats", f"statistics have {bounds.dim} dimensions, the action space "
                                                         f"has {action_space.dim}")
        self.camera, self.resize, self.unnorm_key, self.bounds = camera, resize, unnorm_key, bounds
        self.endpoint = JsonNumpyEndpoint(
            url, server="OpenVLA", timeout_s=timeout_s, double_encode=double_encode,
            expects="{'image': uint8 (H, W, 3), 'instruction': str, 'unnorm_key': str}")
        self.metadata = PolicyMetadata(
            name=name, action_space=action_space, horizon=1, rate_hz=rate_hz, cameras=(camera,),
            image_size=image_size, normalization={unnorm_key or "default": bounds.as_dict()} if bounds else None,
        )

    def encode(self, observation: Observation) -> dict:
        """The request body as it is sent."""
        meta = self.metadata
        image = resize_image(camera_image(observation, self.camera, meta.name), meta.image_size, self.resize)
        payload = {"image": np.ascontiguousarray(image), "instruction": observation.instruction}
        if self.unnorm_key is not None:
            payload["unnorm_key"] = self.unnorm_key
        return payload

    def infer(self, observation: Observation) -> ActionChunk:
        return self.decode(self.endpoint.act(self.encode(observation)), observation)

    def identity_chunk(self, observation: Observation, identity) -> ActionChunk:
        """The action-contract self-test (core.contract): the request carries no state; `identity` answers."""
        self.encode(observation)
        return self.decode(identity.actions({}, observation), observation)

    def decode(self, reply, observation: Observation) -> ActionChunk:
        """A server reply (one action) -> a 1-step chunk, refused outside the statistics' [q01, q99]."""
        meta = self.metadata
        action = numeric_array(reply, meta.name, "OpenVLA")
        if action.shape != (meta.action_space.dim,):
            raise BadChunkError(f"policy {meta.name}: OpenVLA action has shape {action.shape}, expected "
                                f"({meta.action_space.dim},)")
        if self.bounds is not None and np.all(np.isfinite(action)):
            outside = self.bounds.outside(action)
            if outside.size:
                i = outside[0]
                raise BadChunkError(
                    f"policy {meta.name}: action[{i}] = {action[i]:.4g} is outside {self.unnorm_key} "
                    f"[q01, q99] = [{self.bounds.q01[i]:.4g}, {self.bounds.q99[i]:.4g}]; the server un-normalised "
                    f"with other statistics (check unnorm_key)"
                )
        return checked_chunk(meta, action[None, :], observation.stamp)


def from_config(cfg: Section, robot=None) -> OpenVLARestPolicy:
    """YAML keys: name, url, camera, image_size, resize, unnorm_key (null to omit), stats (norm_stats JSON, to
    check replies), rate_hz, timeout_s, double_encode, action_space (default: Bridge ee_delta)."""
    cfg.unknown_keys({"backend", "name", "url", "camera", "image_size", "resize", "unnorm_key", "stats", "rate_hz",
                      "timeout_s", "double_encode", "action_space"})
    url = cfg.str("url")
    check_http_url(url, cfg.source)
    camera = cfg.str("camera", "primary")
    check_cameras([camera], robot, cfg.source, "camera")
    unnorm_key = optional_str(cfg, "unnorm_key")
    bounds = None
    if cfg.has("stats"):
        if unnorm_key is None:
            raise cfg.error("stats", "needs unnorm_key to pick the statistics")
        bounds = load_bounds_q99(Path(cfg.path("stats")), unnorm_key)
    # Default: the Bridge convention (ee_delta, base frame, rpy, gripper 1 open / 0 closed) on every robot arm.
    action_space = parse_action_space(cfg.section("action_space", {"kind": "ee_delta"}), robot)
    return OpenVLARestPolicy(
        url, name=cfg.str("name"), camera=camera, image_size=parse_image_size(cfg, default=(224, 224)),
        resize=cfg.choice("resize", RESIZE_MODES, "stretch"), unnorm_key=unnorm_key,
        action_space=action_space, rate_hz=cfg.float("rate_hz", 5.0, positive=True),
        timeout_s=cfg.float("timeout_s", 5.0, positive=True), bounds=bounds, double_encode=read_double_encode(cfg),
    )


def read_double_encode(cfg: Section) -> bool:
    double_encode = cfg.raw("double_encode", False)
    if not isinstance(double_encode, bool):
        raise cfg.error("double_encode", f"expected true or false, got {double_encode!r}")
    return double_encode
