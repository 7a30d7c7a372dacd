"""LeRobot's ACT (Action Chunking Transformer) inference network, written here so its `model.safetensors` loads by
parameter name (see lerobot.py for why we do not import LeRobot).

Parameter layout (under `model.`), as LeRobot 0.4's ACTPolicy saves it:
    backbone.*                                   ResNet-18/34 trunk with frozen batch norm (lerobot_resnet.py)
    encoder.layers.N.{self_attn,linear1,linear2,norm1,norm2}.*   post-norm (or pre_norm) transformer encoder
    decoder.layers.N.{self_attn,multihead_attn,linear1,linear2,norm1..3}.*, decoder.norm.*
    encoder_{robot_state,env_state,latent}_input_proj.*, encoder_img_feat_input_proj.* (1x1 conv)
    encoder_1d_feature_pos_embed.weight, decoder_pos_embed.weight, action_head.*
    vae_encoder*.*                               the CVAE encoder: training only, accepted and ignored
Inference: the latent is zero; encoder tokens are [latent, state?, env_state?, image features per camera]; image
tokens get a fixed 2-D sinusoidal position embedding, the others a learned one; the decoder's queries are zeros
plus learned positions; its output goes through `action_head` to (B, chunk_size, action_dim), still normalised.
Tensors are (sequence, batch, channel) inside the transformer, as in LeRobot, so attention sums in the same order.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from vla_ros.core.policies.lerobot_resnet import ResNetTrunk, frozen_batch_norm

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "glu": F.glu}
VAE_PREFIX = "model.vae_encoder"  # vae_encoder.*, vae_encoder_cls_embed, vae_encoder_*_proj, vae_encoder_pos_enc


def residual(x: torch.Tensor, norm: nn.Module, pre_norm: bool, sublayer) -> torch.Tensor:
    """One transformer sub-layer with its skip connection: x + f(norm(x)) (pre-norm) or norm(x + f(x))."""
    return x + sublayer(norm(x)) if pre_norm else norm(x + sublayer(x))


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, feedforward: int, activation: str, pre_norm: bool):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads)
        self.linear1 = nn.Linear(dim, feedforward)
        self.linear2 = nn.Linear(feedforward, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.activation, self.pre_norm = ACTIVATIONS[activation], pre_norm

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = residual(x, self.norm1, self.pre_norm,
                     lambda y: self.self_attn(y + pos, y + pos, value=y, need_weights=False)[0])
        return residual(x, self.norm2, self.pre_norm, lambda y: self.linear2(self.activation(self.linear1(y))))


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, feedforward: int, activation: str, pre_norm: bool):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads)
        self.multihead_attn = nn.MultiheadAttention(dim, heads)
        self.linear1 = nn.Linear(dim, feedforward)
        self.linear2 = nn.Linear(feedforward, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.activation, self.pre_norm = ACTIVATIONS[activation], pre_norm

    def forward(self, x: torch.Tensor, memory: torch.Tensor, query_pos: torch.Tensor,
                memory_pos: torch.Tensor) -> torch.Tensor:
        x = residual(x, self.norm1, self.pre_norm,
                     lambda y: self.self_attn(y + query_pos, y + query_pos, value=y, need_weights=False)[0])
        x = residual(x, self.norm2, self.pre_norm,
                     lambda y: self.multihead_attn(query=y + query_pos, key=memory + memory_pos, value=memory,
                                                   need_weights=False)[0])
        return residual(x, self.norm3, self.pre_norm, lambda y: self.linear2(self.activation(self.linear1(y))))


class Encoder(nn.Module):
    def __init__(self, layers: int, norm: bool, **kwargs):
        super().__init__()
        self.layers = nn.ModuleList([EncoderLayer(**kwargs) for _ in range(layers)])
        self.norm = nn.LayerNorm(kwargs["dim"]) if norm else nn.Identity()

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, pos)
        return self.norm(x)


class Decoder(nn.Module):
    def __init__(self, layers: int, **kwargs):
        super().__init__()
        self.layers = nn.ModuleList([DecoderLayer(**kwargs) for _ in range(layers)])
        self.norm = nn.LayerNorm(kwargs["dim"])

    def forward(self, x, memory, query_pos, memory_pos):
        for layer in self.layers:
            x = layer(x, memory, query_pos, memory_pos)
        return self.norm(x)


def sinusoidal_2d(dim: int, height: int, width: int) -> torch.Tensor:
    """(dim * 2, H, W) fixed position embedding of a feature map: row then column encodings, each of `dim` channels
    interleaving sin / cos over frequencies 10000^(2 (i // 2) / dim), positions 1..n scaled to (0, 2 pi]
    (DETR's normalised sine embedding, as ACT uses it)."""
    eps, two_pi = 1e-6, 2 * math.pi
    rows = torch.arange(1, height + 1, dtype=torch.float32).view(height, 1).expand(height, width)
    cols = torch.arange(1, width + 1, dtype=torch.float32).view(1, width).expand(height, width)
    rows = rows / (height + eps) * two_pi
    cols = cols / (width + eps) * two_pi
    frequency = 10000 ** (2 * (torch.arange(dim, dtype=torch.float32) // 2) / dim)

    def encode(position: torch.Tensor) -> torch.Tensor:
        angle = position.unsqueeze(-1) / frequency  # (H, W, dim)
        return torch.stack((angle[..., 0::2].sin(), angle[..., 1::2].cos()), dim=-1).flatten(2)

    return torch.cat((encode(rows), encode(cols)), dim=2).permute(2, 0, 1)


class LeRobotACT(nn.Module):
    """`model` of LeRobot's ACTPolicy (inference path). forward(state, env_state, images) -> normalised actions."""

    def __init__(self, *, state_dim: int | None, env_dim: int | None, n_cameras: int, action_dim: int,
                 chunk_size: int, dim_model: int, n_heads: int, dim_feedforward: int, feedforward_activation: str,
                 n_encoder_layers: int, n_decoder_layers: int, pre_norm: bool, latent_dim: int,
                 vision_backbone: str):
        super().__init__()
        self.chunk_size, self.dim_model, self.latent_dim = chunk_size, dim_model, latent_dim
        layer = dict(dim=dim_model, heads=n_heads, feedforward=dim_feedforward, activation=feedforward_activation,
                     pre_norm=pre_norm)
        if n_cameras:
            self.backbone = ResNetTrunk(vision_backbone, frozen_batch_norm)
        self.encoder = Encoder(n_encoder_layers, pre_norm, **layer)
        self.decoder = Decoder(n_decoder_layers, **layer)
        if state_dim:
            self.encoder_robot_state_input_proj = nn.Linear(state_dim, dim_model)
        if env_dim:
            self.encoder_env_state_input_proj = nn.Linear(env_dim, dim_model)
        self.encoder_latent_input_proj = nn.Linear(latent_dim, dim_model)
        if n_cameras:
            self.encoder_img_feat_input_proj = nn.Conv2d(ResNetTrunk.out_channels, dim_model, 1)
        self.encoder_1d_feature_pos_embed = nn.Embedding(1 + bool(state_dim) + bool(env_dim), dim_model)
        self.decoder_pos_embed = nn.Embedding(chunk_size, dim_model)
        self.action_head = nn.Linear(dim_model, action_dim)
        self._image_pos: dict[tuple[int, int], torch.Tensor] = {}

    def forward(self, state: torch.Tensor | None, env_state: torch.Tensor | None,
                images: list[torch.Tensor]) -> torch.Tensor:
        reference = state if state is not None else env_state if env_state is not None else images[0]
        batch = reference.shape[0]
        latent = torch.zeros(batch, self.latent_dim, dtype=torch.float32, device=reference.device)
        tokens = [self.encoder_latent_input_proj(latent)]
        positions = list(self.encoder_1d_feature_pos_embed.weight.unsqueeze(1))
        if state is not None:
            tokens.append(self.encoder_robot_state_input_proj(state))
        if env_state is not None:
            tokens.append(self.encoder_env_state_input_proj(env_state))
        for image in images:
            features = self.backbone(image)
            pos = self._sine_positions(features.shape[-2:]).to(features)
            features = self.encoder_img_feat_input_proj(features)
            tokens.extend(features.flatten(2).permute(2, 0, 1))  # (h w) tokens of (B, C)
            positions.extend(pos.flatten(1).transpose(0, 1).unsqueeze(1))  # (h w) of (1, C)
        tokens, positions = torch.stack(tokens), torch.stack(positions)
        memory = self.encoder(tokens, positions)
        queries = torch.zeros(self.chunk_size, batch, self.dim_model, dtype=positions.dtype, device=positions.device)
        out = self.decoder(queries, memory, self.decoder_pos_embed.weight.unsqueeze(1), positions)
        return self.action_head(out.transpose(0, 1))

    def _sine_positions(self, size) -> torch.Tensor:
        key = (int(size[0]), int(size[1]))
        if key not in self._image_pos:  # fixed per feature-map size: computed once
            self._image_pos[key] = sinusoidal_2d(self.dim_model // 2, *key)
        return self._image_pos[key]
