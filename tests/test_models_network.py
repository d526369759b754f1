"""DeepLabV3+ construction: shapes, taps, VainF key layout, pretrained EfficientNet weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import ARCHS, TAPS, build_model
from models.aspp import atrous_rates
from models.backbones import _fold_input_normalisation

torch.set_num_threads(1)

X = torch.randn(1, 3, 64, 128, generator=torch.Generator().manual_seed(0))
LIGHT = ["deeplabv3plus_mobilenet", "deeplabv3plus_efficientnet_lite0"]
HEAVY = ["deeplabv3plus_resnet50", "deeplabv3plus_resnet101"]


def _check_taps(arch: str, output_stride: int, head: int = 256) -> None:
    model = build_model(arch, num_classes=19, output_stride=output_stride, head_channels=head)
    model.eval()
    with torch.no_grad():
        taps = model.forward_taps(X)
        logits = model(X)
    assert set(taps) == set(TAPS)
    channels = model.tap_channels()
    h, w = X.shape[-2:]
    assert taps["logits"].shape == (1, 19, h, w)
    assert torch.equal(logits, taps["logits"])
    assert taps["high"].shape == (1, channels["high"], h // output_stride, w // output_stride)
    assert taps["aspp"].shape == (1, head, h // output_stride, w // output_stride)
    assert taps["low"].shape == (1, channels["low"], h // 4, w // 4)
    assert taps["decoder"].shape == (1, head, h // 4, w // 4)
    for name, t in taps.items():
        assert torch.isfinite(t).all(), name


@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("arch", LIGHT)
def test_light_backbones_shapes_and_taps(arch: str, output_stride: int) -> None:
    _check_taps(arch, output_stride)


@pytest.mark.slow
@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("arch", HEAVY)
def test_resnet_shapes_and_taps(arch: str, output_stride: int) -> None:
    _check_taps(arch, output_stride)


def test_head_width_and_classes_follow_arguments() -> None:
    model = build_model("deeplabv3plus_mobilenet", num_classes=7, head_channels=32).eval()
    with torch.no_grad():
        taps = model.forward_taps(X)
    assert taps["logits"].shape[1] == 7
    assert taps["aspp"].shape[1] == taps["decoder"].shape[1] == 32
    sd = model.state_dict()
    assert sd["classifier.classifier.0.weight"].shape == (32, 48 + 32, 3, 3)


def test_logits_are_the_upsampled_stride4_scores() -> None:
    model = build_model("deeplabv3plus_mobilenet", head_channels=16).eval()
    with torch.no_grad():
        taps = model.forward_taps(X)
        scores = model.classifier.classifier[3](taps["decoder"])
    expected = F.interpolate(scores, size=X.shape[-2:], mode="bilinear", align_corners=False)
    torch.testing.assert_close(taps["logits"], expected)


def test_atrous_rates_and_dilation_follow_output_stride() -> None:
    assert atrous_rates(8) == (12, 24, 36)
    assert atrous_rates(16) == (6, 12, 18)
    for os_, rates in ((8, (12, 24, 36)), (16, (6, 12, 18))):
        model = build_model("deeplabv3plus_mobilenet", output_stride=os_, head_channels=8)
        got = tuple(model.classifier.aspp.convs[i][0].dilation[0] for i in (1, 2, 3))
        assert got == rates
    with pytest.raises(ValueError, match="output_stride"):
        build_model("deeplabv3plus_mobilenet", output_stride=32)
    with pytest.raises(ValueError, match="arch"):
        build_model("deeplabv3plus_vgg")


def test_vainf_key_names() -> None:
    """Key names known from VainF's published checkpoints (facts, not derived from our code)."""
    with torch.device("meta"):
        r50 = build_model("deeplabv3plus_resnet50").state_dict()
        r101 = build_model("deeplabv3plus_resnet101").state_dict()
        mob = build_model("deeplabv3plus_mobilenet").state_dict()
    head = {
        "classifier.project.0.weight": (48, 256, 1, 1),
        "classifier.aspp.convs.0.0.weight": (256, 2048, 1, 1),
        "classifier.aspp.convs.1.0.weight": (256, 2048, 3, 3),
        "classifier.aspp.convs.4.1.weight": (256, 2048, 1, 1),
        "classifier.aspp.project.0.weight": (256, 1280, 1, 1),
        "classifier.classifier.0.weight": (256, 304, 3, 3),
        "classifier.classifier.3.weight": (19, 256, 1, 1),
        "classifier.classifier.3.bias": (19,),
    }
    for key, shape in head.items():
        assert tuple(r50[key].shape) == shape, key
    assert tuple(r50["backbone.layer4.2.conv3.weight"].shape) == (2048, 512, 1, 1)
    assert "backbone.layer3.22.conv1.weight" in r101
    assert "backbone.layer3.6.conv1.weight" not in r50
    assert not any(k.startswith(("backbone.fc.", "backbone.avgpool")) for k in r50)
    assert tuple(mob["backbone.low_level_features.0.0.weight"].shape) == (32, 3, 3, 3)
    assert tuple(mob["backbone.low_level_features.1.conv.0.0.weight"].shape) == (32, 1, 3, 3)
    # VainF slices features[4:-1], which keeps the indices: the high part is numbered 4..17
    assert tuple(mob["backbone.high_level_features.4.conv.0.0.weight"].shape) == (144, 24, 1, 1)
    assert tuple(mob["backbone.high_level_features.17.conv.2.weight"].shape) == (320, 960, 1, 1)
    assert "backbone.high_level_features.0.conv.0.0.weight" not in mob
    assert "backbone.high_level_features.18.0.weight" not in mob
    assert tuple(mob["classifier.project.0.weight"].shape) == (48, 24, 1, 1)
    assert tuple(mob["classifier.aspp.convs.0.0.weight"].shape) == (256, 320, 1, 1)


