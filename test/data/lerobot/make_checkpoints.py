"""Write the small LeRobot checkpoints under test/data/lerobot/ with REAL LeRobot 0.4.4, and the actions LeRobot
computes from fixed inputs (reference.npz per checkpoint), which test/test_policies_lerobot.py must reproduce.

NOT run in CI and not importable from the project: it needs a scratch environment with lerobot==0.4.4 (see
/work/scratch/lerobot-env.READY on the machine that made them, or build one: a venv with
`pip install torch==2.14.1 torchvision==0.29.1`, then `pip install --no-deps lerobot==0.4.4` plus its import-time
dependencies, installed --no-deps by trial). Run:  <that venv>/bin/python test/data/lerobot/make_checkpoints.py OUT

Each checkpoint is what `policy.save_pretrained` + `preprocessor.save_pretrained` + `postprocessor.save_pretrained`
write; references are computed after loading them back with LeRobot's own `from_pretrained`, i.e. from the files.

Size: a ResNet-18 backbone is 11 M parameters (45 MB of float32), too much for the repository. After LeRobot builds
the policy, every parameter (and ACT's frozen batch-norm buffers) is overwritten with a low-entropy pattern: small
integers k = (a * i + b) mod 61 - 30 over the flat index i, times a power of two near the layer's usual init scale,
with a and b drawn per tensor from a seeded RNG. Values are distinct within every 61 consecutive positions and the
pattern differs per tensor, so a wrong name, transposed layout or swapped tensor changes the output, while the
period lets git's zlib compress a 45 MB file to a few hundred kB.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import numpy as np
import torch

from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature
from lerobot.policies.act.configuration_act import ACTConfig
from lerobot.policies.act.modeling_act import ACTPolicy
from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
from lerobot.policies.factory import make_pre_post_processors

PERIOD = 61
ALOHA_HOME = [0.0, -0.96, 1.16, 0.0, -0.3, 0.0]
FRANKA_HOME = [0.0, -0.785398, 0.0, -2.356194, 0.0, 1.570796, 0.785398]


def pattern(shape: torch.Size, rng: np.random.Generator) -> np.ndarray:
    n = int(np.prod(shape)) if len(shape) else 1
    a, b = int(rng.integers(1, PERIOD)), int(rng.integers(0, PERIOD))
    return ((np.arange(n) * a + b) % PERIOD - PERIOD // 2).astype(np.float64).reshape(shape)


def fill_low_entropy(module: torch.nn.Module, seed: int) -> None:
    rng = np.random.default_rng(seed)
    tensors = dict(module.named_parameters())
    # ACT's FrozenBatchNorm2d keeps its affine parameters and statistics as buffers
    tensors.update({k: v for k, v in module.named_buffers() if k.split(".")[-1] in
                    ("weight", "bias", "running_mean", "running_var")})
    for name, tensor in sorted(tensors.items()):
        k = pattern(tensor.shape, rng)
        leaf = name.split(".")[-1]
        if leaf == "running_var":
            values = 1.0 + np.abs(k) * 2.0**-6
        elif tensor.ndim == 1 and leaf == "weight":  # norm scales
            values = 1.0 + k * 2.0**-6
        elif tensor.ndim == 1:  # biases, running means
            values = k * 2.0**-7
        else:  # weights and embeddings: about the default init's spread, 1 / sqrt(fan_in)
            fan_in = tensor[0].numel() if tensor.ndim > 1 else 1
            scale = 2.0 ** round(math.log2(1.0 / math.sqrt(fan_in) / (PERIOD / math.sqrt(12))))
            values = k * scale
        with torch.no_grad():
            tensor.copy_(torch.from_numpy(values).to(tensor.dtype))


def feature(kind: FeatureType, *shape: int) -> PolicyFeature:
    return PolicyFeature(type=kind, shape=tuple(shape))


def image_stats() -> dict:
    return {"mean": np.array([0.45, 0.42, 0.40]).reshape(3, 1, 1), "std": np.array([0.22, 0.25, 0.27]).reshape(3, 1, 1),
            "min": np.zeros((3, 1, 1)), "max": np.ones((3, 1, 1))}


def vector_stats(centre: list[float], spread: list[float]) -> dict:
    centre, spread = np.array(centre), np.array(spread)
    return {"mean": centre, "std": spread, "min": centre - 2 * spread, "max": centre + 2 * spread,
            "q01": centre - 1.8 * spread, "q99": centre + 1.9 * spread}


def aloha_vector() -> list[float]:
    return ALOHA_HOME + [0.5] + ALOHA_HOME + [0.5]


def franka_vector() -> list[float]:
    return FRANKA_HOME + [0.5]


# name -> (policy class, config, stats, seed)
def checkpoints() -> dict:
    aloha_state = vector_stats(aloha_vector(), [0.2] * 6 + [0.3] + [0.2] * 6 + [0.3])
    franka_state = vector_stats(franka_vector(), [0.15] * 7 + [0.3])
    return {
        # bimanual ALOHA, two cameras through the ResNet-18, CVAE weights present (ignored at inference)
        "act_aloha": (ACTPolicy, ACTConfig(
            input_features={"observation.images.cam_high": feature(FeatureType.VISUAL, 3, 48, 64),
                            "observation.images.cam_left_wrist": feature(FeatureType.VISUAL, 3, 48, 64),
                            "observation.state": feature(FeatureType.STATE, 14)},
            output_features={"action": feature(FeatureType.ACTION, 14)},
            chunk_size=10, n_action_steps=10, dim_model=32, n_heads=4, dim_feedforward=64, n_encoder_layers=2,
            n_decoder_layers=1, latent_dim=8, n_vae_encoder_layers=1, use_vae=True,
            pretrained_backbone_weights=None, device="cpu",
        ), {"observation.images.cam_high": image_stats(), "observation.images.cam_left_wrist": image_stats(),
            "observation.state": aloha_state, "action": vector_stats(aloha_vector(), [0.02] * 14)}, 1),
        # state-only ACT: environment state, pre-norm transformer, temporal ensembling, QUANTILES / MIN_MAX modes
        "act_env_ensemble": (ACTPolicy, ACTConfig(
            input_features={"observation.state": feature(FeatureType.STATE, 8),
                            "observation.environment_state": feature(FeatureType.ENV, 5)},
            output_features={"action": feature(FeatureType.ACTION, 8)},
            normalization_mapping={"STATE": NormalizationMode.QUANTILES, "ENV": NormalizationMode.MIN_MAX,
                                   "ACTION": NormalizationMode.MEAN_STD},
            chunk_size=6, n_action_steps=1, temporal_ensemble_coeff=0.05, dim_model=16, n_heads=2,
            dim_feedforward=32, n_encoder_layers=1, n_decoder_layers=1, pre_norm=True, use_vae=False,
            feedforward_activation="gelu", device="cpu",
        ), {"observation.state": franka_state,
            "observation.environment_state": vector_stats([0.1, -0.2, 0.3, 0.0, 0.5], [0.1, 0.2, 0.1, 0.3, 0.2]),
            "action": vector_stats(franka_vector(), [0.02] * 8)}, 2),
        # Franka, one camera, 2 observation steps, DDIM, resize + crop inside the network
        "diffusion_franka": (DiffusionPolicy, DiffusionConfig(
            input_features={"observation.images.primary": feature(FeatureType.VISUAL, 3, 48, 64),
                            "observation.state": feature(FeatureType.STATE, 8)},
            output_features={"action": feature(FeatureType.ACTION, 8)},
            n_obs_steps=2, horizon=16, n_action_steps=8, resize_shape=(40, 52), crop_ratio=0.9,
            down_dims=(16, 32), kernel_size=3, n_groups=4, diffusion_step_embed_dim=16,
            spatial_softmax_num_keypoints=8, noise_scheduler_type="DDIM", num_train_timesteps=50,
            num_inference_steps=5, pretrained_backbone_weights=None, device="cpu",
        ), {"observation.images.primary": image_stats(), "observation.state": franka_state,
            "action": vector_stats(franka_vector(), [0.05] * 8)}, 3),
        # state + environment state, DDPM (stochastic steps), sample prediction, bias-only FiLM, linear betas
        "diffusion_ddpm_env": (DiffusionPolicy, DiffusionConfig(
            input_features={"observation.state": feature(FeatureType.STATE, 8),
                            "observation.environment_state": feature(FeatureType.ENV, 4)},
            output_features={"action": feature(FeatureType.ACTION, 8)},
            n_obs_steps=2, horizon=8, n_action_steps=4, down_dims=(16, 32), kernel_size=3, n_groups=4,
            diffusion_step_embed_dim=16, use_film_scale_modulation=False, noise_scheduler_type="DDPM",
            num_train_timesteps=20, num_inference_steps=4, beta_schedule="linear", prediction_type="sample",
            device="cpu",
        ), {"observation.state": franka_state, "observation.environment_state": vector_stats([0.0] * 4, [1.0] * 4),
            "action": vector_stats(franka_vector(), [0.05] * 8)}, 4),
    }


def inputs(config, stats, steps: int, seed: int) -> dict[str, np.ndarray]:
    """Raw observations as a robot gives them: uint8 HxWx3 frames, float32 vectors about the stats' mean."""
    rng = np.random.default_rng(100 + seed)
    out = {}
    for key, ft in config.input_features.items():
        if ft.type is FeatureType.VISUAL:
            # smooth gradients + noise, so resizing and cropping matter
            h, w = ft.shape[1:]
            yy, xx = np.mgrid[0:h, 0:w]
            frames = []
            for t in range(steps):
                base = np.stack([(xx * (3 + c) + yy * (2 + t) + 40 * c) % 256 for c in range(3)], axis=-1)
                frames.append(np.clip(base + rng.integers(-30, 31, base.shape), 0, 255).astype(np.uint8))
            out[key] = np.stack(frames)
        else:
            spread = rng.normal(0.0, 0.5, (steps, ft.shape[0])) * stats[key]["std"]
            out[key] = (stats[key]["mean"] + spread).astype(np.float32)
    return out


