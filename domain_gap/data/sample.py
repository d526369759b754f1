"""The built-in SYNTHETIC sample: two procedural domains in the real Cityscapes and KITTI layouts.

``write_sample(out_dir, seed, size)`` writes

- ``cityscapes/``: ``leftImg8bit/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png``,
  ``gtFine/.../*_gtFine_labelIds.png`` and ``vehicle/.../*_vehicle.json`` for train and val, at
  512x256 (a scaled Cityscapes frame): a dense city, mildly different per city;
- ``kitti/``: ``training/image_2/{i:06d}_10.png`` + ``training/semantic/{i:06d}_10.png`` and
  ``testing/image_2/{i:06d}_10.png`` (no labels), around 621x188 with the few-pixel size jitter
  of real KITTI frames, all in KITTI-like colours (warmer, brighter, more contrasted): a share
  :data:`URBAN_KITTI_SHARE` of them are Cityscapes-like city scenes, the rest rural roads, so
  the colour shift and the content shift can be told apart;
- ``README.md`` saying that all of it is synthetic.

Which KITTI-like frames are urban is recorded only in the stamp file (``urban_kitti``, read by
:func:`urban_kitti_frames`), for tests and experiments: real data has no such list, so nothing
in the images, labels or metadata the analysis reads tells them apart.

Same seed → byte-identical files (every frame has its own seed derived from the sample seed).
Files are written atomically; a stamp makes a rerun over a complete sample return at once and
lets an interrupted run resume.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from domain_gap.atomic import write_atomic
from domain_gap.data.errors import DataError
from domain_gap.data.scene import CITY, RURAL, URBAN_KITTI, Style, render_scene, vary_style

SAMPLE_VERSION = 3
"""Bump when the generator changes, so that stale samples are rewritten."""

STAMP = ".domain-gap-sample.json"

URBAN_KITTI_SHARE = 0.4
"""Share of the KITTI-like frames (per split, rounded to whole frames) that show a
Cityscapes-like city (:data:`~domain_gap.data.scene.URBAN_KITTI`) instead of a rural road. All
of them get the same KITTI-like colours, so the urban ones carry the colour shift without the
content shift. The frames are drawn per split from the sample seed."""

CITIES = {"train": ("aachen", "bremen", "zurich"), "val": ("frankfurt", "lindau")}
"""Cityscapes-like cities per split (the val cities are unseen in training, as in Cityscapes)."""

_CITY_GPS = {  # latitude, longitude, altitude (m) of each city centre
    "aachen": (50.7753, 6.0839, 175.0),
    "bremen": (53.0793, 8.8017, 12.0),
    "zurich": (47.3769, 8.5417, 408.0),
    "frankfurt": (50.1109, 8.6821, 112.0),
    "lindau": (47.5460, 9.6840, 400.0),
}

CITYSCAPES_SIZE = (256, 512)  # height, width: Cityscapes 1024x2048 scaled by 1/4
KITTI_SIZES = ((188, 621), (188, 620), (185, 612), (187, 619), (185, 613))
"""Halved real KITTI frame sizes (1242x375, 1241x376, 1224x370, 1238x374, 1226x370)."""

SIZES = {
    "demo": {"cityscapes": {"train": 300, "val": 100}, "kitti": {"training": 200, "testing": 50}},
    "test": {"cityscapes": {"train": 6, "val": 4}, "kitti": {"training": 8, "testing": 3}},
}

_DOMAIN_CODE = {"cityscapes": 1, "kitti": 2}
_SPLIT_CODE = {"train": 1, "val": 2, "training": 3, "testing": 4}
_CITY_FRAME = 19  # real Cityscapes annotates frame 19 of each 30-frame snippet
_URBAN_STREAM = 2  # random streams: 0 draws a frame, 1 its vehicle data, 2 the urban choice


@dataclass(frozen=True)
class _Frame:
    """One frame to write: where its files go and how to draw it."""

    domain: str
    split: str
    index: int
    image: str
    label: str | None
    vehicle: str | None
    city: str | None
    urban: bool = False  # a KITTI-like frame showing a city


def urban_indices(seed: int, split: str, n: int) -> list[int]:
    """The indices of a KITTI split's ``n`` frames that are urban (seeded, sorted)."""
    key = [seed, _DOMAIN_CODE["kitti"], _SPLIT_CODE[split], 0, _URBAN_STREAM]
    rng = np.random.default_rng(np.random.SeedSequence(key))
    return sorted(rng.permutation(n)[: round(URBAN_KITTI_SHARE * n)].tolist())