def test_backbone_keys_match_torchvision_reference() -> None:
    """Independent reference: torchvision's ResNet-50 / MobileNetV2 parameter names and shapes
    (VainF's backbones are torchvision's, MobileNetV2 split into low/high-level parts)."""
    from torchvision.models import mobilenet_v2, resnet50

    with torch.device("meta"):
        ours = build_model("deeplabv3plus_resnet50").state_dict()
        ref = resnet50().state_dict()
        mob = build_model("deeplabv3plus_mobilenet").state_dict()
        ref_mob = mobilenet_v2().state_dict()
    ref_bb = {f"backbone.{k}": tuple(v.shape) for k, v in ref.items() if not k.startswith("fc.")}
    ours_bb = {k: tuple(v.shape) for k, v in ours.items() if k.startswith("backbone.")}
    assert ours_bb == ref_bb
    renamed = {}
    for k, v in ref_mob.items():
        if not k.startswith("features."):
            continue
        i, rest = k.split(".", 2)[1:]
        if int(i) < 4:
            renamed[f"backbone.low_level_features.{i}.{rest}"] = tuple(v.shape)
        elif int(i) < 18:
            renamed[f"backbone.high_level_features.{i}.{rest}"] = tuple(v.shape)  # VainF: 4..17
    mob_bb = {k: tuple(v.shape) for k, v in mob.items() if k.startswith("backbone.")}
    assert mob_bb == renamed


def test_every_arch_is_buildable_on_meta() -> None:
    for arch in ARCHS:
        with torch.device("meta"):
            model = build_model(arch, head_channels=64)
        assert model.info.arch == arch


def test_mobilenet_stem_is_unpadded_like_vainf() -> None:
    """VainF's MobileNetV2 stem conv has no padding and blocks pad explicitly: a 64x128 input
    gives a 31x63 stem output and a 16x32 low-level feature."""
    model = build_model("deeplabv3plus_mobilenet", head_channels=8).eval()
    with torch.no_grad():
        stem = model.backbone.low_level_features[0](X)
    assert stem.shape[-2:] == (31, 63)


def test_fold_input_normalisation_is_exact_inside() -> None:
    """Folding (mean, std) into a stem conv + BN mean reproduces the original conv response
    on the original normalisation, away from the zero-padded border."""
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(8, 3, 3, 3, generator=g)
    bn_mean = torch.randn(8, generator=g)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    new_w, new_mean = _fold_input_normalisation(weight, bn_mean, mean, std)
    u = torch.rand(1, 3, 20, 20, generator=g)
    x_orig = (u - 0.5) / 0.5
    m = torch.tensor(mean)[None, :, None, None]
    s = torch.tensor(std)[None, :, None, None]
    x_new = (u - m) / s
    ref = F.conv2d(x_orig, weight) - bn_mean[None, :, None, None]
    got = F.conv2d(x_new, new_w) - new_mean[None, :, None, None]
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_pretrained_efficientnet_weights_classify_a_cat() -> None:
    """The shipped ImageNet weights, renamed to timm keys, must recognise scikit-image's
    'chelsea' (a cat: ImageNet classes 281-285) — a check of the key mapping and padding."""
    import cv2
    import timm
    from skimage import data

    from models.backbones import efficientnet_lite0_imagenet_state

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = efficientnet_lite0_imagenet_state([len(s) for s in net.blocks])
    net.load_state_dict(state, strict=True)
    img = cv2.resize(data.chelsea(), (224, 224), interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(((img.astype(np.float32) / 255 - 0.5) / 0.5).transpose(2, 0, 1))[None]
    with torch.no_grad():
        top = int(net.eval()(x).argmax())
    assert 281 <= top <= 285


def test_pretrained_backbone_loads_into_demo_arch() -> None:
    """Every backbone tensor comes from the shipped weights; only the stem is re-expressed for
    the ImageNet mean/std normalisation the toolkit feeds."""
    import timm

    from models.backbones import efficientnet_lite0_imagenet_state

    model = build_model(
        "deeplabv3plus_efficientnet_lite0", head_channels=8, pretrained_backbone=True
    )
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    ref = efficientnet_lite0_imagenet_state([len(s) for s in net.blocks])
    ours = {k[len("backbone.") :]: v for k, v in model.state_dict().items() if "backbone." in k}
    assert set(ours) <= set(ref)
    for key, value in ours.items():
        if key in ("conv_stem.weight", "bn1.running_mean"):
            continue
        assert torch.equal(value, ref[key]), key
    assert not torch.equal(ours["conv_stem.weight"], ref["conv_stem.weight"])
