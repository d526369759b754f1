"""The heatmap stage: one cached CAM pass over every domain's evaluation subset, then the
per-class comparisons of the source with each target.

Per image the cache keeps, for each class present (its mask covers ``min_area`` of the valid
pixels), the statistics of :mod:`domain_gap.heatmaps.stats` and the grid map (float16, scaled
to a maximum of 1): a few KB. Shards live in a sub-cache of the extraction's
:class:`~domain_gap.analysis.cache.FeatureCache` keyed by the heatmap settings, are written
batch by batch and atomically, so an interrupted pass resumes, and a cached rerun never loads
the model.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from domain_gap.analysis.cache import FeatureCache
from domain_gap.analysis.extract import batches, cache_source, domain_subset, load_runner
from domain_gap.analysis.results import Heatmaps
from domain_gap.config import Config
from domain_gap.encoders import normalize_image
from domain_gap.heatmaps.compare import Settings, compare_domains, mean_maps
from domain_gap.heatmaps.stats import STAT_NAMES, AttentionRecords, image_stats
from domain_gap.labels import CLASS_NAMES, IGNORE_INDEX

HEATMAP_VERSION = 1
"""Bump when a heatmap shard's content changes; old shards are then ignored."""
FIELDS = ("classes", "stats", "maps", "area")

METHOD = {
    "aspp": "Grad-CAM at the ASPP output (the latent embedding's tap)",
    "classifier": "Grad-CAM at the input of the final 1x1 classifier (the decoder feature)",
}
STATISTICS = (
    "on-object = share of the CAM mass on the class's own pixels; context = share on the valid "
    "pixels outside them within {ring:g} x the valid image height (Euclidean); centroid = "
    "attention-weighted mean position in the valid box (0 = left/top, 1 = right/bottom); "
    "entropy = Shannon entropy of the map on the {rows}x{cols} grid / log(cells) (1 = even). "
    "Padding is excluded from every statistic."
)


def settings_key(config: Config) -> str:
    """Hash of everything besides the model and the input that changes a heatmap shard."""
    h = config.analysis.heatmaps
    fields = {
        "version": HEATMAP_VERSION,
        "layer": h.layer,
        "target": h.target,
        "min_area": h.min_area,
        "ring": h.ring,
        "grid": list(h.grid),
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def heatmap_cache(cache: FeatureCache, config: Config) -> FeatureCache:
    """The heatmap shards' cache: a subfolder of the extraction cache named by the settings."""
    sub = copy.copy(cache)
    h = config.analysis.heatmaps
    sub.root = cache.root / "heatmaps" / f"{h.layer}-{h.target}-{settings_key(config)}"
    return sub


def class_masks(
    pred: np.ndarray, labels: np.ndarray, valid: np.ndarray, config: Config
) -> tuple[np.ndarray, np.ndarray]:
    """(B, C, H, W) bool class masks under the configured target and (B, C) presence."""
    h, c = config.analysis.heatmaps, config.model.num_classes
    source = pred if h.target == "predicted" else labels
    source = np.where(valid, source, IGNORE_INDEX)
    masks = source[:, None] == np.arange(c)[None, :, None, None]
    need = np.maximum(1.0, h.min_area * valid.reshape(len(valid), -1).sum(axis=1))
    present = masks.reshape(*masks.shape[:2], -1).sum(axis=2) >= need[:, None]
    return masks & present[:, :, None, None], present


def cam_records(model: Any, device: Any, prepared: Sequence[Any], config: Config) -> list[dict]:
    """The heatmap shard of each sample of one batch (``PreparedSample`` list)."""
    import torch

    from models.cam import gradcam

    images = np.stack([p.image for p in prepared])
    valid = np.stack([np.asarray(p.valid, dtype=bool) for p in prepared])
    void = np.full(images.shape[1:3], IGNORE_INDEX, np.uint8)
    labels = np.stack([void if p.label is None else p.label for p in prepared])
    x = torch.from_numpy(normalize_image(images, config.image.mean, config.image.std)).to(device)
    found: dict[str, np.ndarray] = {}

    def target(logits: torch.Tensor) -> torch.Tensor:
        pred = logits.argmax(dim=1).cpu().numpy()
        found["masks"], found["present"] = class_masks(pred, labels, valid, config)
        return torch.from_numpy(found["masks"]).to(logits.device)

    out = gradcam(model, x, target, config.analysis.heatmaps.layer)
    return shards_from(out.cams, found["masks"], found["present"], valid, config)


def shards_from(
    cams: Any, masks: np.ndarray, present: np.ndarray, valid: np.ndarray, config: Config
) -> list[dict[str, np.ndarray]]:
    """Heatmap shards from a batch's CAMs (B, C, h, w) (``models.cam.gradcam``, e.g. run by
    an extraction pass that shares the forward), class masks (B, C, H, W), presence (B, C)
    and valid pixels (B, H, W)."""
    import torch

    from models.cam import upsample_cams

    h = config.analysis.heatmaps
    records = []
    for b in range(len(valid)):
        idx = np.flatnonzero(present[b])
        vb = torch.from_numpy(valid[b : b + 1]).to(cams.device)
        up = upsample_cams(cams[b : b + 1, idx], valid.shape[1:3], vb)[0].float().cpu().numpy()
        stats, maps = image_stats(up, masks[b, idx], valid[b], h.ring, h.grid)
        peak = maps.max(axis=(1, 2), keepdims=True) if len(maps) else maps
        scaled = np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0)
        area = masks[b, idx].reshape(len(idx), -1).sum(axis=1) / max(valid[b].sum(), 1)
        records.append(
            {
                "classes": idx.astype(np.int16),
                "stats": stats.astype(np.float64),
                "maps": scaled.astype(np.float16),
                "area": area.astype(np.float64),
            }
        )
    return records