def _frames(counts: dict[str, dict[str, int]], seed: int) -> list[_Frame]:
    frames = []
    for split, n in counts["cityscapes"].items():
        cities = CITIES[split]
        for k in range(n):
            city, seq = cities[k % len(cities)], k // len(cities)
            stem = f"{city}_{seq:06d}_{_CITY_FRAME:06d}"
            frames.append(
                _Frame(
                    "cityscapes",
                    split,
                    k,
                    f"cityscapes/leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png",
                    f"cityscapes/gtFine/{split}/{city}/{stem}_gtFine_labelIds.png",
                    f"cityscapes/vehicle/{split}/{city}/{stem}_vehicle.json",
                    city,
                )
            )
    for split, n in counts["kitti"].items():
        urban = set(urban_indices(seed, split, n))
        for k in range(n):
            name = f"{k:06d}_10.png"
            label = f"kitti/{split}/semantic/{name}" if split == "training" else None
            image = f"kitti/{split}/image_2/{name}"
            frames.append(_Frame("kitti", split, k, image, label, None, None, k in urban))
    return frames


def _rng(seed: int, frame: _Frame, stream: int) -> np.random.Generator:
    key = [seed, _DOMAIN_CODE[frame.domain], _SPLIT_CODE[frame.split], frame.index, stream]
    return np.random.default_rng(np.random.SeedSequence(key))


def city_style(seed: int, city: str) -> Style:
    """The mild per-city variant of the Cityscapes-like style."""
    all_cities = [c for split in CITIES.values() for c in split]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0, all_cities.index(city)]))
    return vary_style(CITY, rng)


def vehicle_record(rng: np.random.Generator, city: str) -> dict[str, float]:
    """Plausible random Cityscapes vehicle metadata (same keys as ``*_vehicle.json``)."""
    lat, lon, alt = _CITY_GPS[city]
    return {
        "gpsHeading": round(float(rng.uniform(0.0, 360.0)), 6),
        "gpsLatitude": round(lat + float(rng.normal(0.0, 0.01)), 8),
        "gpsLongitude": round(lon + float(rng.normal(0.0, 0.015)), 8),
        "gpsAltitude": round(alt + float(rng.normal(0.0, 8.0)), 2),
        "speed": round(float(np.clip(rng.gamma(2.0, 2.5), 0.0, 20.0)), 3),
        "outsideTemperature": round(float(rng.normal(14.0, 6.0)), 1),
        "yawRate": round(float(rng.normal(0.0, 0.05)), 5),
    }


def _encode_png(array: np.ndarray, source: str) -> bytes:
    img = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:  # pragma: no cover - OpenCV only fails on unsupported arrays
        raise DataError(f"{source}: could not encode PNG")
    return buf.tobytes()