def batch(config, raw: dict[str, np.ndarray], t: int) -> dict[str, torch.Tensor]:
    """One observation as LeRobot's environments hand it to the preprocessor: images float CHW in [0, 1]."""
    out = {}
    for key, ft in config.input_features.items():
        value = torch.from_numpy(raw[key][t])
        out[key] = value.permute(2, 0, 1).float() / 255.0 if ft.type is FeatureType.VISUAL else value
    return out


def write(name: str, policy_class, config, stats, seed: int, out: Path) -> dict:
    directory = out / name / "pretrained_model"
    if directory.exists():
        shutil.rmtree(directory)
    torch.manual_seed(seed)
    policy = policy_class(config)
    fill_low_entropy(policy, seed)
    pre, post = make_pre_post_processors(config, dataset_stats=stats)
    policy.save_pretrained(directory)
    pre.save_pretrained(directory)
    post.save_pretrained(directory)

    # reference actions, from the files as LeRobot loads them
    policy = policy_class.from_pretrained(directory).eval()
    pre, post = make_pre_post_processors(policy.config, pretrained_path=str(directory))
    steps = 16 if policy_class is DiffusionPolicy else 6
    raw = inputs(policy.config, stats, steps, seed)
    result = {f"input/{k}": v for k, v in raw.items()}
    noise_seed = 1000 + seed
    if policy_class is ACTPolicy:
        chunks, selected = [], []
        policy.reset()
        for t in range(steps):
            normalised = pre(batch(policy.config, raw, t))
            chunks.append(post(policy.predict_action_chunk(normalised))[0].numpy())
            selected.append(post(policy.select_action(normalised))[0].numpy())
        result["chunks"] = np.stack(chunks)  # (steps, chunk_size, action_dim): one chunk per observation
        result["select_action"] = np.stack(selected)  # LeRobot's executed action per step (queue or ensemble)
    else:
        # select_action every step: LeRobot infers at steps 0, n_action_steps, ... with the queued history
        policy.reset()
        torch.manual_seed(noise_seed)  # the sampler's only randomness is torch's global generator
        result["select_action"] = np.stack([post(policy.select_action(pre(batch(policy.config, raw, t))))[0].numpy()
                                            for t in range(steps)])
    result["noise_seed"] = np.array(noise_seed)
    np.savez_compressed(out / name / "reference.npz", **result)
    return {name: {k: list(v.shape) for k, v in result.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="directory to write <name>/pretrained_model and <name>/reference.npz")
    parser.add_argument("--only", nargs="*", help="checkpoint names to write (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    summary = {}
    for name, (policy_class, config, stats, seed) in checkpoints().items():
        if args.only and name not in args.only:
            continue
        summary.update(write(name, policy_class, config, stats, seed, args.out))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
