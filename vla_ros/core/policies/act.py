"""An ACT-class network in plain torch: per-camera conv backbone -> tokens, transformer encoder over
[joint-state token, image tokens], transformer decoder with `chunk_size` learned queries -> (T, D) actions.

This is ACT's inference path (Zhao et al. 2023): the CVAE latent is zero at inference, so the style encoder and
latent token are left out. torchvision has no CPU build here, so the ResNet-like backbone is defined below.
Normalisation statistics live in the config and are applied inside `forward` (non-persistent buffers): the
network maps raw joint state and [0, 1] images to raw actions, and TorchScript / torch.export artifacts made
from it carry the statistics with them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from vla_ros.core.config import Section, load_json, load_yaml
from vla_ros.core.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ACTConfig:
    cameras: tuple[str, ...]
    image_size: tuple[int, int]  # (height, width) of every camera image fed to the network
    state_dim: int
    action_dim: int
    chunk_size: int = 50
    d_model: int = 256
    n_heads: int = 8
    n_encoder_layers: int = 4
    n_decoder_layers: int = 1
    dim_feedforward: int = 1024
    dropout: float = 0.1
    backbone_channels: tuple[int, ...] = (32, 64, 128, 256)  # one residual stage per entry; stages 2.. halve the size
    image_mean: tuple[float, ...] = IMAGENET_MEAN
    image_std: tuple[float, ...] = IMAGENET_STD
    state_mean: tuple[float, ...] | None = None  # None: identity normalisation
    state_std: tuple[float, ...] | None = None
    action_mean: tuple[float, ...] | None = None
    action_std: tuple[float, ...] | None = None

    def check(self, source: str | Path = "<ACT config>") -> "ACTConfig":
        def bad(field: str, problem: str) -> ConfigError:
            return ConfigError(source, field, problem)

        if not self.cameras:
            raise bad("cameras", "expected at least one camera")
        for name in ("state_dim", "action_dim", "chunk_size", "d_model", "n_heads", "n_encoder_layers",
                     "n_decoder_layers", "dim_feedforward"):
            if getattr(self, name) < 1:
                raise bad(name, f"expected a positive integer, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise bad("n_heads", f"d_model {self.d_model} must be divisible by n_heads {self.n_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise bad("dropout", f"expected a value in [0, 1), got {self.dropout}")
        if not self.backbone_channels or min(self.backbone_channels) < 1:
            raise bad("backbone_channels", "expected a non-empty list of positive channel counts")
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            raise bad("image_size", f"expected [height, width] of at least 8 pixels, got {list(self.image_size)}")
        for mean, std, dim, what in (("image_mean", "image_std", 3, "3 channels"),
                                     ("state_mean", "state_std", self.state_dim, f"state_dim {self.state_dim}"),
                                     ("action_mean", "action_std", self.action_dim, f"action_dim {self.action_dim}")):
            m, s = getattr(self, mean), getattr(self, std)
            if (m is None) != (s is None):
                raise bad(mean if m is None else std, f"give both {mean} and {std}, or neither")
            if m is None:
                continue
            if len(m) != dim or len(s) != dim:
                raise bad(mean, f"{mean} / {std} have {len(m)} / {len(s)} values, expected {what}")
            if min(s) <= 0:
                raise bad(std, f"every value must be positive, got {list(s)}")
        return self

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str | Path = "<ACT config>") -> "ACTConfig":
        section = Section(data, source)
        section.unknown_keys({f.name for f in fields(cls)})
        tuple_fields = {"cameras", "image_size", "backbone_channels", "image_mean", "image_std", "state_mean",
                        "state_std", "action_mean", "action_std"}
        kwargs = {}
        for f in fields(cls):
            if f.name not in data or data[f.name] is None:
                continue
            value = data[f.name]
            if f.name == "cameras":
                value = tuple(section.strs("cameras"))
            elif f.name in tuple_fields:
                value = tuple(section.floats(f.name))
                if f.name in ("image_size", "backbone_channels"):
                    if any(v != int(v) for v in value):
                        raise section.error(f.name, f"expected whole numbers, got {list(value)}")
                    value = tuple(int(v) for v in value)
            elif f.name == "dropout":
                value = section.float("dropout")
            else:
                number = section.float(f.name)
                if number != int(number):
                    raise section.error(f.name, f"expected a whole number, got {number}")
                value = int(number)
            kwargs[f.name] = value
        for required in ("cameras", "image_size", "state_dim", "action_dim"):
            if required not in kwargs:
                raise section.error(required, "missing (required)")
        return cls(**kwargs).check(source)

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    def normalization(self) -> dict[str, list[float]]:
        keys = ("image_mean", "image_std", "state_mean", "state_std", "action_mean", "action_std")
        return {k: list(getattr(self, k)) for k in keys if getattr(self, k) is not None}


def load_act_config(path: Path) -> ACTConfig:
    """An ACTConfig from a JSON or YAML file."""
    path = Path(path)
    data = load_json(path) if path.suffix == ".json" else load_yaml(path)
    return ACTConfig.from_mapping(data, path)


class ResidualBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class Backbone(nn.Module):
    """ResNet-like: 7x7/2 stem + 3x3/2 max-pool (1/4 size), then one residual stage per channel count."""

    def __init__(self, channels: tuple[int, ...]):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, channels[0], 7, 2, 3, bias=False), nn.BatchNorm2d(channels[0]), nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
        )
        stages = []
        for i, out_channels in enumerate(channels):
            stages.append(ResidualBlock(channels[max(i - 1, 0)], out_channels, 1 if i == 0 else 2))
        self.stages = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


class ACTNetwork(nn.Module):
    """forward(images (B, N_cam, 3, H, W) float in [0, 1], state (B, state_dim)) -> actions (B, chunk, action_dim)."""

    def __init__(self, config: ACTConfig):
        super().__init__()
        config.check()
        self.config = config
        self.backbone = Backbone(config.backbone_channels)
        self.project = nn.Conv2d(config.backbone_channels[-1], config.d_model, 1)
        feature_h, feature_w = self._feature_size(config)
        self.n_image_tokens = len(config.cameras) * feature_h * feature_w
        # Learned positions over all cameras' tokens also tell the encoder which camera a token came from.
        self.image_pos = nn.Parameter(torch.randn(self.n_image_tokens, config.d_model) * 0.02)
        self.state_in = nn.Linear(config.state_dim, config.d_model)
        self.state_pos = nn.Parameter(torch.randn(1, config.d_model) * 0.02)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(config.d_model, config.n_heads, config.dim_feedforward, config.dropout,
                                       batch_first=True),
            config.n_encoder_layers, enable_nested_tensor=False,
        )
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(config.d_model, config.n_heads, config.dim_feedforward, config.dropout,
                                       batch_first=True),
            config.n_decoder_layers,
        )
        self.queries = nn.Parameter(torch.randn(config.chunk_size, config.d_model) * 0.02)
        self.action_out = nn.Linear(config.d_model, config.action_dim)

        def stat(values, size: int, fill: float) -> torch.Tensor:
            return torch.tensor(values if values is not None else [fill] * size, dtype=torch.float32)

        for name, values, size, fill in (
            ("image_mean", config.image_mean, 3, 0.0), ("image_std", config.image_std, 3, 1.0),
            ("state_mean", config.state_mean, config.state_dim, 0.0),
            ("state_std", config.state_std, config.state_dim, 1.0),
            ("action_mean", config.action_mean, config.action_dim, 0.0),
            ("action_std", config.action_std, config.action_dim, 1.0),
        ):
            # Non-persistent: the config is the one source of the statistics, the checkpoint holds weights only.
            self.register_buffer(name, stat(values, size, fill), persistent=False)

    @staticmethod
    def _feature_size(config: ACTConfig) -> tuple[int, int]:
        # Each stride-2 layer (k3 or k7 with "same" padding) maps n -> ceil(n / 2): stem, pool, stages 2..
        height, width = config.image_size
        for _ in range(2 + len(config.backbone_channels) - 1):
            height, width = (height + 1) // 2, (width + 1) // 2
        return height, width

    def forward(self, images: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        batch = images.shape[0]
        pixels = (images.flatten(0, 1) - self.image_mean.view(1, 3, 1, 1)) / self.image_std.view(1, 3, 1, 1)
        features = self.project(self.backbone(pixels))  # (B * N, d, h, w)
        tokens = features.flatten(2).transpose(1, 2).reshape(batch, -1, features.shape[1])  # (B, N * h * w, d)
        tokens = tokens + self.image_pos
        state_token = self.state_in((state - self.state_mean) / self.state_std).unsqueeze(1) + self.state_pos
        memory = self.encoder(torch.cat([state_token, tokens], dim=1))
        queries = self.queries.unsqueeze(0).expand(batch, -1, -1)
        normalized = self.action_out(self.decoder(queries, memory))
        return normalized * self.action_std + self.action_mean