class CamSink:
    """Heatmap shards made inside the extraction pass, from the forward it runs anyway.

    ``extract_domain`` asks :meth:`wanted` which samples of a batch lack a heatmap shard, runs
    the model through ``models.cam.gradcam`` with :meth:`target` as the class masks (one
    forward gives the logits, the taps and every CAM) and hands the CAMs to :meth:`save`.
    Samples it does not cover (a cached extraction, a runner without a torch model) are left
    to :func:`cam_pass`, so the shards are the same either way.
    """

    def __init__(self, config: Config, cache: FeatureCache) -> None:
        self.config = config
        self.sub = heatmap_cache(cache, config)

    def wanted(self, domain: str, sample_ids: Sequence[str], source: str) -> bool:
        """Whether any of these samples still needs its heatmap shard."""
        return any(self.sub.load(domain, s, source, FIELDS) is None for s in sample_ids)

    def target(self, labels: np.ndarray, valid: np.ndarray) -> tuple[Any, dict[str, np.ndarray]]:
        """The masks function for ``gradcam`` and the dict it fills (masks, presence)."""
        import torch

        found: dict[str, np.ndarray] = {}

        def masks(logits: torch.Tensor) -> torch.Tensor:
            pred = logits.argmax(dim=1).cpu().numpy()
            found["masks"], found["present"] = class_masks(pred, labels, valid, self.config)
            return torch.from_numpy(found["masks"]).to(logits.device)

        return masks, found

    def save(
        self,
        domain: str,
        sample_ids: Sequence[str],
        source: str,
        cams: Any,
        found: dict[str, np.ndarray],
        valid: np.ndarray,
    ) -> None:
        """Write the shards of one batch (its CAMs, masks and valid pixels)."""
        shards = shards_from(cams, found["masks"], found["present"], valid, self.config)
        for sample_id, arrays in zip(sample_ids, shards, strict=True):
            self.sub.save(domain, sample_id, arrays, source)


def _model(runner: Any, config: Config, cache: FeatureCache) -> tuple[Any, Any]:
    """The torch model and device: the pipeline's runner's when it has one, else loaded."""
    loaded = runner.get() if hasattr(runner, "get") else None
    if loaded is None or not hasattr(loaded, "model"):
        loaded = load_runner(config, cache)
    return loaded.model, loaded.device


def cam_pass(
    config: Config,
    dataset: Any,
    domain: str,
    cache: FeatureCache,
    runner: Any = None,
    progress: bool = True,
) -> list[dict[str, np.ndarray]]:
    """Heatmap shards of one domain's evaluation subset, computing only what is missing."""
    records = list(dataset.select(domain=domain, subset=domain_subset(config, dataset, domain)))
    sub = heatmap_cache(cache, config)
    source = cache_source(config, domain)
    shards = [sub.load(domain, r.sample_id, source, FIELDS) for r in records]
    missing = [i for i, s in enumerate(shards) if s is None]
    if missing:
        model, device = _model(runner, config, cache)
        bar = tqdm(total=len(missing), desc=f"heatmaps {domain}", unit="img", disable=not progress)
        with bar:
            for chunk in batches(missing, config.model.batch_size):
                prepared = [dataset.prepare(records[i]) for i in chunk]
                computed = cam_records(model, device, prepared, config)
                for i, arrays in zip(chunk, computed, strict=True):
                    sub.save(domain, records[i].sample_id, arrays, source)
                    shards[i] = arrays
                bar.update(len(chunk))
    return [{"sample_id": r.sample_id, **s} for r, s in zip(records, shards, strict=True)]


