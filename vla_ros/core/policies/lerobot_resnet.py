"""ResNet-18 / -34 laid out as torchvision lays them out, so LeRobot's backbone weights load by name.

Why not torchvision itself: the only torchvision that pairs with our torch 2.13 CPU wheel (0.28.0) is a CUDA build
whose `_C.so` fails to load on CPU torch ("operator torchvision::nms does not exist"), and a robot PC should not
carry it just for ~60 lines of conv layers. Layout (parameter names under the module's prefix):
    conv1, bn1, (relu, maxpool: no parameters), layer1 .. layer4, each a list of BasicBlocks with conv1, bn1, conv2,
    bn2 and, where the block changes stride or width, downsample.0 (1x1 conv) + downsample.1 (norm).
ACT (`model.backbone.*`) keeps these names; Diffusion (`diffusion.rgb_encoder.backbone.*`) wraps the same children
in an nn.Sequential, so they are numbered 0 .. 7 instead (see `as_sequential`).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

# blocks per stage of the BasicBlock ResNets
DEPTHS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
WIDTHS = (64, 128, 256, 512)


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters, all buffers (torchvision.ops.FrozenBatchNorm2d's
    state layout: weight, bias, running_mean, running_var), as ACT's backbone uses."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        for name, fill in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            self.register_buffer(name, torch.full((channels,), fill))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight.reshape(1, -1, 1, 1) * (self.running_var.reshape(1, -1, 1, 1) + self.eps).rsqrt()
        shift = self.bias.reshape(1, -1, 1, 1) - self.running_mean.reshape(1, -1, 1, 1) * scale
        return x * scale + shift


def frozen_batch_norm(channels: int) -> nn.Module:
    return FrozenBatchNorm2d(channels)


def group_norm(channels: int) -> nn.Module:
    """LeRobot Diffusion's replacement for every BatchNorm: about 16 channels per group."""
    return nn.GroupNorm(channels // 16, channels)


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int, norm: Callable[[int], nn.Module]):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = norm(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = norm(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False), norm(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNetTrunk(nn.Module):
    """A BasicBlock ResNet without its pooling / classifier head: (B, 3, H, W) -> (B, 512, H/32, W/32) features."""

    out_channels = WIDTHS[-1]

    def __init__(self, variant: str, norm: Callable[[int], nn.Module]):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = norm(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_channels = 64
        for stage, (blocks, channels) in enumerate(zip(DEPTHS[variant], WIDTHS)):
            stride = 1 if stage == 0 else 2
            layers = [BasicBlock(in_channels, channels, stride, norm)]
            layers += [BasicBlock(channels, channels, 1, norm) for _ in range(blocks - 1)]
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layers))
            in_channels = channels

    def children_in_order(self) -> list[nn.Module]:
        return [self.conv1, self.bn1, self.relu, self.maxpool, self.layer1, self.layer2, self.layer3, self.layer4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.children_in_order():
            x = module(x)
        return x


def as_sequential(trunk: ResNetTrunk) -> nn.Sequential:
    """The trunk as nn.Sequential(conv1, bn1, relu, maxpool, layer1 .. layer4): names 0.weight, 4.0.conv1.weight..."""
    return nn.Sequential(*trunk.children_in_order())


def feature_size(height: int, width: int) -> tuple[int, int]:
    """Spatial size of the trunk's output: the 7x7/2 stem, the 3x3/2 max-pool and three stride-2 stages each map
    n -> floor((n - 1) / 2) + 1 with their paddings."""
    for _ in range(5):
        height, width = (height - 1) // 2 + 1, (width - 1) // 2 + 1
    return height, width
