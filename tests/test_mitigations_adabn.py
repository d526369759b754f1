"""AdaBN: BN statistics re-estimated on target batches (hand-checked through forward hooks), the
mixing weight, the cumulative average over batches, nothing but BN buffers changing, the
caller's model untouched, and the fitted identity (counts + sha256 of the buffers)."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest
import torch
from torch import nn

from domain_gap.encoders import normalize_image
from domain_gap.mitigations import FitImage, build, from_params
from domain_gap.mitigations.adabn import (
    adapt_batchnorm,
    batchnorm_layers,
    bn_buffers,
    buffers_sha256,
)
from models import build_model

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
H, W = 32, 64


def _with_source_stats(net: nn.Module) -> nn.Module:
    """``net`` in eval mode with made-up "source" BN statistics (as if trained)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in batchnorm_layers(net).values():
            layer.running_mean.copy_(torch.randn(layer.running_mean.shape, generator=gen) * 0.5)
            layer.running_var.copy_(torch.rand(layer.running_var.shape, generator=gen) + 0.5)
            layer.num_batches_tracked.fill_(1000)
    return net.eval()


@pytest.fixture(scope="module")
def deeplab() -> nn.Module:
    """The project's DeepLabV3+ (MobileNetV2, narrow head): 59 BN layers."""
    torch.manual_seed(0)
    net = build_model("deeplabv3plus_mobilenet", num_classes=4, output_stride=16, head_channels=16)
    return _with_source_stats(net)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    """A tiny net (fast) with BatchNorm2d, BatchNorm1d and a dropout that must stay off."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(6, 5),
        nn.BatchNorm1d(5),
    )
    return _with_source_stats(net)


def _batch(seed: int, n: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((n, 3, H, W), generator=gen) * 0.8 + 0.3


def _bn_inputs(net: nn.Module, batch: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every BN layer's input in a train-mode-BN forward pass, captured by forward pre-hooks."""
    probe = copy.deepcopy(net).eval()
    captured: dict[str, torch.Tensor] = {}
    for name, layer in batchnorm_layers(probe).items():
        layer.train()
        layer.register_forward_pre_hook(
            lambda _mod, args, name=name: captured.__setitem__(name, args[0].double())
        )
    with torch.no_grad():
        probe(batch)
    return captured


def _stats(net: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor, int]]:
    return {
        n: (m.running_mean.double(), m.running_var.double(), int(m.num_batches_tracked))
        for n, m in batchnorm_layers(net).items()
    }