def _write_frame(out: Path, frame: _Frame, seed: int) -> None:
    rng = _rng(seed, frame, 0)
    if frame.domain == "cityscapes":
        height, width = CITYSCAPES_SIZE
        style = city_style(seed, frame.city or "")
    else:
        height, width = KITTI_SIZES[int(rng.integers(len(KITTI_SIZES)))]
        style = URBAN_KITTI if frame.urban else RURAL
    image, label = render_scene(style, height, width, rng)
    if frame.label is not None:
        write_atomic(out / frame.label, _encode_png(label, str(out / frame.label)))
    if frame.vehicle is not None:
        record = vehicle_record(_rng(seed, frame, 1), frame.city or "")
        write_atomic(out / frame.vehicle, (json.dumps(record, indent=4) + "\n").encode())
    # The image last: its presence marks the frame complete when resuming.
    write_atomic(out / frame.image, _encode_png(image, str(out / frame.image)))


PORTABLE_NUMPY = {"NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"}
"""The renderer's workers run numpy without its AVX-512 kernels: their transcendental functions
round differently in the last bit, which moved a few pixels of the sample (and so every
statistic of the demo) between machines with and without AVX-512."""


def _write_frames(out: Path, frames: list[_Frame], seed: int, progress: bool) -> None:
    """Render and write ``frames`` in worker processes, one per core (at most 8): each frame
    draws from its own random stream, so the files are the same in any order, on any number
    of processes and on any x86-64 CPU (:data:`PORTABLE_NUMPY`)."""
    if not frames:
        return
    workers = min(os.cpu_count() or 1, 8, max(len(frames) // 16, 1))
    spawn = multiprocessing.get_context("spawn")  # a fresh numpy, no fork of running threads
    saved = {k: os.environ.get(k) for k in PORTABLE_NUMPY}
    os.environ.update(PORTABLE_NUMPY)  # inherited by the workers when they start
    try:
        bar = tqdm(total=len(frames), desc="synthetic sample", unit="img", disable=not progress)
        with bar, ProcessPoolExecutor(workers, mp_context=spawn) as pool:
            for _ in pool.map(partial(_write_frame, out, seed=seed), frames, chunksize=4):
                bar.update()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _readme(seed: int, size: str, counts: dict[str, dict[str, int]]) -> str:
    lines = [
        "# SYNTHETIC sample data (not real Cityscapes or KITTI)",
        "",
        "Every image and label in this folder is SYNTHETIC: procedural street scenes generated "
        f"by `domain-gap sample` (domain-gap sample generator v{SAMPLE_VERSION}, seed {seed}, "
        f"size {size!r}). No real photograph of a street is included; surface textures come from "
        "the scikit-image example images (gravel, brick, grass, moon).",
        "",
        "The two domains use the real on-disk layouts so the same loaders read real data:",
        "",
        "- `cityscapes/`: Cityscapes layout (`leftImg8bit/`, `gtFine/*_gtFine_labelIds.png`, "
        "`vehicle/*_vehicle.json` with random plausible values), 512x256, cities "
        + ", ".join(f"{split}: {'/'.join(c)}" for split, c in CITIES.items())
        + ".",
        "- `kitti/`: KITTI semantics layout (`training/image_2`, `training/semantic` with "
        "Cityscapes labelIds, `testing/image_2` without labels), about 621x188 with a few "
        "pixels of size jitter between frames.",
        "",
        "What differs between the domains (the synthetic domain gap):",
        "",
        "- content: the Cityscapes-like domain is a dense city (facades on both sides, many cars "
        "and pedestrians, an ego-vehicle hood); in the KITTI-like domain "
        f"{100 - round(100 * URBAN_KITTI_SHARE)}% of the frames are a rural road with much more "
        "vegetation and terrain and few buildings, mostly under clear skies, seen by a camera "
        f"with a wider field of view, mounted higher; the other {round(100 * URBAN_KITTI_SHARE)}% "
        "are the Cityscapes-like city (same layout, camera and weather, no hood);",
        "- colour: all KITTI-like frames are warmer (yellow cast), brighter, more contrasted and "
        "more saturated; Cityscapes-like frames are muted, with a mild colour/brightness "
        "variation per city;",
        "- resolution: KITTI-like frames have another size and aspect ratio (≈3.3:1 vs 2:1).",
        "",
        "The same Cityscapes classes occur in both domains, in different proportions. Counts:",
        "",
    ]
    for domain, splits in counts.items():
        lines.append(f"- {domain}: " + ", ".join(f"{k} {v}" for k, v in splits.items()))
    lines += [
        "",
        f"Which KITTI-like frames are urban is listed in `{STAMP}` (`urban_kitti`), for tests "
        "only: the analysis does not read it.",
    ]
    return "\n".join(lines) + "\n"


def _read_stamp(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def urban_kitti_frames(sample_dir: str | Path) -> list[str]:
    """The urban KITTI-like images of a complete sample, as paths relative to ``sample_dir``.

    Read from the stamp, not from the images: the ground truth of the content shift, for tests
    and experiments. Raises DataError when ``sample_dir`` holds no complete sample.
    """
    stamp = _read_stamp(Path(sample_dir) / STAMP)
    if not stamp or not stamp.get("complete") or "urban_kitti" not in stamp:
        raise DataError(f"{sample_dir}: no complete sample with an urban_kitti list ({STAMP})")
    return list(stamp["urban_kitti"])


def sample_identity(root: str) -> str | None:
    """``"v3 seed 0 size demo"`` when ``root`` is a domain folder of a built-in sample, else None.

    Lets a cache keyed by the root's path tell a regenerated sample from the one it cached.
    """
    if root.startswith("gs://"):
        return None
    stamp = _read_stamp(Path(root).parent / STAMP)
    if not isinstance(stamp, dict) or stamp.get("generator") != "domain-gap sample":
        return None
    return f"v{stamp.get('version')} seed {stamp.get('seed')} size {stamp.get('size')}"


def write_sample(
    out_dir: str | Path, seed: int = 0, size: str = "demo", progress: bool = True
) -> dict[str, dict[str, int]]:
    """Write the synthetic sample into ``out_dir``; return ``{domain: {split: count}}``.

    A complete sample with the same seed and size is left as is. A sample written earlier by
    this function with other settings is replaced; other files in the way raise DataError.
    """
    if size not in SIZES:
        raise DataError(f"sample size: expected one of {sorted(SIZES)}, got {size!r}")
    if not isinstance(seed, int) or seed < 0:
        raise DataError(f"sample seed: expected an integer >= 0, got {seed!r}")
    out = Path(out_dir)
    counts = SIZES[size]
    params = {"generator": "domain-gap sample", "version": SAMPLE_VERSION, "seed": seed}
    params["size"] = size
    stamp_path = out / STAMP
    stamp = _read_stamp(stamp_path)
    same = stamp is not None and all(stamp.get(k) == v for k, v in params.items())
    if same and stamp.get("complete") and (out / "README.md").exists():
        return {domain: dict(splits) for domain, splits in counts.items()}
    if stamp is not None and not same:
        for sub in ("cityscapes", "kitti"):  # our own earlier output: replace it
            shutil.rmtree(out / sub, ignore_errors=True)
    elif stamp is None and any((out / sub).exists() for sub in ("cityscapes", "kitti")):
        raise DataError(
            f"{out}: holds cityscapes/ or kitti/ folders not written by `domain-gap sample` "
            f"(no {STAMP}); expected an empty or new folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(stamp_path, json.dumps({**params, "complete": False}).encode())
    frames = _frames(counts, seed)
    todo = [f for f in frames if not (same and (out / f.image).exists())]  # resume
    _write_frames(out, todo, seed, progress)
    write_atomic(out / "README.md", _readme(seed, size, counts).encode())
    urban = [f.image for f in frames if f.urban]
    done = {**params, "complete": True, "urban_kitti_share": URBAN_KITTI_SHARE}
    done["urban_kitti"] = urban
    write_atomic(stamp_path, (json.dumps(done, indent=2) + "\n").encode())
    return {domain: dict(splits) for domain, splits in counts.items()}
