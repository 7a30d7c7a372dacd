"""LeRobot's Diffusion Policy inference network and its DDPM / DDIM samplers, written here so `model.safetensors`
loads by parameter name (see lerobot.py for why we do not import LeRobot, torchvision or diffusers).

Parameter layout (under `diffusion.`), as LeRobot 0.4's DiffusionPolicy saves it:
    rgb_encoder.backbone.0 .. 7.*     ResNet trunk, every BatchNorm replaced by GroupNorm(C // 16, C), numbered as
                                      nn.Sequential(conv1, bn1, relu, maxpool, layer1..4) (lerobot_resnet.py)
    rgb_encoder.pool.{nets.*, pos_grid}   spatial softmax: 1x1 conv to K keypoints, expected (x, y) per keypoint
    rgb_encoder.out.*                 Linear(2K, 2K) + ReLU
    (rgb_encoder.N.* for use_separate_rgb_encoder_per_camera)
    unet.diffusion_step_encoder.{1,3}.*   sinusoidal step embedding -> Linear -> Mish -> Linear
    unet.{down,mid,up}_modules.*, unet.final_conv.*   1-D conditional U-Net with FiLM
Conditioning per observation step: [state, image features of every camera, env_state], flattened over n_obs_steps.

Samplers follow diffusers' DDPMScheduler / DDIMScheduler with the arguments LeRobot passes (timestep_spacing
"leading", steps_offset 0, DDIM: set_alpha_to_one, eta 0; DDPM: variance "fixed_small"), in float32 tensors as
they compute. Randomness: the initial noise is drawn first as randn(B, horizon, action_dim) and DDPM then draws one
randn of the same shape per step with t > 0, all from the given generator: seeding a torch.Generator with S
reproduces LeRobot run after torch.manual_seed(S). The initial noise can also be passed in (`noise=`), as LeRobot's
`select_action(batch, noise=...)` allows.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from vla_ros.core.policies.lerobot_resnet import ResNetTrunk, as_sequential, feature_size, group_norm

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
SCHEDULERS = ("DDPM", "DDIM")
PREDICTIONS = ("epsilon", "sample")


class SpatialSoftmax(nn.Module):
    """(B, C, H, W) -> (B, K, 2): a 1x1 conv to K maps, softmax over pixels, expected (x, y) in [-1, 1]."""

    def __init__(self, channels: int, height: int, width: int, keypoints: int):
        super().__init__()
        self.nets = nn.Conv2d(channels, keypoints, 1)
        self.keypoints = keypoints
        # numpy's linspace, as LeRobot builds it (torch.linspace rounds differently in the last bit)
        xs, ys = np.meshgrid(np.linspace(-1.0, 1.0, width), np.linspace(-1.0, 1.0, height))
        grid = np.stack([xs.reshape(-1), ys.reshape(-1)], axis=1)
        self.register_buffer("pos_grid", torch.from_numpy(grid).float())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        maps = self.nets(features)
        attention = F.softmax(maps.reshape(-1, maps.shape[-2] * maps.shape[-1]), dim=-1)
        return (attention @ self.pos_grid).view(-1, self.keypoints, 2)


def center_crop_box(height: int, width: int, crop: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner of a centred crop, rounded as torchvision's center_crop rounds it."""
    return int(round((height - crop[0]) / 2.0)), int(round((width - crop[1]) / 2.0))


class RgbEncoder(nn.Module):
    """One camera image (B, 3, H, W), already normalised -> (B, 2K) features: resize, centre crop, trunk, pool."""

    def __init__(self, image_hw: tuple[int, int], resize: tuple[int, int] | None, crop: tuple[int, int] | None,
                 vision_backbone: str, keypoints: int):
        super().__init__()
        self.resize_to, self.crop = resize, crop
        self.backbone = as_sequential(ResNetTrunk(vision_backbone, group_norm))
        size = crop or resize or image_hw
        self.pool = SpatialSoftmax(ResNetTrunk.out_channels, *feature_size(*size), keypoints)
        self.out = nn.Linear(keypoints * 2, keypoints * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resize_to is not None and tuple(x.shape[-2:]) != tuple(self.resize_to):
            # torchvision's Resize on tensors: bilinear, antialiased, half-pixel centres
            x = F.interpolate(x, size=self.resize_to, mode="bilinear", align_corners=False, antialias=True)
        if self.crop is not None:
            top, left = center_crop_box(x.shape[-2], x.shape[-1], self.crop)
            x = x[..., top : top + self.crop[0], left : left + self.crop[1]]
        return torch.relu(self.out(torch.flatten(self.pool(self.backbone(x)), start_dim=1)))


class StepEmbedding(nn.Module):
    """Sinusoidal embedding of the diffusion step (first half sin, second half cos)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        frequencies = torch.exp(torch.arange(half, device=t.device) * -(math.log(10000) / (half - 1)))
        angles = t.unsqueeze(-1) * frequencies.unsqueeze(0)
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


class Conv1dBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, n_groups: int = 8):
        super().__init__()
        self.block = nn.Sequential(nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
                                   nn.GroupNorm(n_groups, out_channels), nn.Mish())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class ResidualBlock1d(nn.Module):
    """Two conv blocks with FiLM conditioning (per-channel scale and bias, or bias only) between them."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int, kernel_size: int, n_groups: int,
                 film_scale: bool):
        super().__init__()
        self.out_channels, self.film_scale = out_channels, film_scale
        self.conv1 = Conv1dBlock(in_channels, out_channels, kernel_size, n_groups)
        self.cond_encoder = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, out_channels * (2 if film_scale else 1)))
        self.conv2 = Conv1dBlock(out_channels, out_channels, kernel_size, n_groups)
        self.residual_conv = nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        film = self.cond_encoder(cond).unsqueeze(-1)
        if self.film_scale:
            out = film[:, : self.out_channels] * out + film[:, self.out_channels :]
        else:
            out = out + film
        return self.conv2(out) + self.residual_conv(x)


