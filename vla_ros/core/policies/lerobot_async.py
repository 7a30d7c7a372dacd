"""Client for LeRobot's async-inference policy server (huggingface/lerobot v0.4.4 src/lerobot/async_inference/
policy_server.py, service transport.AsyncInference of src/lerobot/transport/services.proto).

Protocol, as LeRobot's robot_client.py drives it:
  1. Ready(Empty)                         the server resets its observation queue
  2. SendPolicyInstructions(PolicySetup)  pickled RemotePolicyConfig: policy type, checkpoint, the robot's
                                          observation features, actions_per_chunk, device; the server loads the
                                          policy (minutes for a hub download: `load_timeout_s`)
  3. SendObservations(stream)             a pickled TimedObservation in chunks of <= 2 MiB (TRANSFER_BEGIN /
                                          MIDDLE / END; a single chunk is sent as END); its observation is the
                                          robot's raw dict: "<joint>.pos"-style floats, camera name -> uint8 HxWx3,
                                          "task" -> instruction
  4. GetActions(Empty) -> Actions         a pickled list of TimedAction (one torch tensor per step, already
                                          un-normalised), or empty bytes when the server had no observation within
                                          its obs_queue_timeout or its inference failed
Messages are ours (lerobot_async.proto: same field numbers and types, our own proto package), called on LeRobot's
method paths. Every observation is sent with must_go = True: this backend asks only when the executor needs a
chunk, and the server would otherwise drop an observation whose joint state is within 1 unit of the last one it
answered (observations_similar), which in radians is almost always.

LeRobot's own client decides *when* to ask (queue below chunk_size_threshold x chunk, 0.5) and merges overlapping
chunks (aggregate_fn_name: weighted_average 0.3 old + 0.7 new, latest_only, average, conservative). Here the
executor does both (vla_ros/core/executor.py: async mode, queue_threshold 0.5, crossfaded hand-over).

Payloads are pickles (lerobot_pickle.py): the server's are read with a restricted unpickler that admits only the
action / tensor / array types; ours are written from plain fields. The server itself unpickles whatever reaches it:
expose it only to the robot computer.
"""

from __future__ import annotations

import itertools
import pickle
import time
from typing import Any, Callable, Iterator, Sequence

import grpc
import numpy as np

from vla_ros.core.config import Section
from vla_ros.core.errors import ConfigError
from vla_ros.core.policies import lerobot_async_pb2 as pb
from vla_ros.core.policies.errors import PolicyServerError, PolicyUnavailableError
from vla_ros.core.policies.lerobot_pickle import ForbiddenPickleError, TimedAction, dump_lerobot_dataclass, \
    load_timed_actions
from vla_ros.core.policies.preprocess import EE_COMPONENTS, RESIZE_MODES, ConstantColumn, EEPoseColumns, StateColumn, \
    camera_image, check_cameras, parse_image_size, parse_state, resize_image, state_vector
from vla_ros.core.policies.spec import ActionTransform, OneRequestAtATime, checked_chunk, parse_action_space, \
    parse_action_transform, positive_int
from vla_ros.core.types import ActionChunk, ActionSpace, BadChunkError, Observation, PolicyMetadata

SERVICE = "/transport.AsyncInference/"
CHUNK_BYTES = 2 * 1024 * 1024  # LeRobot transport/utils.py CHUNK_SIZE
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # LeRobot's channel limit (grpc_channel_options)
# policy_type values LeRobot 0.4.x's server accepts (async_inference/constants.py SUPPORTED_POLICIES)
POLICY_TYPES = ("act", "smolvla", "diffusion", "tdmpc", "vqbet", "pi0", "pi05", "groot")
# What a malformed (not forbidden) payload makes the unpickler raise.
_MALFORMED = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, RuntimeError)


def observation_chunks(payload: bytes) -> Iterator[pb.Observation]:
    """`payload` as LeRobot's send_bytes_in_chunks cuts it: BEGIN, MIDDLE..., END; one chunk alone is END."""
    for start in range(0, max(len(payload), 1), CHUNK_BYTES):
        last = start + CHUNK_BYTES >= len(payload)
        state = pb.TRANSFER_END if last else pb.TRANSFER_BEGIN if start == 0 else pb.TRANSFER_MIDDLE
        yield pb.Observation(transfer_state=state, data=payload[start : start + CHUNK_BYTES])


