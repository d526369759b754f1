"""AdaBN (Li et al., 2016): re-estimate every BatchNorm layer's statistics on target images.

The only mitigation that changes the model instead of the image, and the only module of this
package that uses torch, imported lazily inside the functions so that importing the package (as
the Tensorleap binder does) never imports torch.

Procedure, on a deep copy of the caller's model (never modified): every BatchNorm layer with
running statistics is reset, switched to train mode with ``momentum=None`` (PyTorch's
cumulative average: the running mean/var become the average over batches of the batch mean and
unbiased batch variance), the rest of the model stays in eval mode (no dropout), the target
batches are run under ``torch.no_grad``, then everything goes back to eval. With a mixing weight
``w``: ``running = w · source + (1 - w) · target`` (``w = 0`` is plain AdaBN). Only the BN buffers
``running_mean``, ``running_var`` and ``num_batches_tracked`` change.

Batches are whole model inputs, padding included: BN normalises what the model actually sees at
evaluation time, so the statistics are taken over the same frames (the valid mask is not used).
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from domain_gap.encoders import normalize_image
from domain_gap.mitigations.base import FitImage, check_fit_set, params_key
from domain_gap.mitigations.checks import check_image_pair

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["AdaBN", "FittedAdaBN", "adapt_batchnorm", "batchnorm_layers", "bn_buffers"]

NAME = "adabn"
_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def check_weight(weight: Any) -> float:
    """The source weight ``w`` in [0, 1]."""
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight <= 1:
        raise ValueError(f"source_weight: expected a number in [0, 1], got {weight!r}")
    return float(weight)


def batchnorm_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Named BatchNorm layers (1d/2d/3d, sync) that keep running statistics."""
    from torch import nn

    kinds = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, kinds) and m.track_running_stats
    }


def bn_buffers(model: nn.Module) -> dict[str, np.ndarray]:
    """``{"layer.running_mean": array, …}``: every BN buffer, as read-only numpy copies."""
    out = {}
    for name, layer in batchnorm_layers(model).items():
        for buf in _BN_BUFFERS:
            arr = getattr(layer, buf).detach().cpu().numpy().copy()
            arr.setflags(write=False)
            out[f"{name}.{buf}"] = arr
    return out