class ConditionalUnet1d(nn.Module):
    def __init__(self, action_dim: int, global_cond_dim: int, down_dims: tuple[int, ...], kernel_size: int,
                 n_groups: int, step_embed_dim: int, film_scale: bool):
        super().__init__()
        self.diffusion_step_encoder = nn.Sequential(
            StepEmbedding(step_embed_dim), nn.Linear(step_embed_dim, step_embed_dim * 4), nn.Mish(),
            nn.Linear(step_embed_dim * 4, step_embed_dim),
        )
        block = dict(cond_dim=step_embed_dim + global_cond_dim, kernel_size=kernel_size, n_groups=n_groups,
                     film_scale=film_scale)
        in_out = [(action_dim, down_dims[0]), *zip(down_dims[:-1], down_dims[1:])]
        self.down_modules = nn.ModuleList()
        for i, (dim_in, dim_out) in enumerate(in_out):
            last = i == len(in_out) - 1
            self.down_modules.append(nn.ModuleList([
                ResidualBlock1d(dim_in, dim_out, **block), ResidualBlock1d(dim_out, dim_out, **block),
                nn.Identity() if last else nn.Conv1d(dim_out, dim_out, 3, 2, 1),
            ]))
        self.mid_modules = nn.ModuleList([ResidualBlock1d(down_dims[-1], down_dims[-1], **block) for _ in range(2)])
        self.up_modules = nn.ModuleList()
        for dim_out, dim_in in reversed(in_out[1:]):  # every decoder stage upsamples
            self.up_modules.append(nn.ModuleList([
                ResidualBlock1d(dim_in * 2, dim_out, **block), ResidualBlock1d(dim_out, dim_out, **block),
                nn.ConvTranspose1d(dim_out, dim_out, 4, 2, 1),
            ]))
        self.final_conv = nn.Sequential(Conv1dBlock(down_dims[0], down_dims[0], kernel_size),
                                        nn.Conv1d(down_dims[0], action_dim, 1))

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, global_cond: torch.Tensor) -> torch.Tensor:
        """x (B, T, action_dim), timestep (B,), global_cond (B, D) -> (B, T, action_dim)."""
        x = x.transpose(1, 2)
        cond = torch.cat([self.diffusion_step_encoder(timestep), global_cond], dim=-1)
        skips = []
        for resnet, resnet2, downsample in self.down_modules:
            x = resnet2(resnet(x, cond), cond)
            skips.append(x)
            x = downsample(x)
        for module in self.mid_modules:
            x = module(x, cond)
        for resnet, resnet2, upsample in self.up_modules:
            x = torch.cat((x, skips.pop()), dim=1)
            x = upsample(resnet2(resnet(x, cond), cond))
        return self.final_conv(x).transpose(1, 2)


def betas(schedule: str, steps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, steps, dtype=torch.float32)
    if schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float32) ** 2
    # squaredcos_cap_v2: the cosine schedule of Nichol & Dhariwal, each beta capped at 0.999

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    return torch.tensor([min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), 0.999) for i in range(steps)],
                        dtype=torch.float32)