def assemble(shards: Sequence[dict[str, Any]], domains: Sequence[str]) -> AttentionRecords:
    """Row-aligned (image, class) records of every shard (grid maps as distributions)."""
    grids, image, cls, stats, area = [], [], [], [], []
    for i, s in enumerate(shards):
        maps = np.asarray(s["maps"], dtype=np.float64)
        total = maps.sum(axis=(1, 2), keepdims=True)
        grids.append(np.divide(maps, total, out=np.zeros_like(maps), where=total > 0))
        image.append(np.full(len(s["classes"]), i))
        cls.append(np.asarray(s["classes"], dtype=np.int64))
        stats.append(np.asarray(s["stats"], dtype=np.float64).reshape(-1, len(STAT_NAMES)))
        area.append(np.asarray(s["area"], dtype=np.float64))
    return AttentionRecords(
        sample_ids=np.array([s["sample_id"] for s in shards], dtype=str),
        domains=np.asarray(domains, dtype=str),
        image=np.concatenate(image).astype(np.int64),
        cls=np.concatenate(cls),
        stats=np.concatenate(stats),
        maps=np.concatenate(grids),
        area=np.concatenate(area),
    )


@dataclass(frozen=True)
class HeatmapRun:
    """The heatmap stage's output: the summary section and what the report draws from."""

    section: Heatmaps
    records: AttentionRecords
    means: dict[str, dict[int, np.ndarray]]
    """domain → class index → mean grid map (a distribution) over its images with the class."""

    def map_of(self, sample_id: str, class_name: str) -> np.ndarray | None:
        """One image's grid map of one class (None when the class is not present there)."""
        rec = self.records
        hit = np.flatnonzero(
            (rec.sample_ids[rec.image] == sample_id) & (rec.cls == CLASS_NAMES.index(class_name))
        )
        return rec.maps[hit[0]] if len(hit) else None

    def columns(self, sample_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """samples.csv columns ``cam_<statistic>_<class>`` for every tested class (NaN where the
        class is absent from an image or the image was not in the pass)."""
        rec = self.records
        comps = self.section.comparisons.values()
        tested = [c.class_name for comp in comps for c in comp.classes if c.tested]
        row = {sid: i for i, sid in enumerate(sample_ids)}
        out: dict[str, np.ndarray] = {}
        for name in dict.fromkeys(tested):
            c = CLASS_NAMES.index(name)
            for k, stat in enumerate(STAT_NAMES):
                col = np.full(len(sample_ids), np.nan)
                for r in np.flatnonzero(rec.cls == c):
                    i = row.get(str(rec.sample_ids[rec.image[r]]))
                    if i is not None:
                        col[i] = rec.stats[r, k]
                out[f"cam_{stat}_{name.replace(' ', '_')}"] = col
        return out


def run_heatmaps(
    config: Config,
    dataset: Any,
    cache: FeatureCache,
    runner: Any = None,
    progress: bool = True,
) -> HeatmapRun:
    """The cached CAM pass over every domain's evaluation subset and every comparison."""
    h, a = config.analysis.heatmaps, config.analysis
    shards: list[dict[str, Any]] = []
    domains: list[str] = []
    for d in config.domains:
        part = cam_pass(config, dataset, d.name, cache, runner, progress)
        shards.extend(part)
        domains.extend([d.name] * len(part))
    rec = assemble(shards, domains)
    source = config.source_domain
    settings = Settings(h.min_images, a.permutations, a.alpha, config.seed)
    comparisons = {
        d.name: compare_domains(rec, source, d.name, CLASS_NAMES, settings)
        for d in config.domains
        if d.name != source
    }
    section = Heatmaps(
        layer=h.layer,
        target_masks=h.target,
        method=f"{METHOD[h.layer]}; target: the sum of class c's logits over the pixels "
        f"{h.target} as c; map = ReLU(gradient-weighted channel sum), upsampled to the input, "
        "padding zeroed",
        statistics=STATISTICS.format(ring=h.ring, rows=h.grid[0], cols=h.grid[1]),
        ring=h.ring,
        grid=(int(h.grid[0]), int(h.grid[1])),
        min_images=h.min_images,
        min_area=h.min_area,
        n_images={d.name: int((rec.domains == d.name).sum()) for d in config.domains},
        comparisons=comparisons,
    )
    means = {d.name: mean_maps(rec, d.name, len(CLASS_NAMES)) for d in config.domains}
    return HeatmapRun(section, rec, means)