def _check_hand_computed_stats(net: nn.Module, adapted: nn.Module, batch: torch.Tensor) -> None:
    inputs, stats = _bn_inputs(net, batch), _stats(adapted)
    assert set(inputs) == set(stats) == set(batchnorm_layers(net))
    for name, x in inputs.items():
        mean, var, tracked = stats[name]
        dims = [0, *range(2, x.ndim)]
        np.testing.assert_allclose(mean, x.mean(dim=dims), rtol=1e-4, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(
            var, x.var(dim=dims, unbiased=True), rtol=1e-4, atol=1e-5, err_msg=name
        )
        assert tracked == 1


def _check_only_bn_buffers_changed(net: nn.Module, adapted: nn.Module, before: dict) -> None:
    assert adapted is not net and not any(m.training for m in adapted.modules())
    bn_keys = set(bn_buffers(net))
    after = adapted.state_dict()
    assert all(not torch.equal(after[k], before[k]) for k in bn_keys)
    for key, value in before.items():
        if key not in bn_keys:
            assert torch.equal(after[key], value), key
        assert torch.equal(net.state_dict()[key], value), key
    assert [m.momentum for m in batchnorm_layers(adapted).values()] == [
        m.momentum for m in batchnorm_layers(net).values()
    ]


@pytest.mark.parametrize("net_name", ["model", "deeplab"])
def test_one_batch_sets_input_mean_and_unbiased_var_and_nothing_else(
    net_name: str, request: pytest.FixtureRequest
) -> None:
    net = request.getfixturevalue(net_name)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    modes = [m.training for m in net.modules()]
    batch = _batch(0)
    adapted = adapt_batchnorm(net, [batch])
    _check_hand_computed_stats(net, adapted, batch)
    _check_only_bn_buffers_changed(net, adapted, before)
    assert [m.training for m in net.modules()] == modes


def test_source_weight_mixes_source_and_target_statistics(model) -> None:
    batch, w = _batch(2), 0.25
    source, target = _stats(model), _stats(adapt_batchnorm(model, [batch]))
    mixed = _stats(adapt_batchnorm(model, [batch], source_weight=w))
    for name, (mean, var, tracked) in mixed.items():
        np.testing.assert_allclose(
            mean, w * source[name][0] + (1 - w) * target[name][0], rtol=1e-6, atol=1e-7
        )
        np.testing.assert_allclose(
            var, w * source[name][1] + (1 - w) * target[name][1], rtol=1e-6, atol=1e-7
        )
        assert tracked == target[name][2] == 1


def test_several_batches_give_the_cumulative_average(model) -> None:
    a, b = _batch(3), _batch(4)
    first, second = _stats(adapt_batchnorm(model, [a])), _stats(adapt_batchnorm(model, [b]))
    both = _stats(adapt_batchnorm(model, iter([a.numpy(), b])))
    for name, (mean, var, tracked) in both.items():
        np.testing.assert_allclose(
            mean, (first[name][0] + second[name][0]) / 2, rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(
            var, (first[name][1] + second[name][1]) / 2, rtol=1e-5, atol=1e-6
        )
        assert tracked == 2


def _frames(n: int, seed: int) -> list[FitImage]:
    rng = np.random.default_rng(seed)
    valid = np.ones((H, W), bool)
    valid[:4] = False
    return [
        FitImage(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), valid, f"kitti/{seed}/{i}")
        for i in range(n)
    ]


def test_adabn_mitigation_fits_on_normalised_target_batches(model) -> None:
    target = _frames(4, seed=5)
    fitted = build("adabn", model=model, mean=MEAN, std=STD, batch_size=2).fit([], target)
    params = json.loads(json.dumps(fitted.params()))
    assert params["n_images"] == 4 and params["n_batches"] == 2
    assert params["source_weight"] == 0.0 and re.fullmatch(r"[0-9a-f]{64}", params["bn_sha256"])
    batches = [
        normalize_image(np.stack([f.image for f in target[i : i + 2]]), MEAN, STD) for i in (0, 2)
    ]
    direct = bn_buffers(adapt_batchnorm(model, batches))
    adapted = bn_buffers(fitted.adapt_model(model))
    assert set(adapted) == set(direct)
    for key, value in direct.items():
        np.testing.assert_array_equal(adapted[key], value, err_msg=key)
    assert params["bn_sha256"] == buffers_sha256(direct) != buffers_sha256(bn_buffers(model))
    frame = target[0]
    np.testing.assert_array_equal(fitted.apply(frame.image, frame.valid), frame.image)


def test_adabn_key_follows_the_estimate(model) -> None:
    target = _frames(4, seed=6)
    recipe = build("adabn", model=model, mean=MEAN, std=STD, batch_size=2)
    key = recipe.fit([], target).key()
    assert recipe.fit([], target).key() == key
    assert recipe.fit([], _frames(4, seed=7)).key() != key
    mixed = build("adabn", model=model, mean=MEAN, std=STD, batch_size=2, source_weight=0.5)
    assert mixed.fit([], target).key() != key
    # Five images in batches of two: two batches (3 + 2), never a one-image tail.
    assert recipe.fit([], _frames(5, seed=6)).n_batches == 2


def _fitted(model) -> object:
    return build("adabn", model=model, mean=MEAN, std=STD, batch_size=2).fit([], _frames(2, 8))


BAD_INPUT = [
    (lambda m: build("adabn", model=m, mean=MEAN, std=STD, batch_size=1), "batch_size"),
    (lambda m: build("adabn", model=m, mean=MEAN, std=STD, source_weight=1.5), "source_weight"),
    (lambda m: build("adabn", model="net", mean=MEAN, std=STD), "model"),
    (lambda m: build("adabn", model=m, mean=MEAN), "options"),
    (lambda m: build("adabn", model=m, mean=MEAN, std=STD).fit([], _frames(1, 0)), "target"),
    (lambda m: build("adabn", model=m, mean=MEAN, std=STD).fit([], []), "target"),
    (lambda m: adapt_batchnorm(m, []), "batches"),
    (lambda m: adapt_batchnorm(m, [np.zeros((2, 3, H, W))]), "batches[0]"),
    (lambda m: adapt_batchnorm(m, [torch.zeros(3, H, W)]), "batches[0]"),
    (lambda m: adapt_batchnorm(nn.Conv2d(3, 3, 1), [_batch(0)]), "model"),
    (lambda m: adapt_batchnorm(m, [_batch(0)], source_weight=-0.1), "source_weight"),
    (lambda m: _fitted(m).adapt_model(nn.Sequential(nn.BatchNorm2d(3))), "model"),
    (lambda m: from_params("adabn", _fitted(m).params()), "params"),
]


@pytest.mark.parametrize(("call", "argument"), BAD_INPUT)
def test_bad_input_is_a_value_error_naming_the_argument(model, call, argument: str) -> None:
    with pytest.raises(ValueError) as err:
        call(model)
    assert str(err.value).startswith(f"{argument}: ") and "\n" not in str(err.value)
