"""The one mitigation contract: ``fit(source, target) -> Fitted``; ``Fitted.apply`` is pure.

A *mitigation* is a recipe with options (β, a mixing weight, …). ``fit`` estimates its
parameters from source-domain and target-domain fit images (valid pixels only) and returns an
immutable *fitted* object. That object is all a consumer needs: ``apply`` maps a target image
to a float32 image on the 0..255 scale, ``adapt_model`` maps a model (identity for the
image-space fixes), ``params`` is JSON, and ``key`` identifies the fit for caches. Because a
fitted object is rebuilt from ``params`` alone (``domain_gap.mitigations.from_params``), the
Tensorleap binder can load a JSON file and apply the very same pure function.

Numpy only: nothing here imports torch or code_loader.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import numpy as np

from domain_gap.mitigations.checks import check_image, check_valid

__all__ = [
    "FitImage",
    "Fitted",
    "FittedImageTransform",
    "Mitigation",
    "check_fit_set",
    "params_key",
]

M = TypeVar("M")


@dataclass(frozen=True, eq=False)
class FitImage:
    """One fit image: RGB uint8 ``(H, W, 3)``, ``valid`` bool ``(H, W)`` (False on padding).

    ``sample_id`` names the frame so that :func:`check_disjoint` can keep fit and evaluated
    frames apart. Validated on construction; at least one pixel must be valid.
    """

    image: np.ndarray
    valid: np.ndarray
    sample_id: str = ""

    def __post_init__(self) -> None:
        image = check_image(self.image, "image")
        object.__setattr__(self, "image", image)
        object.__setattr__(self, "valid", check_valid(self.valid, image.shape[:2], "valid"))

    @classmethod
    def from_prepared(cls, sample: Any) -> FitImage:
        """From a ``domain_gap.data.PreparedSample`` (image, valid, record.sample_id)."""
        return cls(sample.image, sample.valid, sample.record.sample_id)


def check_fit_set(images: Sequence[FitImage], name: str) -> tuple[FitImage, ...]:
    """A non-empty sequence of :class:`FitImage`, else ValueError naming ``name``."""
    if isinstance(images, FitImage | np.ndarray) or not isinstance(images, Sequence):
        raise ValueError(f"{name}: expected a sequence of FitImage, got {type(images).__name__}")
    if len(images) == 0:
        raise ValueError(f"{name}: expected at least one FitImage, got none")
    for i, item in enumerate(images):
        if not isinstance(item, FitImage):
            raise ValueError(f"{name}[{i}]: expected a FitImage, got {type(item).__name__}")
    return tuple(images)


def params_key(name: str, params: Mapping[str, Any]) -> str:
    """sha256 hex of ``name`` and the canonical JSON of ``params`` (sorted keys, no NaN)."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(f"{name}\n{canonical}".encode()).hexdigest()


@runtime_checkable
class Fitted(Protocol):
    """A fitted mitigation: immutable, pure, rebuilt from ``params()``."""

    name: str

    def apply(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """uint8 ``(H, W, 3)`` + bool ``(H, W)`` → float32 ``(H, W, 3)`` on the 0..255 scale.

        Padding pixels (``valid`` False) come back unchanged; the input is never modified.
        """
        ...

    def adapt_model(self, model: M) -> M:
        """The model to evaluate with (a new object when the fix changes the model)."""
        ...

    def params(self) -> dict[str, Any]:
        """JSON-serialisable fitted parameters (lists of floats, plain numbers)."""
        ...

    def key(self) -> str:
        """Stable cache key: :func:`params_key` of ``name`` and ``params()``."""
        ...


@runtime_checkable
class Mitigation(Protocol):
    """A mitigation recipe: options at construction, parameters from ``fit``."""

    name: str

    def fit(self, source: Sequence[FitImage], target: Sequence[FitImage]) -> Fitted:
        """Estimate the parameters from source and target fit images (valid pixels only)."""
        ...


class FittedImageTransform:
    """Shared behaviour of the image-space fixes: the model is left as it is."""

    name: ClassVar[str]

    def params(self) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must define params()")

    def key(self) -> str:
        """Stable cache key: :func:`params_key` of ``name`` and ``params()``."""
        return params_key(self.name, self.params())

    def adapt_model(self, model: M) -> M:
        """Image-space fixes leave the model unchanged (the same object is returned)."""
        return model
