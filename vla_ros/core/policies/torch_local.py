"""A torch model run in-process, loaded from files: a state dict + ACT config, a TorchScript file, or a
torch.export program; on CPU or CUDA.

Model contract (what TorchScript / torch.export artifacts must follow, as the project's ACT network does):
    forward(images: float32 (1, N_cam, 3, H, W) in [0, 1], RGB, cameras in `cameras` order,
            state: float32 (1, state_dim) raw joint state) -> float32 (1, horizon, action_dim) raw actions.
Normalisation belongs inside the artifact, so the file alone defines what the numbers mean.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from vla_ros.core.config import Section
from vla_ros.core.contract import identity_from_state
from vla_ros.core.errors import ConfigError
from vla_ros.core.policies.act import ACTConfig, ACTNetwork, load_act_config
from vla_ros.core.policies.preprocess import RESIZE_MODES, StateColumn, camera_image, check_cameras, \
    parse_image_size, parse_state, prepare_image, state_vector, state_width
from vla_ros.core.policies.spec import checked_chunk, parse_action_space, positive_int
from vla_ros.core.types import ActionChunk, ActionSpace, BadChunkError, Observation, PolicyMetadata

ARTIFACT_FORMATS = ("state_dict", "torchscript", "export")


def resolve_device(name: str, source: str | Path = "<policy config>", field: str = "device") -> torch.device:
    """"cpu", "cuda" or "cuda:N" -> torch.device; a ConfigError if CUDA is asked for but not available."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(source, field, f"expected cpu, cuda or cuda:N, got {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(source, field, f"expected cpu, cuda or cuda:N, got {name!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(source, field, f"{name!r} requested but torch {torch.__version__} sees no CUDA device")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(source, field, f"{name!r} requested but only {torch.cuda.device_count()} CUDA devices")
    return device


def load_act_state_dict(path: Path, config: ACTConfig, device: torch.device) -> ACTNetwork:
    """An ACTNetwork with weights from `torch.load(path, weights_only=True)`; shapes checked key by key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, "", "model weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise ConfigError(path, "", f"not a torch state dict loadable with weights_only=True: "
                                    f"{str(exc).splitlines()[0]}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(path, "", f"expected a state dict (parameter name -> tensor), got {type(state).__name__}")
    network = ACTNetwork(config)
    expected = network.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise ConfigError(path, key,
                              f"missing from the checkpoint (the ACT config expects shape {tuple(tensor.shape)})")
        if state[key].shape != tensor.shape:
            raise ConfigError(path, key, f"shape {tuple(state[key].shape)} in the checkpoint, but the ACT config "
                                         f"gives {tuple(tensor.shape)}")
    for key in state:
        if key not in expected:
            raise ConfigError(path, key, "in the checkpoint but not a parameter of the configured ACT network")
    network.load_state_dict(state)
    return network.to(device).eval()


def load_torchscript(path: Path, device: torch.device) -> torch.nn.Module:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, "", "TorchScript file not found")
    try:
        module = torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(path, "", f"not a TorchScript archive: {str(exc).splitlines()[0]}") from None
    return module.eval()


def load_exported(path: Path, device: torch.device) -> torch.nn.Module:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, "", "torch.export file not found")
    try:
        program = torch.export.load(str(path))
    except (RuntimeError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise ConfigError(path, "", f"not a torch.export program (.pt2): {str(exc).splitlines()[0]}") from None
    # An exported graph keeps the device it was traced on; moving its module moves parameters and buffers.
    return program.module().to(device)


class TorchLocalPolicy:
    """Runs `module` (see the model contract above) on `device` and returns its chunk."""

    # what the action-contract self-test (core.contract) cannot exercise
    contract_notes = ("not checked: the network and the normalisation inside the artifact (the identity replaces "
                      "the network)",)

    def __init__(self, module: torch.nn.Module, *, name: str, cameras: Sequence[str], image_size: tuple[int, int],
                 state_columns: Sequence[StateColumn], action_space: ActionSpace, horizon: int, rate_hz: float,
                 device: torch.device = torch.device("cpu"), resize: str = "stretch",
                 normalization: dict | None = None):
        self.module, self.device, self.resize = module, device, resize
        self.state_columns = tuple(state_columns)
        self.metadata = PolicyMetadata(
            name=name, action_space=action_space, horizon=horizon, rate_hz=rate_hz, cameras=tuple(cameras),
            image_size=image_size, normalization=normalization,
        )

    def identity_chunk(self, observation: Observation, identity) -> ActionChunk:
        """The action-contract self-test (core.contract): the identity answers from the state vector."""
        states = {"state": (self.state_columns, state_vector(self.state_columns, observation, self.metadata.name))}
        return identity_from_state(self, states, observation, identity)

    def infer(self, observation: Observation) -> ActionChunk:
        meta = self.metadata
        images = np.stack([
            prepare_image(camera_image(observation, camera, meta.name), meta.image_size, self.resize, "chw", True)
            for camera in meta.cameras
        ])
        state = state_vector(self.state_columns, observation, meta.name)
        with torch.no_grad():
            output = self.module(torch.from_numpy(images).unsqueeze(0).to(self.device),
                                 torch.from_numpy(state).unsqueeze(0).to(self.device))
        if not isinstance(output, torch.Tensor) or output.ndim != 3 or output.shape[0] != 1:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise BadChunkError(f"policy {meta.name}: model returned {shape}, expected a tensor (1, "
                                f"{meta.horizon}, {meta.action_space.dim})")
        return checked_chunk(meta, output[0].to("cpu", torch.float64).numpy(), observation.stamp)


def from_config(cfg: Section, robot=None) -> TorchLocalPolicy:
    """YAML keys: name, artifact, format (state_dict | torchscript | export), model (ACT config mapping or JSON /
    YAML path; required for state_dict), cameras / image_size / horizon (when there is no model config), device,
    resize, state (parts, see preprocess.parse_state), action_space, rate_hz."""
    cfg.unknown_keys({"backend", "name", "artifact", "format", "model", "cameras", "image_size", "horizon", "device",
                      "resize", "state", "action_space", "rate_hz"})
    fmt = cfg.choice("format", ARTIFACT_FORMATS)
    device = resolve_device(cfg.str("device", "cpu"), cfg.source)
    act_config = None
    if cfg.has("model"):
        raw = cfg.raw("model")
        act_config = (ACTConfig.from_mapping(raw, f"{cfg.source}: model") if isinstance(raw, dict)
                      else load_act_config(cfg.path("model")))
    elif fmt == "state_dict":
        raise cfg.error("model", "missing (a state dict needs the ACT config it was trained with)")

    cameras = tuple(cfg.strs("cameras")) if cfg.has("cameras") else None
    image_size = parse_image_size(cfg)
    horizon = positive_int(cfg, "horizon") if cfg.has("horizon") else None
    if act_config is not None:
        for key, given, implied in (("cameras", cameras, act_config.cameras),
                                    ("image_size", image_size, act_config.image_size),
                                    ("horizon", horizon, act_config.chunk_size)):
            if given is not None and given != implied:
                raise cfg.error(key, f"{given} disagrees with the ACT model config ({implied})")
        cameras, image_size, horizon = act_config.cameras, act_config.image_size, act_config.chunk_size
    for key, value in (("cameras", cameras), ("image_size", image_size), ("horizon", horizon)):
        if value is None:
            raise cfg.error(key, "missing (required when there is no ACT model config)")
    check_cameras(cameras, robot, cfg.source, "cameras")

    state_columns = parse_state(cfg.sections("state"), robot)
    action_space = parse_action_space(cfg.section("action_space"), robot)
    if act_config is not None:
        if state_width(state_columns) != act_config.state_dim:
            raise cfg.error("state", f"gives {state_width(state_columns)} values, the ACT model config has state_dim "
                                     f"{act_config.state_dim}")
        if action_space.dim != act_config.action_dim:
            raise cfg.error("action_space", f"has {action_space.dim} columns, the ACT model config has action_dim "
                                            f"{act_config.action_dim}")

    artifact = cfg.path("artifact")
    if fmt == "state_dict":
        module = load_act_state_dict(artifact, act_config, device)
    elif fmt == "torchscript":
        module = load_torchscript(artifact, device)
    else:
        module = load_exported(artifact, device)
    return TorchLocalPolicy(
        module, name=cfg.str("name"), cameras=cameras, image_size=image_size, state_columns=state_columns,
        action_space=action_space, horizon=horizon, rate_hz=cfg.float("rate_hz", positive=True), device=device,
        resize=cfg.choice("resize", RESIZE_MODES, "stretch"),
        normalization=act_config.normalization() if act_config is not None else None,
    )
