"""LeRobot 0.4.x checkpoints (`pretrained_model/` directories) run natively: ACT and Diffusion.

Why native instead of importing LeRobot: the robot PC should not carry LeRobot's hub / wandb / datasets stack, and
it cannot on our torch: lerobot 0.4.4 (the newest for Python 3.11) installs beside torch 2.13 only with --no-deps
plus a dozen pinned extras, it imports torchvision at module level, and the only torchvision for torch 2.13 (0.28.0)
is a CUDA build whose `_C.so` fails on CPU torch ("operator torchvision::nms does not exist"). So the networks are
re-written here with LeRobot's parameter names (lerobot_act.py, lerobot_diffusion.py, lerobot_resnet.py) and the
normalisation is read from the saved processor stats (lerobot_checkpoint.py). test/test_policies_lerobot.py checks
that we reproduce, within 1e-4, the actions real LeRobot 0.4.4 computed from the same inputs on checkpoints it wrote
(test/data/lerobot/, made by test/data/lerobot/make_checkpoints.py).

The policy YAML maps every input feature of the checkpoint to the robot, in the openpi request vocabulary:
    features:
      observation.images.top: {from: image, camera: cam_high}      # VISUAL features
      observation.state: {from: state, parts: [{arm: left}, ...]}   # STATE / ENV features (preprocess.parse_state)
and the action feature to `action_space:`. Images are resized (`resize:`) to the feature's [3, H, W] and scaled to
[0, 1] floats, as LeRobot's environments feed them.

Chunks and the executor: LeRobot runs `n_action_steps` of each chunk before inferring again, or, with ACT's
`temporal_ensemble_coeff`, infers every step and averages overlapping chunks with weights exp(-coeff * i), i = 0
the oldest. Both are our executor's modes: the policy's metadata asks for `sync` with execute_steps =
n_action_steps, or `ensemble` with that coefficient (explicit executor settings of the node still win). ACT chunks
are chunk_size long. Diffusion answers the `horizon` actions from its oldest observation step, of which the first
n_obs_steps - 1 lie in the past: the chunk starts at the current one (horizon - n_obs_steps + 1 actions).

Observation history (Diffusion, n_obs_steps > 1): the policy keeps the frames it is given (`observe`, and every
`infer`), stamped, and conditions on the ones nearest to stamp - k / rate_hz, k = n_obs_steps - 1 .. 0. A slot with
no frame within half a step is filled with the next newer frame, as LeRobot fills its queue at the start of an
episode by repeating the first observation; chunk.info["history_filled"] counts such slots.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import torch

from vla_ros.core.config import Section
from vla_ros.core.contract import identity_from_state
from vla_ros.core.errors import ConfigError
from vla_ros.core.policies.lerobot_act import VAE_PREFIX, LeRobotACT
from vla_ros.core.policies.lerobot_checkpoint import Checkpoint, Feature, load_weights, read_checkpoint
from vla_ros.core.policies.lerobot_diffusion import BETA_SCHEDULES, PREDICTIONS, SCHEDULERS, LeRobotDiffusion, \
    Sampler
from vla_ros.core.policies.lerobot_resnet import DEPTHS
from vla_ros.core.policies.openpi_ws import ImageField, StateField, parse_request
from vla_ros.core.policies.preprocess import RESIZE_MODES, camera_image, prepare_image, state_vector
from vla_ros.core.policies.spec import checked_chunk, parse_action_space
from vla_ros.core.policies.torch_local import resolve_device
from vla_ros.core.types import ActionChunk, ActionSpace, Observation, PolicyMetadata

POLICY_TYPES = ("act", "diffusion")
STATE_KEY, ENV_KEY = "observation.state", "observation.environment_state"


@dataclass(frozen=True)
class Encoded:
    """One observation as the network takes it: normalised tensors, batch dimension 1."""

    stamp: float
    state: torch.Tensor | None  # (1, Ds)
    env_state: torch.Tensor | None  # (1, De)
    images: tuple[torch.Tensor, ...]  # per camera (1, 3, H, W)


class LeRobotPolicy:
    """A LeRobot ACT or Diffusion checkpoint behind the Policy interface. Thread-safe: `observe` may run on the
    control thread while `infer` runs in the policy worker."""

    # what the action-contract self-test (core.contract) cannot exercise
    contract_notes = ("not checked: the network and the checkpoint's normalisation statistics (the identity replaces "
                      "the network)",)

    def __init__(self, checkpoint: Checkpoint, network: torch.nn.Module, *, name: str, sources: dict[str, Any],
                 action_space: ActionSpace, rate_hz: float, device: torch.device, resize: str,
                 seed: int | None = None):
        self.checkpoint, self.network, self.device, self.resize = checkpoint, network.to(device).eval(), device, resize
        self.kind = checkpoint.policy_type
        config = checkpoint.config
        self.cameras = [f.key for f in checkpoint.features_of("VISUAL")]
        self.sources = sources  # feature key -> ImageField | StateField
        self.dt = 1.0 / rate_hz
        if self.kind == "act":
            horizon = int(config.float("chunk_size"))
            self.n_obs_steps = 1
            coeff = config.data.get("temporal_ensemble_coeff")
            executor = {"mode": "ensemble", "ensemble_coeff": float(coeff)} if coeff is not None else \
                {"mode": "sync", "execute_steps": int(config.float("n_action_steps"))}
        else:
            self.n_obs_steps = int(config.float("n_obs_steps"))
            horizon = int(config.float("horizon")) - self.n_obs_steps + 1
            executor = {"mode": "sync", "execute_steps": int(config.float("n_action_steps"))}
        image_hw = checkpoint.inputs[self.cameras[0]].shape[1:] if self.cameras else None
        self.metadata = PolicyMetadata(
            name=name, action_space=action_space, horizon=horizon, rate_hz=rate_hz,
            cameras=tuple(sources[key].camera for key in self.cameras), image_size=image_hw,
            normalization={"lerobot_checkpoint": str(checkpoint.directory)}, executor=executor,
        )
        self.generator = torch.Generator(device=device)
        if seed is None:
            self.generator.seed()  # non-deterministic, and leaves torch's global generator alone
        else:
            self.generator.manual_seed(seed)
        self._history: deque[Encoded] = deque(maxlen=max(4 * self.n_obs_steps, 8))
        self._lock = threading.Lock()

    # -- observations -----------------------------------------------------------------------------------------------
    def encode(self, observation: Observation) -> Encoded:
        name, norm = self.metadata.name, self.checkpoint.normalize_inputs
        images = []
        for key in self.cameras:
            feature = self.checkpoint.inputs[key]
            pixels = prepare_image(camera_image(observation, self.sources[key].camera, name), feature.shape[1:],
                                   self.resize, "chw", True)
            images.append(norm.normalize(key, torch.from_numpy(pixels).unsqueeze(0)).to(self.device))

        def vector(key: str) -> torch.Tensor | None:
            if key not in self.sources:
                return None
            values = torch.from_numpy(state_vector(self.sources[key].columns, observation, name)).unsqueeze(0)
            return norm.normalize(key, values).to(self.device)

        return Encoded(float(observation.stamp), vector(STATE_KEY), vector(ENV_KEY), tuple(images))

    def identity_chunk(self, observation: Observation, identity) -> ActionChunk:
        """The action-contract self-test (core.contract): the identity answers from the state features."""
        states = {key: (source.columns, state_vector(source.columns, observation, self.metadata.name))
                  for key, source in self.sources.items() if isinstance(source, StateField)}
        return identity_from_state(self, states, observation, identity)

    def observe(self, observation: Observation) -> None:
        """Remember a frame for the observation history (only Diffusion with n_obs_steps > 1 needs it)."""
        if self.n_obs_steps > 1:
            encoded = self.encode(observation)
            with self._lock:
                self._remember(encoded)

    def _remember(self, encoded: Encoded) -> None:
        if not self._history or encoded.stamp > self._history[-1].stamp:
            self._history.append(encoded)

    def _steps(self, current: Encoded) -> tuple[list[Encoded], int]:
        """The n_obs_steps frames for `current`, oldest first, and how many slots were filled by repetition."""
        with self._lock:
            self._remember(current)
            history = [e for e in self._history if e.stamp <= current.stamp]
        steps, filled = [current], 0
        for k in range(1, self.n_obs_steps):
            target = current.stamp - k * self.dt
            best = min(history, key=lambda e: abs(e.stamp - target))
            if abs(best.stamp - target) > 0.5 * self.dt:
                best, filled = steps[-1], filled + 1
            steps.append(best)
        return steps[::-1], filled

    # -- inference --------------------------------------------------------------------------------------------------
    def infer(self, observation: Observation) -> ActionChunk:
        current = self.encode(observation)
        info: dict[str, object] = {}
        with torch.no_grad():
            if self.kind == "act":
                normalised = self.network(current.state, current.env_state, list(current.images))
            else:
                steps, info["history_filled"] = self._steps(current)
                normalised = self.sample(steps)[:, self.n_obs_steps - 1:]
            actions = self.checkpoint.unnormalize_outputs.unnormalize("action", normalised.cpu())
        return checked_chunk(self.metadata, actions[0].numpy(), observation.stamp, info)

    def sample(self, steps: list[Encoded], noise: torch.Tensor | None = None) -> torch.Tensor:
        """Diffusion: (1, horizon, action_dim) normalised actions from the per-step encodings, oldest first."""
        def stacked(values: list[torch.Tensor | None]) -> torch.Tensor | None:
            return None if values[0] is None else torch.stack(values, dim=1)

        images = None
        if self.cameras:
            images = torch.stack([torch.stack(e.images, dim=1) for e in steps], dim=1)  # (1, S, N, 3, H, W)
        cond = self.network.global_condition(stacked([e.state for e in steps]), stacked([e.env_state for e in steps]),
                                             images)
        return self.network.sample(cond, noise=noise, generator=self.generator)


# --- building from a checkpoint ---------------------------------------------------------------------------------------


def _ints(config: Section, key: str) -> tuple[int, ...] | None:
    if not config.has(key):
        return None
    values = config.floats(key)
    if any(v < 1 or v != int(v) for v in values):
        raise config.error(key, f"expected positive whole numbers, got {values}")
    return tuple(int(v) for v in values)


def _whole(config: Section, key: str) -> int:
    value = config.float(key, positive=True)
    if value != int(value):
        raise config.error(key, f"expected a whole number, got {value}")
    return int(value)


def _backbone(config: Section) -> str:
    return config.choice("vision_backbone", tuple(DEPTHS))


def build_act(checkpoint: Checkpoint) -> LeRobotACT:
    config = checkpoint.config
    if config.data.get("replace_final_stride_with_dilation"):
        raise config.error("replace_final_stride_with_dilation", "not supported (torchvision's BasicBlock ResNets "
                                                                  "refuse dilation too)")
    cameras = checkpoint.features_of("VISUAL")
    state, env = checkpoint.inputs.get(STATE_KEY), checkpoint.inputs.get(ENV_KEY)
    if not cameras and env is None:
        raise config.error("input_features", "ACT needs an observation.images.* or observation.environment_state")
    chunk, steps = _whole(config, "chunk_size"), _whole(config, "n_action_steps")
    if steps > chunk:
        raise config.error("n_action_steps", f"{steps} exceeds chunk_size {chunk}")
    if config.data.get("temporal_ensemble_coeff") is not None:
        config.float("temporal_ensemble_coeff")
    if _whole(config, "dim_model") % _whole(config, "n_heads"):
        raise config.error("n_heads", "must divide dim_model")
    network = LeRobotACT(
        state_dim=state.shape[0] if state else None, env_dim=env.shape[0] if env else None, n_cameras=len(cameras),
        action_dim=checkpoint.outputs["action"].shape[0], chunk_size=chunk, dim_model=_whole(config, "dim_model"),
        n_heads=_whole(config, "n_heads"), dim_feedforward=_whole(config, "dim_feedforward"),
        feedforward_activation=config.choice("feedforward_activation", ("relu", "gelu", "glu")),
        n_encoder_layers=_whole(config, "n_encoder_layers"), n_decoder_layers=_whole(config, "n_decoder_layers"),
        pre_norm=bool(config.data.get("pre_norm", False)), latent_dim=_whole(config, "latent_dim"),
        vision_backbone=_backbone(config) if cameras else "resnet18",
    )
    # The CVAE encoder only shapes the latent during training; at inference the latent is zero.
    load_weights(network, checkpoint.weights, checkpoint.directory / "model.safetensors", "model.", (VAE_PREFIX,))
    return network


def build_diffusion(checkpoint: Checkpoint) -> LeRobotDiffusion:
    config = checkpoint.config
    cameras = checkpoint.features_of("VISUAL")
    state, env = checkpoint.inputs.get(STATE_KEY), checkpoint.inputs.get(ENV_KEY)
    if state is None:
        raise config.error("input_features", "Diffusion needs observation.state")
    if not cameras and env is None:
        raise config.error("input_features", "Diffusion needs an observation.images.* or observation.environment_state")
    if len({f.shape for f in cameras}) > 1:
        raise config.error("input_features", "every camera must have the same shape (as LeRobot requires)")
    horizon, n_obs, steps = _whole(config, "horizon"), _whole(config, "n_obs_steps"), _whole(config, "n_action_steps")
    down_dims = _ints(config, "down_dims")
    if horizon % 2 ** len(down_dims):
        raise config.error("horizon", f"{horizon} is not a multiple of 2^len(down_dims) = {2 ** len(down_dims)}")
    if steps > horizon - n_obs + 1:
        raise config.error("n_action_steps", f"{steps} exceeds horizon - n_obs_steps + 1 = {horizon - n_obs + 1}")
    resize, crop = _ints(config, "resize_shape"), _ints(config, "crop_shape")
    if resize is not None:  # LeRobot derives the crop from resize_shape and crop_ratio
        ratio = config.float("crop_ratio", 1.0)
        crop = (int(resize[0] * ratio), int(resize[1] * ratio)) if ratio < 1.0 else None
    image_hw = cameras[0].shape[1:] if cameras else None
    if crop is not None and image_hw is not None and (crop[0] > (resize or image_hw)[0] or
                                                       crop[1] > (resize or image_hw)[1]):
        raise config.error("crop_shape", f"{list(crop)} does not fit the {list(resize or image_hw)} image")
    train_steps = _whole(config, "num_train_timesteps")
    inference_steps = _whole(config, "num_inference_steps") if config.has("num_inference_steps") else train_steps
    if inference_steps > train_steps:
        raise config.error("num_inference_steps", f"{inference_steps} exceeds num_train_timesteps {train_steps}")
    sampler = Sampler(
        config.choice("noise_scheduler_type", SCHEDULERS), train_steps, inference_steps,
        config.choice("beta_schedule", BETA_SCHEDULES), config.float("beta_start"), config.float("beta_end"),
        config.choice("prediction_type", PREDICTIONS), bool(config.raw("clip_sample", True)),
        config.float("clip_sample_range", 1.0),
    )
    if cameras and not config.raw("use_group_norm", True):
        raise config.error("use_group_norm", "only the GroupNorm backbone is supported (LeRobot's default)")
    network = LeRobotDiffusion(
        state_dim=state.shape[0], env_dim=env.shape[0] if env else None, n_cameras=len(cameras), image_hw=image_hw,
        action_dim=checkpoint.outputs["action"].shape[0], horizon=horizon, n_obs_steps=n_obs,
        separate_encoders=bool(config.data.get("use_separate_rgb_encoder_per_camera", False)), resize=resize,
        crop=crop, vision_backbone=_backbone(config) if cameras else "resnet18",
        keypoints=_whole(config, "spatial_softmax_num_keypoints"), down_dims=down_dims,
        kernel_size=_whole(config, "kernel_size"), n_groups=_whole(config, "n_groups"),
        step_embed_dim=_whole(config, "diffusion_step_embed_dim"),
        film_scale=bool(config.raw("use_film_scale_modulation", True)), sampler=sampler,
    )
    load_weights(network, checkpoint.weights, checkpoint.directory / "model.safetensors", "diffusion.")
    return network


def parse_features(cfg: Section, checkpoint: Checkpoint, robot) -> dict[str, Any]:
    """The `features:` mapping, checked against the checkpoint's input features (every one mapped, kinds and sizes
    matching)."""
    section = cfg.section("features")
    sources = parse_request(section, robot)
    for key, source in sources.items():
        feature: Feature | None = checkpoint.inputs.get(key)
        if feature is None:
            raise section.error(key, f"not an input feature of the checkpoint (config.json has: "
                                     f"{', '.join(checkpoint.inputs)})")
        if feature.type == "VISUAL":
            if not isinstance(source, ImageField):
                raise section.error(key, "a VISUAL feature: map it with {from: image, camera: NAME}")
        elif feature.type in ("STATE", "ENV"):
            if not isinstance(source, StateField):
                raise section.error(key, f"a {feature.type} feature: map it with {{from: state, parts: [...]}}")
            if len(source.columns) != feature.shape[0]:
                raise section.error(key, f"the parts give {len(source.columns)} values, the checkpoint's {key} has "
                                         f"{feature.shape[0]}")
        else:
            raise section.error(key, f"feature type {feature.type} is not supported")
    for key, feature in checkpoint.inputs.items():
        if key not in sources:
            how = "{from: image, camera: NAME}" if feature.type == "VISUAL" else "{from: state, parts: [...]}"
            raise section.error(key, f"input feature {key} ({feature.type}, shape {list(feature.shape)}) of the "
                                     f"checkpoint is not mapped to the robot; map it with {how}")
    return sources


def from_config(cfg: Section, robot=None) -> LeRobotPolicy:
    """YAML keys: name, checkpoint (the pretrained_model directory), features, action_space, rate_hz (the
    dataset's fps), device, resize (stretch | pad), seed (Diffusion sampling noise; default: random)."""
    cfg.unknown_keys({"backend", "name", "checkpoint", "features", "action_space", "rate_hz", "device", "resize",
                      "seed"})
    device = resolve_device(cfg.str("device", "cpu"), cfg.source)
    checkpoint = read_checkpoint(cfg.path("checkpoint"))
    if checkpoint.policy_type not in POLICY_TYPES:
        raise ConfigError(checkpoint.directory / "config.json", "type",
                          f"policy type {checkpoint.policy_type!r} is not supported natively (supported: "
                          f"{', '.join(POLICY_TYPES)})")
    sources = parse_features(cfg, checkpoint, robot)
    action_space = parse_action_space(cfg.section("action_space"), robot)
    action_dim = checkpoint.outputs["action"].shape[0]
    if action_space.dim != action_dim:
        raise cfg.error("action_space", f"has {action_space.dim} columns, the checkpoint's action has {action_dim}")
    network = build_act(checkpoint) if checkpoint.policy_type == "act" else build_diffusion(checkpoint)
    seed = None
    if cfg.has("seed"):
        seed = cfg.float("seed")
        if seed != int(seed) or seed < 0:
            raise cfg.error("seed", f"expected a whole number >= 0, got {seed}")
        seed = int(seed)
    return LeRobotPolicy(checkpoint, network, name=cfg.str("name"), sources=sources, action_space=action_space,
                         rate_hz=cfg.float("rate_hz", positive=True), device=device,
                         resize=cfg.choice("resize", RESIZE_MODES, "stretch"), seed=seed)
