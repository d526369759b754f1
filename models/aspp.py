"""Atrous Spatial Pyramid Pooling (DeepLabV3): five parallel branches, concatenated, projected.

Branches: a 1x1 conv, three 3x3 convs dilated at the given rates, and image pooling (global
average, 1x1 conv, broadcast back). Module names (``convs.{0..4}``, ``project``) match VainF's
checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ASPP", "atrous_rates"]


def atrous_rates(output_stride: int) -> tuple[int, int, int]:
    """The DeepLabV3 rates for an output stride: (12, 24, 36) at 8, (6, 12, 18) at 16."""
    rates = {8: (12, 24, 36), 16: (6, 12, 18)}
    if output_stride not in rates:
        raise ValueError(f"output_stride: expected 8 or 16, got {output_stride}")
    return rates[output_stride]


def _conv_bn_relu(cin: int, cout: int, kernel: int = 1, dilation: int = 1) -> list[nn.Module]:
    pad = dilation if kernel == 3 else 0
    return [
        nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    ]


class _ImagePooling(nn.Sequential):
    """Global context branch: average to 1x1, 1x1 conv + BN + ReLU, upsample to the input size."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(cin, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return F.interpolate(super().forward(x), size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """ASPP with ``out_channels`` per branch and after the projection (256 in DeepLabV3)."""

    def __init__(
        self, in_channels: int, rates: tuple[int, int, int], out_channels: int = 256
    ) -> None:
        super().__init__()
        if len(rates) != 3:
            raise ValueError(f"rates: expected three atrous rates, got {rates}")
        branches: list[nn.Module] = [nn.Sequential(*_conv_bn_relu(in_channels, out_channels))]
        branches += [
            nn.Sequential(*_conv_bn_relu(in_channels, out_channels, kernel=3, dilation=r))
            for r in rates
        ]
        branches.append(_ImagePooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            *_conv_bn_relu(5 * out_channels, out_channels), nn.Dropout(0.1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))