class Sampler:
    """Reverse diffusion with `inference_steps` evenly spaced ("leading") steps of a `train_steps` schedule."""

    def __init__(self, kind: str, train_steps: int, inference_steps: int, beta_schedule: str, beta_start: float,
                 beta_end: float, prediction: str, clip_sample: bool, clip_range: float):
        self.kind, self.prediction, self.clip_sample, self.clip_range = kind, prediction, clip_sample, clip_range
        self.alphas_cumprod = torch.cumprod(1.0 - betas(beta_schedule, train_steps, beta_start, beta_end), dim=0)
        ratio = train_steps // inference_steps
        self.timesteps = [int(t) for t in (np.arange(inference_steps) * ratio)[::-1]]
        self.ratio = ratio
        self.one = torch.tensor(1.0)

    def step(self, model_output: torch.Tensor, index: int, sample: torch.Tensor,
             generator: torch.Generator | None) -> torch.Tensor:
        t = self.timesteps[index]
        if self.kind == "DDIM":
            prev = t - self.ratio
        else:
            prev = self.timesteps[index + 1] if index + 1 < len(self.timesteps) else -1
        alpha_t = self.alphas_cumprod[t]
        alpha_prev = self.alphas_cumprod[prev] if prev >= 0 else self.one
        beta_t = 1 - alpha_t
        if self.prediction == "epsilon":
            original = (sample - beta_t ** (0.5) * model_output) / alpha_t ** (0.5)
            epsilon = model_output
        else:
            original = model_output
            epsilon = (sample - alpha_t ** (0.5) * original) / beta_t ** (0.5)
        if self.clip_sample:
            original = original.clamp(-self.clip_range, self.clip_range)
        if self.kind == "DDIM":  # eta = 0: deterministic
            return alpha_prev ** (0.5) * original + (1 - alpha_prev) ** (0.5) * epsilon
        current_alpha = alpha_t / alpha_prev
        current_beta = 1 - current_alpha
        beta_prev = 1 - alpha_prev
        mean = (alpha_prev ** (0.5) * current_beta) / beta_t * original \
            + current_alpha ** (0.5) * beta_prev / beta_t * sample
        if t > 0:
            noise = torch.randn(model_output.shape, generator=generator, dtype=model_output.dtype,
                                device=model_output.device)
            variance = torch.clamp((1 - alpha_prev) / (1 - alpha_t) * current_beta, min=1e-20)
            mean = mean + variance ** 0.5 * noise
        return mean


class LeRobotDiffusion(nn.Module):
    """`diffusion` of LeRobot's DiffusionPolicy (inference path)."""

    def __init__(self, *, state_dim: int, env_dim: int | None, n_cameras: int, image_hw: tuple[int, int] | None,
                 action_dim: int, horizon: int, n_obs_steps: int, separate_encoders: bool,
                 resize: tuple[int, int] | None, crop: tuple[int, int] | None, vision_backbone: str,
                 keypoints: int, down_dims: tuple[int, ...], kernel_size: int, n_groups: int, step_embed_dim: int,
                 film_scale: bool, sampler: Sampler):
        super().__init__()
        self.horizon, self.action_dim, self.n_obs_steps, self.sampler = horizon, action_dim, n_obs_steps, sampler
        self.separate_encoders = separate_encoders
        cond_dim = state_dim + (env_dim or 0)
        if n_cameras:
            def encoder():
                return RgbEncoder(image_hw, resize, crop, vision_backbone, keypoints)

            self.rgb_encoder = nn.ModuleList([encoder() for _ in range(n_cameras)]) if separate_encoders \
                else encoder()
            cond_dim += keypoints * 2 * n_cameras
        self.unet = ConditionalUnet1d(action_dim, cond_dim * n_obs_steps, down_dims, kernel_size, n_groups,
                                      step_embed_dim, film_scale)

    def global_condition(self, state: torch.Tensor, env_state: torch.Tensor | None,
                         images: torch.Tensor | None) -> torch.Tensor:
        """state (B, S, Ds), env_state (B, S, De) or None, images (B, S, N, 3, H, W) or None -> (B, cond)."""
        batch, steps = state.shape[:2]
        parts = [state]
        if images is not None:
            cameras = images.shape[2]
            if self.separate_encoders:
                per_camera = images.permute(2, 0, 1, 3, 4, 5).flatten(1, 2)  # (N, B*S, 3, H, W)
                features = torch.cat([enc(x) for enc, x in zip(self.rgb_encoder, per_camera)])  # (N*B*S, F)
                features = features.view(cameras, batch, steps, -1).permute(1, 2, 0, 3)
            else:
                features = self.rgb_encoder(images.flatten(0, 2)).view(batch, steps, cameras, -1)
            parts.append(features.flatten(2))
        if env_state is not None:
            parts.append(env_state)
        return torch.cat(parts, dim=-1).flatten(start_dim=1)

    def sample(self, global_cond: torch.Tensor, noise: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, horizon, action_dim) normalised actions; noise (B, horizon, action_dim) or drawn from `generator`."""
        batch, device = global_cond.shape[0], global_cond.device
        if noise is None:
            noise = torch.randn((batch, self.horizon, self.action_dim), generator=generator, dtype=torch.float32,
                                device=device)
        sample = noise
        for index, t in enumerate(self.sampler.timesteps):
            output = self.unet(sample, torch.full((batch,), t, dtype=torch.long, device=device), global_cond)
            sample = self.sampler.step(output, index, sample, generator)
        return sample
