"""FDA at test time (Yang & Soatto, CVPR 2020): the source's low-frequency amplitude, the
target's phase.

Per channel, the target image's 2-D FFT amplitude is replaced, inside a low-frequency window of
half-size ``b = ⌊β·min(H, W)⌋`` of the ``fftshift``-ed spectrum, by the source's MEAN amplitude
over the fit images; the phase is kept and the inverse FFT's real part is the output. Low
frequencies carry global colour and illumination, the phase carries the scene, so semantics are
left alone. The output is not clipped (like ``rgb_normalize``).

Window conventions (``window``):

- ``"paper"`` (default): rows and columns ``c - b … c + b`` with ``c = ⌊size / 2⌋``, the index of
  the zero frequency: a (2b+1)² window centred on DC, as in the paper's numpy code (and
  albumentations < 2). It is symmetric, so the mixed spectrum stays Hermitian.
- ``"albumentations"``: albumentations 2.x's ``low_freq_mutate``: ``int(c' - b) … int(c' + b) - 1``
  with ``c' = size / 2 - 0.5``, a (2b)² window one row/column short on the positive side of DC
  (empty when ``b = 0``). Offered to reproduce that library's training-time FDA exactly.

β defaults to 0.01, the paper's best single value (and its smallest): at 512x1024 the window is
11x11 frequencies, enough for global appearance, far from object-scale frequencies.

Padding: padded pixels are filled with the image's mean valid colour before the FFT (a flat fill
adds no edges, unlike the black void band), the whole frame is transformed, and padding is then
restored unchanged. Source fit images get the same fill. All images must have the fitted size:
the window and the frequency grid depend on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from domain_gap.mitigations.base import FitImage, FittedImageTransform, check_fit_set
from domain_gap.mitigations.checks import check_image_pair, check_keys, param_array, param_number

__all__ = [
    "WINDOWS",
    "FittedFourierAmplitude",
    "FourierAmplitude",
    "check_beta",
    "check_window",
    "low_frequency_window",
]

NAME = "fourier_amplitude"
_KEYS = ("amplitude", "beta", "height", "width", "window")
WINDOWS = ("paper", "albumentations")


def check_beta(beta: Any) -> float:
    """β in the open interval (0, 0.5), so that the window always fits inside the spectrum."""
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0 < beta < 0.5:
        raise ValueError(f"beta: expected a number in (0, 0.5), got {beta!r}")
    return float(beta)


def check_window(window: Any) -> str:
    """One of :data:`WINDOWS`."""
    if window not in WINDOWS:
        raise ValueError(f"window: expected one of {list(WINDOWS)}, got {window!r}")
    return str(window)


def low_frequency_window(
    height: int, width: int, beta: float, window: str = "paper"
) -> tuple[slice, slice]:
    """Rows and columns of the low-frequency window of the ``fftshift``-ed spectrum."""
    b = int(np.floor(min(height, width) * check_beta(beta)))
    if check_window(window) == "paper":
        cy, cx = height // 2, width // 2
        return slice(cy - b, cy + b + 1), slice(cx - b, cx + b + 1)
    cy, cx = height / 2 - 0.5, width / 2 - 0.5
    return (
        slice(max(0, int(cy - b)), min(int(cy + b), height)),
        slice(max(0, int(cx - b)), min(int(cx + b), width)),
    )


def _filled(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """float64 image whose padding holds the mean valid colour."""
    out = image.astype(np.float64)
    if not valid.all():
        out[~valid] = out[valid].mean(axis=0)
    return out


def _spectrum(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Centred (``fftshift``-ed) complex spectrum ``(H, W, 3)`` of the filled image."""
    return np.fft.fftshift(np.fft.fft2(_filled(image, valid), axes=(0, 1)), axes=(0, 1))


@dataclass(frozen=True, eq=False)
class FittedFourierAmplitude(FittedImageTransform):
    """The source's mean amplitude inside the window, float64 ``(3, rows, columns)``."""

    name: ClassVar[str] = NAME
    amplitude: np.ndarray
    beta: float
    height: int
    width: int
    window: str = "paper"

    def apply(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """The amplitude swap on the whole (filled) frame; padding unchanged; float32."""
        img, mask = check_image_pair(image, valid)
        if img.shape[:2] != (self.height, self.width):
            raise ValueError(
                f"image: expected shape ({self.height}, {self.width}, 3) as fitted, got {img.shape}"
            )
        spec = _spectrum(img, mask)
        rows, cols = low_frequency_window(self.height, self.width, self.beta, self.window)
        amplitude = np.abs(spec)
        amplitude[rows, cols] = np.moveaxis(self.amplitude, 0, -1)
        mixed = amplitude * np.exp(1j * np.angle(spec))
        out = np.fft.ifft2(np.fft.ifftshift(mixed, axes=(0, 1)), axes=(0, 1)).real
        out[~mask] = img[~mask]
        return out.astype(np.float32)

    def params(self) -> dict[str, Any]:
        return {
            "amplitude": self.amplitude.tolist(),
            "beta": self.beta,
            "height": self.height,
            "width": self.width,
            "window": self.window,
        }

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> FittedFourierAmplitude:
        check_keys(params, _KEYS, NAME)
        beta = check_beta(param_number(params, "beta"))
        size = [params[k] for k in ("height", "width")]
        if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
            raise ValueError(f"params['height'/'width']: expected positive integers, got {size}")
        window = check_window(params["window"])
        rows, cols = low_frequency_window(size[0], size[1], beta, window)
        shape = (3, rows.stop - rows.start, cols.stop - cols.start)
        amplitude = param_array(params, "amplitude", shape)
        if (amplitude < 0).any():
            raise ValueError("params['amplitude']: expected non-negative amplitudes")
        return cls(amplitude, beta, size[0], size[1], window)


def _check_same_size(images: Sequence[FitImage], shape: tuple[int, ...], name: str) -> None:
    for i, item in enumerate(images):
        if item.image.shape != shape:
            raise ValueError(
                f"{name}[{i}]: expected shape {shape} (one input size), got {item.image.shape}"
            )


@dataclass(frozen=True)
class FourierAmplitude:
    """FDA with window parameter ``beta`` (default 0.01, as in the paper) and convention."""

    name: ClassVar[str] = NAME
    beta: float = 0.01
    window: str = "paper"

    def __post_init__(self) -> None:
        object.__setattr__(self, "beta", check_beta(self.beta))
        object.__setattr__(self, "window", check_window(self.window))

    def fit(self, source: Sequence[FitImage], target: Sequence[FitImage]) -> FittedFourierAmplitude:
        """Mean source amplitude in the window. The target set is only checked (same size):
        FDA keeps each target image's own phase and needs no target statistics."""
        source = check_fit_set(source, "source")
        target = check_fit_set(target, "target")
        shape = source[0].image.shape
        _check_same_size(source, shape, "source")
        _check_same_size(target, shape, "target")
        rows, cols = low_frequency_window(shape[0], shape[1], self.beta, self.window)
        if rows.stop <= rows.start:
            raise ValueError(
                f"beta: expected a window of at least one frequency at {shape[:2]} with the "
                f"{self.window} convention, got an empty one for {self.beta}"
            )
        total = np.zeros((rows.stop - rows.start, cols.stop - cols.start, 3))
        for item in source:
            total += np.abs(_spectrum(item.image, item.valid)[rows, cols])
        mean = np.moveaxis(total / len(source), -1, 0)
        params = {"amplitude": mean.tolist(), "beta": self.beta, "window": self.window}
        return FittedFourierAmplitude.from_params({**params, "height": shape[0], "width": shape[1]})
