"""Write the state-dict keys and shapes that VainF/DeepLabV3Plus-Pytorch's modules produce.

Independent of this project's modules (plain Python, no torch): written from a reading of
VainF's ``network/modeling.py`` (``_segm_resnet``, ``_segm_mobilenet``), ``network/_deeplab.py``
(``DeepLabHeadV3Plus``, ``DeepLabHead``, ``ASPP``, ``convert_to_separable_conv``),
``network/backbone/{resnet,mobilenetv2}.py`` and ``network/utils.py``
(``IntermediateLayerGetter``). Run once: ``python tests/data/vainf/make_vainf_keys.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

NUM_CLASSES = 19  # Cityscapes train ids
ASPP = 256  # VainF's fixed ASPP / decoder width
Keys = list[tuple[str, list[int]]]


def bn(prefix: str, c: int) -> Keys:
    """BatchNorm2d: affine parameters, running statistics and the batch counter (a scalar)."""
    stats = [(f"{prefix}.{n}", [c]) for n in ("weight", "bias", "running_mean", "running_var")]
    return [*stats, (f"{prefix}.num_batches_tracked", [])]


def conv(prefix: str, cout: int, cin: int, k: int, bias: bool = False) -> Keys:
    keys = [(f"{prefix}.weight", [cout, cin, k, k])]
    return keys + ([(f"{prefix}.bias", [cout])] if bias else [])


def resnet(depth: int) -> Keys:
    """torchvision-style Bottleneck ResNet without avgpool/fc (IntermediateLayerGetter stops
    after layer4); the first block of every stage has a ``downsample`` (1x1 conv + BN)."""
    blocks = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]
    keys = conv("backbone.conv1", 64, 3, 7) + bn("backbone.bn1", 64)
    inplanes = 64
    for stage, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks, strict=True), start=1):
        for b in range(n):
            p = f"backbone.layer{stage}.{b}"
            keys += conv(f"{p}.conv1", planes, inplanes, 1) + bn(f"{p}.bn1", planes)
            keys += conv(f"{p}.conv2", planes, planes, 3) + bn(f"{p}.bn2", planes)
            keys += conv(f"{p}.conv3", planes * 4, planes, 1) + bn(f"{p}.bn3", planes * 4)
            if b == 0:
                keys += conv(f"{p}.downsample.0", planes * 4, inplanes, 1)
                keys += bn(f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    return keys


MOBILENET = ((1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1))
"""(t, c, n) of MobileNetV2; strides do not change any shape."""


def mobilenet() -> Keys:
    """``features[:4]`` as ``low_level_features`` and ``features[4:-1]`` as
    ``high_level_features``: slicing keeps the original indices, so the high part is 4..17."""

    def where(i: int) -> str:
        return f"backbone.{'low' if i < 4 else 'high'}_level_features.{i}"

    keys = conv(f"{where(0)}.0", 32, 3, 3) + bn(f"{where(0)}.1", 32)
    cin, i = 32, 1
    for t, c, n in MOBILENET:
        for _ in range(n):
            p, hidden, j = f"{where(i)}.conv", cin * t, 0
            if t != 1:
                keys += conv(f"{p}.0.0", hidden, cin, 1) + bn(f"{p}.0.1", hidden)
                j = 1
            keys += conv(f"{p}.{j}.0", hidden, 1, 3) + bn(f"{p}.{j}.1", hidden)
            keys += conv(f"{p}.{j + 1}", c, hidden, 1) + bn(f"{p}.{j + 2}", c)
            cin, i = c, i + 1
    assert i == 18  # features.18 (the 1280 conv) is dropped
    return keys


def aspp(p: str, cin: int, separable: bool) -> Keys:
    keys = conv(f"{p}.convs.0.0", ASPP, cin, 1) + bn(f"{p}.convs.0.1", ASPP)
    for r in (1, 2, 3):
        if separable:  # AtrousSeparableConvolution: depthwise (groups=cin) then pointwise
            keys += conv(f"{p}.convs.{r}.0.body.0", cin, 1, 3)
            keys += conv(f"{p}.convs.{r}.0.body.1", ASPP, cin, 1)
        else:
            keys += conv(f"{p}.convs.{r}.0", ASPP, cin, 3)
        keys += bn(f"{p}.convs.{r}.1", ASPP)
    keys += conv(f"{p}.convs.4.1", ASPP, cin, 1) + bn(f"{p}.convs.4.2", ASPP)  # 0: avg pool
    return keys + conv(f"{p}.project.0", ASPP, 5 * ASPP, 1) + bn(f"{p}.project.1", ASPP)


def head_plus(cin: int, low: int, separable: bool = False) -> Keys:
    keys = conv("classifier.project.0", 48, low, 1) + bn("classifier.project.1", 48)
    keys += aspp("classifier.aspp", cin, separable)
    if separable:
        keys += conv("classifier.classifier.0.body.0", 48 + ASPP, 1, 3)
        keys += conv("classifier.classifier.0.body.1", ASPP, 48 + ASPP, 1)
    else:
        keys += conv("classifier.classifier.0", ASPP, 48 + ASPP, 3)
    keys += bn("classifier.classifier.1", ASPP)
    return keys + conv("classifier.classifier.3", NUM_CLASSES, ASPP, 1, bias=True)


def head_v3(cin: int) -> Keys:
    keys = aspp("classifier.classifier.0", cin, separable=False)
    keys += conv("classifier.classifier.1", ASPP, ASPP, 3) + bn("classifier.classifier.2", ASPP)
    return keys + conv("classifier.classifier.4", NUM_CLASSES, ASPP, 1, bias=True)


LAYOUTS: dict[str, Keys] = {
    "deeplabv3plus_mobilenet": mobilenet() + head_plus(320, 24),
    "deeplabv3plus_resnet50": resnet(50) + head_plus(2048, 256),
    "deeplabv3plus_resnet101": resnet(101) + head_plus(2048, 256),
    "deeplabv3_mobilenet": mobilenet() + head_v3(320),
    "deeplabv3_resnet50": resnet(50) + head_v3(2048),
    "deeplabv3_resnet101": resnet(101) + head_v3(2048),
    "deeplabv3plus_mobilenet_separable": mobilenet() + head_plus(320, 24, separable=True),
}


def main() -> None:
    here = Path(__file__).parent
    for name, keys in LAYOUTS.items():
        assert len({k for k, _ in keys}) == len(keys), name
        doc = {
            "arch": name.removesuffix("_separable"),
            "num_classes": NUM_CLASSES,
            "separable_conv": name.endswith("_separable"),
            "keys": dict(keys),
        }
        (here / f"{name}.json").write_text(json.dumps(doc, indent=0) + "\n")


if __name__ == "__main__":
    main()