def buffers_sha256(buffers: Mapping[str, np.ndarray]) -> str:
    """sha256 of the buffers' names, dtypes, shapes and bytes (sorted by name)."""
    digest = hashlib.sha256()
    for name in sorted(buffers):
        arr = np.ascontiguousarray(buffers[name])
        digest.update(f"{name}|{arr.dtype.str}|{arr.shape}\n".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def _as_batch(batch: Any, index: int, device: torch.device) -> torch.Tensor:
    import torch

    x = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(np.asarray(batch))
    if x.ndim != 4 or x.dtype != torch.float32:
        raise ValueError(
            f"batches[{index}]: expected a float32 NCHW batch, got {x.dtype} {tuple(x.shape)}"
        )
    return x.to(device)


def _run_train_mode_bn(model: nn.Module, layers: Mapping[str, Any], batches: Iterable) -> int:
    """Cumulative BN statistics of ``batches``; returns the number of batches."""
    import torch

    for layer in layers.values():
        layer.reset_running_stats()
        layer.momentum = None
        layer.train()
    device = next(iter(model.buffers())).device
    count = 0
    with torch.no_grad():
        for i, batch in enumerate(batches):
            model(_as_batch(batch, i, device))
            count += 1
    return count


def adapt_batchnorm(model: nn.Module, batches: Iterable, source_weight: float = 0.0) -> nn.Module:
    """A new model (eval mode) whose BN statistics come from ``batches`` (float32 NCHW).

    ``source_weight`` ``w`` mixes in the model's own (source) statistics:
    ``running = w · source + (1 - w) · target``. The caller's model is not modified.
    """
    w = check_weight(source_weight)
    adapted = copy.deepcopy(model).eval()
    layers = batchnorm_layers(adapted)
    if not layers:
        raise ValueError("model: expected at least one BatchNorm layer with running statistics")
    source = {n: (m.running_mean.clone(), m.running_var.clone()) for n, m in layers.items()}
    momenta = {n: m.momentum for n, m in layers.items()}
    if _run_train_mode_bn(adapted, layers, batches) == 0:
        raise ValueError("batches: expected at least one batch, got none")
    for name, layer in layers.items():
        layer.momentum = momenta[name]
        if w > 0:
            mean, var = source[name]
            layer.running_mean.copy_(w * mean + (1 - w) * layer.running_mean)
            layer.running_var.copy_(w * var + (1 - w) * layer.running_var)
    return adapted.eval()


@dataclass(frozen=True, eq=False)
class FittedAdaBN:
    """The adapted BN buffers and their identity (counts and sha256 of the buffers)."""

    name: ClassVar[str] = NAME
    source_weight: float
    n_images: int
    n_batches: int
    buffers: Mapping[str, np.ndarray]
    bn_sha256: str

    def apply(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """AdaBN leaves images alone: the checked image as float32 (0..255)."""
        img, _ = check_image_pair(image, valid)
        return img.astype(np.float32)

    def adapt_model(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` (eval mode) carrying the fitted BN buffers."""
        import torch

        adapted = copy.deepcopy(model).eval()
        own = {n: b for n, b in adapted.named_buffers() if n in self.buffers}
        expected = {n: self.buffers[n].shape for n in self.buffers}
        if {n: tuple(b.shape) for n, b in own.items()} != expected:
            raise ValueError("model: expected the BatchNorm layout the AdaBN fit was made on")
        with torch.no_grad():
            for name, buf in own.items():
                buf.copy_(torch.from_numpy(np.array(self.buffers[name])))
        return adapted

    def params(self) -> dict[str, Any]:
        return {
            "bn_sha256": self.bn_sha256,
            "n_batches": self.n_batches,
            "n_images": self.n_images,
            "source_weight": self.source_weight,
        }

    def key(self) -> str:
        return params_key(self.name, self.params())

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> FittedAdaBN:
        raise ValueError(
            "params: adabn cannot be rebuilt from params (they only identify the fit); its "
            "state is the BN buffers: use FittedAdaBN.adapt_model or export the adapted model"
        )


def _target_batches(
    images: Sequence[FitImage], mean: Sequence[float], std: Sequence[float], batch_size: int
) -> list[np.ndarray]:
    """Normalised NCHW float32 batches, each of at least ``min(batch_size, len(images))``."""
    shape = images[0].image.shape
    for i, item in enumerate(images):
        if item.image.shape != shape:
            raise ValueError(
                f"target[{i}]: expected shape {shape} like target[0], got {item.image.shape}"
            )
    # ⌊n / batch_size⌋ near-equal groups: no short tail batch, which would weigh as much as a
    # full one in the cumulative average (and a single image breaks train-mode BN).
    groups = np.array_split(np.arange(len(images)), max(1, len(images) // batch_size))
    return [
        normalize_image(np.stack([images[i].image for i in group]), mean, std) for group in groups
    ]


@dataclass(frozen=True, eq=False)
class AdaBN:
    """AdaBN of ``model`` on target images normalised with ``mean``/``std`` (0..1 scale).

    ``source_weight`` mixes the model's own statistics back in; ``batch_size`` ≥ 2 images.
    """

    name: ClassVar[str] = NAME
    model: Any
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    batch_size: int = 8
    source_weight: float = 0.0

    def __post_init__(self) -> None:
        size = self.batch_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 2:
            raise ValueError(f"batch_size: expected an integer >= 2 (train-mode BN), got {size!r}")
        object.__setattr__(self, "source_weight", check_weight(self.source_weight))
        if not callable(getattr(self.model, "named_modules", None)):
            raise ValueError(f"model: expected a torch nn.Module, got {type(self.model).__name__}")

    def fit(self, source: Sequence[FitImage], target: Sequence[FitImage]) -> FittedAdaBN:
        """BN statistics from ``target``. ``source`` is not used and may be empty: the source
        statistics are the model's own running buffers (estimated on the source training set)."""
        target = check_fit_set(target, "target")
        if len(target) < 2:
            raise ValueError("target: expected at least 2 images (train-mode BN), got 1")
        batches = _target_batches(target, self.mean, self.std, self.batch_size)
        adapted = adapt_batchnorm(self.model, batches, self.source_weight)
        buffers = bn_buffers(adapted)
        return FittedAdaBN(
            source_weight=self.source_weight,
            n_images=len(target),
            n_batches=len(batches),
            buffers=MappingProxyType(buffers),
            bn_sha256=buffers_sha256(buffers),
        )
