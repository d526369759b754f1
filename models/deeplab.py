"""DeepLabV3+ (backbone → ASPP → decoder with a 48-channel low-level skip) and VainF's
DeepLabV3 (backbone → ASPP → 3x3 conv, no skip), with named taps.

Parameter names follow VainF/DeepLabV3Plus-Pytorch: ``backbone.*`` and ``classifier.*`` with
``classifier.project`` (low-level 1x1 projection), ``classifier.aspp`` and
``classifier.classifier`` (3x3 fuse conv + BN + ReLU, then the 1x1 class conv). Logits are
bilinearly upsampled to the input size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from domain_gap.labels import NUM_CLASSES
from models.aspp import ASPP, atrous_rates
from models.backbones import BACKBONES, build_backbone

__all__ = [
    "ARCHS",
    "TAPS",
    "UNSUPPORTED",
    "DeepLabHeadV3",
    "DeepLabHeadV3Plus",
    "DeepLabV3Plus",
    "build_model",
    "is_plus",
]

LOW_LEVEL_CHANNELS = 48
"""Width of the projected low-level skip (DeepLabV3+ paper, VainF)."""

TAPS = ("logits", "high", "low", "aspp", "decoder")
"""Names returned by :meth:`DeepLabV3Plus.forward_taps`."""

ARCHS: dict[str, str] = {
    "deeplabv3plus_mobilenet": "mobilenetv2",
    "deeplabv3plus_resnet50": "resnet50",
    "deeplabv3plus_resnet101": "resnet101",
    "deeplabv3plus_efficientnet_lite0": "efficientnet_lite0",
    "deeplabv3_mobilenet": "mobilenetv2",
    "deeplabv3_resnet50": "resnet50",
    "deeplabv3_resnet101": "resnet101",
}
"""Architecture name (VainF's names, plus the demo's) → backbone. ``deeplabv3_*`` have VainF's
DeepLabV3 head (no low-level skip), ``deeplabv3plus_*`` the DeepLabV3+ head."""

UNSUPPORTED = ("hrnetv2", "xception")
"""VainF backbones refused by name: their layouts are not covered by the key-list tests."""


def is_plus(arch: str) -> bool:
    """True for a DeepLabV3+ head (``deeplabv3plus_*``), False for DeepLabV3 (``deeplabv3_*``)."""
    return arch.startswith("deeplabv3plus_")


class DeepLabHeadV3Plus(nn.Module):
    """ASPP on the deep feature, upsampled and fused with the projected low-level feature."""

    def __init__(
        self,
        in_channels: int,
        low_channels: int,
        num_classes: int,
        rates: tuple[int, int, int],
        head_channels: int = 256,
    ) -> None:
        super().__init__()
        self.project = nn.Sequential(
            nn.Conv2d(low_channels, LOW_LEVEL_CHANNELS, 1, bias=False),
            nn.BatchNorm2d(LOW_LEVEL_CHANNELS),
            nn.ReLU(),
        )
        self.aspp = ASPP(in_channels, rates, head_channels)
        self.classifier = nn.Sequential(
            nn.Conv2d(LOW_LEVEL_CHANNELS + head_channels, head_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(head_channels),
            nn.ReLU(),
            nn.Conv2d(head_channels, num_classes, 1),
        )
        _init_head(self)

    @property
    def fuse(self) -> nn.Sequential:
        """The 3x3 conv + BN + ReLU that makes the decoder feature."""
        return self.classifier[:3]

    @property
    def class_conv(self) -> nn.Conv2d:
        """The 1x1 class conv on the decoder feature."""
        return self.classifier[3]

    def forward_taps(self, low: torch.Tensor, high: torch.Tensor) -> dict[str, torch.Tensor]:
        """ASPP output, decoder feature (before the class conv) and stride-4 class scores."""
        skip = self.project(low)
        aspp = self.aspp(high)
        up = F.interpolate(aspp, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        decoder = self.classifier[:3](torch.cat([skip, up], dim=1))
        return {"aspp": aspp, "decoder": decoder, "scores": self.classifier[3](decoder)}


class DeepLabHeadV3(nn.Module):
    """VainF's DeepLabV3 head: ``classifier`` = ASPP, 3x3 conv + BN + ReLU, 1x1 class conv,
    all on the deep feature (no low-level skip; scores at the output stride)."""

    def __init__(
        self, in_channels: int, num_classes: int, rates: tuple[int, int, int], head_channels: int
    ) -> None:
        super().__init__()
        self.classifier = nn.Sequential(
            ASPP(in_channels, rates, head_channels),
            nn.Conv2d(head_channels, head_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(head_channels),
            nn.ReLU(),
            nn.Conv2d(head_channels, num_classes, 1),
        )
        _init_head(self)

    @property
    def aspp(self) -> ASPP:
        return self.classifier[0]

    @property
    def fuse(self) -> nn.Sequential:
        return self.classifier[1:4]

    @property
    def class_conv(self) -> nn.Conv2d:
        return self.classifier[4]

    def forward_taps(self, low: torch.Tensor, high: torch.Tensor) -> dict[str, torch.Tensor]:
        """ASPP output, decoder feature and class scores, all at the output stride."""
        del low
        aspp = self.classifier[0](high)
        decoder = self.classifier[1:4](aspp)
        return {"aspp": aspp, "decoder": decoder, "scores": self.classifier[4](decoder)}


def _init_head(head: nn.Module) -> None:
    for m in head.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@dataclass(frozen=True)
class ModelInfo:
    """What a built model is, stored with checkpoints and ONNX files."""

    arch: str
    num_classes: int
    output_stride: int
    head_channels: int


class DeepLabV3Plus(nn.Module):
    """``model(x)`` → logits ``(B, C, H, W)``; ``model.forward_taps(x)`` → all named taps."""

    def __init__(
        self, backbone: nn.Module, classifier: DeepLabHeadV3Plus | DeepLabHeadV3, info: ModelInfo
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.info = info

    def forward_taps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``logits`` (B,C,H,W), backbone ``high``/``low``, ``aspp`` and ``decoder`` features."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"input: expected a (B, 3, H, W) image tensor, got {tuple(x.shape)}")
        low, high = self.backbone(x)
        head = self.classifier.forward_taps(low, high)
        logits = F.interpolate(
            head["scores"], size=x.shape[-2:], mode="bilinear", align_corners=False
        )
        return {
            "logits": logits,
            "high": high,
            "low": low,
            "aspp": head["aspp"],
            "decoder": head["decoder"],
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_taps(x)["logits"]

    def tap_channels(self) -> dict[str, int]:
        """Channels of each feature tap (the embedding size when pooled)."""
        spec = BACKBONES[ARCHS[self.info.arch]]
        return {
            "high": spec.high_channels,
            "low": spec.low_channels,
            "aspp": self.info.head_channels,
            "decoder": self.info.head_channels,
            "logits": self.info.num_classes,
        }


def build_model(
    arch: str,
    num_classes: int = NUM_CLASSES,
    output_stride: int = 16,
    pretrained_backbone: bool = False,
    head_channels: int = 256,
    input_mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
    input_std: tuple[float, float, float] = (0.229, 0.224, 0.225),
) -> DeepLabV3Plus:
    """Build a DeepLabV3+ by architecture name (see :data:`ARCHS`).

    ``head_channels`` is the ASPP/decoder width (256 as in VainF; smaller for a light demo).
    ``input_mean``/``input_std`` only matter for a pretrained EfficientNet (see backbones).
    """
    if any(name in arch for name in UNSUPPORTED):
        raise ValueError(
            f"arch: {arch!r} is not supported (HRNetV2 and Xception layouts are not verified); "
            f"expected one of {sorted(ARCHS)}"
        )
    if arch not in ARCHS:
        raise ValueError(f"arch: expected one of {sorted(ARCHS)}, got {arch!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes: expected a positive number, got {num_classes}")
    if head_channels < 1:
        raise ValueError(f"head_channels: expected a positive number, got {head_channels}")
    rates = atrous_rates(output_stride)
    name = ARCHS[arch]
    spec = BACKBONES[name]
    backbone = build_backbone(name, output_stride, pretrained_backbone, input_mean, input_std)
    head: DeepLabHeadV3Plus | DeepLabHeadV3
    if is_plus(arch):
        head = DeepLabHeadV3Plus(
            spec.high_channels, spec.low_channels, num_classes, rates, head_channels
        )
    else:
        head = DeepLabHeadV3(spec.high_channels, num_classes, rates, head_channels)
    return DeepLabV3Plus(backbone, head, ModelInfo(arch, num_classes, output_stride, head_channels))