def state_names(columns: Sequence[StateColumn | ConstantColumn | EEPoseColumns]) -> list[str]:
    """Names of the observation.state entries: "<joint>.pos" (as LeRobot names its motors), "<joint>.gripper" for a
    gripper opening, "<arm>.ee.<component>" for EE pose columns, "const.<i>" for constants."""
    names = []
    for i, column in enumerate(columns):
        if isinstance(column, StateColumn):
            names.append(f"{column.joint}.{'gripper' if column.convention is not None else 'pos'}")
        elif isinstance(column, ConstantColumn):
            names.append(f"const.{i}")
        else:
            components = ("x", "y", "z") + EE_COMPONENTS[column.rotation]
            names.extend(f"{column.arm}.ee.{components[c]}" for c in column.components)
    if len(set(names)) != len(names):
        raise ValueError(f"state entries repeat: {names}")
    return names


class LeRobotAsyncPolicy:
    """A policy served by LeRobot's async-inference policy_server. Connects and hands over the policy instructions
    lazily on the first `infer` (the features it declares are that observation's); after a failure the next call
    repeats the handshake."""

    # what the action-contract self-test (core.contract) cannot exercise
    contract_notes = ("not checked: the policy on the server and its normalisation statistics",)

    def __init__(self, address: str, *, name: str, policy_type: str, pretrained_name_or_path: str,
                 cameras: Sequence[tuple[str, str]], state: Sequence[StateColumn | ConstantColumn | EEPoseColumns],
                 action_space: ActionSpace, horizon: int, rate_hz: float, device: str = "cpu",
                 rename_map: dict[str, str] | None = None, image_size: tuple[int, int] | None = None,
                 resize: str = "stretch", transform: ActionTransform = ActionTransform(),
                 connect_timeout_s: float = 5.0, load_timeout_s: float = 120.0, infer_timeout_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        check_address(address, f"policy {name}")
        self.address, self.cameras, self.state, self.resize = address, tuple(cameras), tuple(state), resize
        self.policy_type, self.pretrained_name_or_path, self.device = policy_type, pretrained_name_or_path, device
        self.rename_map, self.transform, self.clock = dict(rename_map or {}), transform, clock
        self.connect_timeout_s, self.load_timeout_s, self.infer_timeout_s = \
            connect_timeout_s, load_timeout_s, infer_timeout_s
        self.state_names = state_names(self.state)
        self.metadata = PolicyMetadata(name=name, action_space=action_space, horizon=horizon, rate_hz=rate_hz,
                                       cameras=tuple(camera for _, camera in self.cameras), image_size=image_size)
        self._channel: grpc.Channel | None = None
        self._ready = self._configured = False
        self._timesteps = itertools.count()
        self._one_at_a_time = OneRequestAtATime(f"LeRobot policy server {address}")

    # -- connection --

    def _method(self, name: str, request_cls, response_cls, stream: bool = False):
        if self._channel is None:
            # enable_http_proxy 0: connect directly; proxy settings are not meant for the robot-to-GPU link.
            self._channel = grpc.insecure_channel(self.address, options=[
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.enable_http_proxy", 0)])
        factory = self._channel.stream_unary if stream else self._channel.unary_unary
        return factory(SERVICE + name, request_serializer=request_cls.SerializeToString,
                       response_deserializer=response_cls.FromString)

    def close(self) -> None:
        channel, self._channel = self._channel, None
        self._ready = self._configured = False
        if channel is not None:
            channel.close()

    def _call(self, name: str, request, request_cls, response_cls, timeout: float, stream: bool = False):
        try:
            return self._method(name, request_cls, response_cls, stream)(request, timeout=max(timeout, 0.01))
        except grpc.RpcError as exc:
            self._ready = False  # re-handshake next time: Ready also discards an abandoned GetActions' queue
            code, details = exc.code(), (exc.details() or "").strip().splitlines()
            detail = details[-1] if details else ""
            where = f"LeRobot policy server {self.address}: {name}"
            if code == grpc.StatusCode.UNAVAILABLE:
                self._configured = False  # it may have restarted without the policy
                if "HTTP/2" in detail or "http1" in detail.lower():
                    raise PolicyServerError(f"{where}: the server answers, but not with gRPC ({detail}); is this a "
                                            f"LeRobot async-inference policy_server?") from None
                raise PolicyUnavailableError(f"{where}: unreachable ({detail})") from None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise PolicyUnavailableError(f"{where}: no reply within {timeout:.1f} s") from None
            if code == grpc.StatusCode.UNIMPLEMENTED:
                raise PolicyServerError(f"{where}: not implemented here; is this a LeRobot async-inference "
                                        f"policy_server (service transport.AsyncInference)?") from None
            raise PolicyServerError(f"{where} failed ({code.name}): {detail}", detail="\n".join(details)) from None

    def _handshake(self, raw: dict[str, Any]) -> None:
        """Ready, then the policy instructions (the server loads the policy), unless already done."""
        if not self._ready:
            self._call("Ready", pb.Empty(), pb.Empty, pb.Empty, self.connect_timeout_s)
            self._ready = True
        if not self._configured:
            setup = pb.PolicySetup(data=dump_lerobot_dataclass("RemotePolicyConfig", {
                "policy_type": self.policy_type, "pretrained_name_or_path": self.pretrained_name_or_path,
                "lerobot_features": self.lerobot_features(raw), "actions_per_chunk": self.metadata.horizon,
                "device": self.device, "rename_map": self.rename_map}))
            self._call("SendPolicyInstructions", setup, pb.PolicySetup, pb.Empty, self.load_timeout_s)
            self._configured = True

    def lerobot_features(self, raw: dict[str, Any]) -> dict[str, dict]:
        """The features LeRobot's hw_to_dataset_features declares for a robot whose raw observation is `raw`."""
        features = {"observation.state": {"dtype": "float32", "shape": (len(self.state_names),),
                                          "names": list(self.state_names)}}
        for key, _ in self.cameras:
            features[f"observation.images.{key}"] = {"dtype": "image", "shape": tuple(raw[key].shape),
                                                     "names": ["height", "width", "channels"]}
        return features

    # -- inference --

    def infer(self, observation: Observation) -> ActionChunk:
        with self._one_at_a_time():  # a second GetActions in flight could take the answer to our observation
            return self._infer(observation)

    def encode(self, observation: Observation) -> dict[str, Any]:
        """The raw observation as the TimedObservation carries it (state entries by name, frames, task)."""
        meta = self.metadata
        raw: dict[str, Any] = dict(zip(self.state_names, map(float, state_vector(self.state, observation, meta.name))))
        for key, camera in self.cameras:
            image = camera_image(observation, camera, meta.name)
            raw[key] = image if meta.image_size is None else resize_image(image, meta.image_size, self.resize)
        raw["task"] = observation.instruction
        return raw

    def identity_chunk(self, observation: Observation, identity) -> ActionChunk:
        """The action-contract self-test (core.contract): the observation as sent, answered by `identity` as the
        server's TimedAction list."""
        raw = self.encode(observation)
        row = identity.actions({"observation.state": (self.state, np.array([raw[n] for n in self.state_names]))},
                               observation)
        dt = 1.0 / self.metadata.rate_hz
        timed = [TimedAction(observation.stamp + i * dt, i, row.copy()) for i in range(self.metadata.horizon)]
        return self._chunk(timed, 0, observation)

    def _infer(self, observation: Observation) -> ActionChunk:
        raw = self.encode(observation)
        self._handshake(raw)  # bounded by its own timeouts (loading the policy may take minutes)
        deadline = self.clock() + self.infer_timeout_s
        timestep = next(self._timesteps)
        payload = dump_lerobot_dataclass("TimedObservation", {
            "timestamp": observation.stamp, "timestep": timestep, "observation": raw, "must_go": True})
        self._call("SendObservations", observation_chunks(payload), pb.Observation, pb.Empty,
                   deadline - self.clock(), stream=True)
        reply = self._call("GetActions", pb.Empty(), pb.Empty, pb.Actions, deadline - self.clock())
        if not reply.data:
            self._ready = self._configured = False
            raise PolicyServerError(f"LeRobot policy server {self.address}: GetActions returned no actions for "
                                    f"observation #{timestep} (inference failed or the policy is not loaded; see "
                                    f"the server's log)")
        try:
            timed = load_timed_actions(reply.data)
        except ForbiddenPickleError as exc:
            raise PolicyServerError(f"LeRobot policy server {self.address}: GetActions payload refused: {exc}") \
                from None
        except _MALFORMED as exc:
            text = str(exc).splitlines()[0][:200] if str(exc) else ""
            raise PolicyServerError(f"LeRobot policy server {self.address}: GetActions payload is not a pickled "
                                    f"TimedAction list ({type(exc).__name__}: {text})") from None
        return self._chunk(timed, timestep, observation)

    def _chunk(self, timed, timestep: int, observation: Observation) -> ActionChunk:
        meta = self.metadata
        if not timed:
            raise BadChunkError(f"policy {meta.name}: LeRobot server sent an empty action list", "shape")
        steps = [a.timestep for a in timed]
        if steps != list(range(timestep, timestep + len(timed))):
            raise BadChunkError(f"policy {meta.name}: LeRobot server answered timesteps {steps[0]}..{steps[-1]}, "
                                f"expected the chunk for observation #{timestep}", "stale")
        try:
            actions = np.stack([np.asarray(a.action, dtype=np.float64) for a in timed])
        except (TypeError, ValueError) as exc:
            raise BadChunkError(f"policy {meta.name}: LeRobot actions are not numeric vectors of one length "
                                f"({exc})", "shape") from None
        info = {"server_dt": timed[1].timestamp - timed[0].timestamp} if len(timed) > 1 else {}
        return checked_chunk(meta, actions, observation.stamp, info, transform=self.transform)


def check_address(address: str, source, field: str = "address") -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "/" in address:
        raise ConfigError(source, field, f"expected host:port (LeRobot's default is 127.0.0.1:8080), got {address!r}")


def from_config(cfg: Section, robot=None) -> LeRobotAsyncPolicy:
    """YAML keys: name, address (host:port), policy_type, pretrained_name_or_path (a path or hub id the *server*
    can load), device (the server's), horizon (actions_per_chunk), rate_hz, cameras (the policy's image key, without
    "observation.images." -> robot camera), state (parts, see preprocess.parse_state), image_size (omit to send
    camera frames unresized; the server resizes to the policy's input), resize, rename_map, actions (clip /
    binarize / scale), action_space, connect_timeout_s, load_timeout_s, infer_timeout_s."""
    cfg.unknown_keys({"backend", "name", "address", "policy_type", "pretrained_name_or_path", "device", "horizon",
                      "rate_hz", "cameras", "state", "image_size", "resize", "rename_map", "actions", "action_space",
                      "connect_timeout_s", "load_timeout_s", "infer_timeout_s"})
    address = cfg.str("address")
    check_address(address, cfg.source)
    cameras_section = cfg.section("cameras")
    cameras = [(key, cameras_section.str(key)) for key in cameras_section.data]
    for key, camera in cameras:
        check_cameras([camera], robot, cfg.source, f"cameras.{key}")
    state = parse_state(cfg.sections("state"), robot)
    try:
        state_names(state)
    except ValueError as exc:
        raise cfg.error("state", str(exc)) from None
    rename = cfg.section("rename_map", {})
    action_space = parse_action_space(cfg.section("action_space"), robot)
    return LeRobotAsyncPolicy(
        address, name=cfg.str("name"), policy_type=cfg.choice("policy_type", POLICY_TYPES),
        pretrained_name_or_path=cfg.str("pretrained_name_or_path"), cameras=cameras, state=state,
        action_space=action_space, horizon=positive_int(cfg, "horizon"), rate_hz=cfg.float("rate_hz", positive=True),
        device=cfg.str("device", "cpu"), rename_map={key: rename.str(key) for key in rename.data},
        image_size=parse_image_size(cfg), resize=cfg.choice("resize", RESIZE_MODES, "stretch"),
        transform=parse_action_transform(cfg.section("actions", {}), action_space.dim),
        connect_timeout_s=cfg.float("connect_timeout_s", 5.0, positive=True),
        load_timeout_s=cfg.float("load_timeout_s", 120.0, positive=True),
        infer_timeout_s=cfg.float("infer_timeout_s", 10.0, positive=True),
    )
