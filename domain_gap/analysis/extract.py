"""One streaming pass per domain: model outputs, per-sample metrics and metadata, cached.

For every sample the pass records the per-image embedding (the configured tap), per-class
embeddings under the ground truth, loss, IoUs, pixel accuracy, the confusion matrix, the mean
class-probability vector (BBSD), predicted class fractions, a small predicted mask for
thumbnails and the metadata. Every number comes from the same pure ``domain_gap`` functions the
Tensorleap binder registers (encoders, metrics, metadata); this module only wires them to the
model and the cache.

Memory is bounded: images are streamed one batch at a time and dropped. What scales with N is
only the per-sample vectors held in :class:`Features`: about ``d * 4 + 19 * d * 2 + 19 * 19 * 8``
bytes per sample (≈ 14 KB at d = 256), plus the metadata fields.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from domain_gap.allocator import keep_freed_blocks
from domain_gap.analysis.cache import FeatureCache
from domain_gap.atomic import write_atomic
from domain_gap.config import Config
from domain_gap.encoders import normalize_image
from domain_gap.labels import IGNORE_INDEX
from domain_gap.metadata import compute_metadata_batch
from domain_gap.metrics import per_class_iou, pixel_accuracy, sample_miou

if TYPE_CHECKING:
    from domain_gap.metrics_torch import PixelSummary

PRED_STRIDE = 4
"""The cached predicted mask keeps every 4th pixel (nearest), enough for report thumbnails."""
CALIBRATION_BINS = 15
"""Equal-width confidence bins of the per-image calibration counts (ECE)."""

RECORD_FIELDS = (
    "embedding",
    "class_emb",
    "class_counts",
    "loss",
    "miou",
    "class_iou",
    "pixel_acc",
    "confusion",
    "prob_mean",
    "pred_frac",
    "pred_small",
    "labelled",
    "calibration",
    "entropy",
    "max_prob",
    "metadata",
)
"""Arrays stored in one cache shard (plus ``sample_id`` and ``cache_version``)."""


class ExtractionError(ValueError):
    """The model or data cannot be run as configured."""


class Runner(Protocol):
    """A model that maps a normalised batch and its labels to arrays (see :class:`TorchRunner`)."""

    def __call__(self, x: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        """``x`` (B,3,H,W) float32, ``labels`` (B,H,W) uint8 → ``logits`` (B,C,H,W) (numpy or
        a torch tensor on the model's device), ``embedding`` (B,d), ``class_emb`` (B,C,d),
        ``class_counts`` (B,C)."""
        ...


@dataclass
class Features:
    """Per-sample records of one or more domains, row-aligned (row i = ``sample_ids[i]``)."""

    sample_ids: np.ndarray
    domains: np.ndarray
    subsets: np.ndarray
    embeddings: np.ndarray
    """(N, d) float32 image embeddings from the configured tap."""
    class_emb: np.ndarray
    """(N, C, d) float16 mean tap feature inside each ground-truth class (zero where absent)."""
    class_counts: np.ndarray
    """(N, C) feature-map cells of each class behind ``class_emb``: use rows with counts > 0."""
    loss: np.ndarray
    miou: np.ndarray
    class_iou: np.ndarray
    """(N, C) per-class IoU, NaN where a class is in neither ground truth nor prediction."""
    pixel_acc: np.ndarray
    confusion: np.ndarray
    """(N, C, C) int64 confusion matrices (rows = ground truth), for dataset-level IoU."""
    prob_mean: np.ndarray
    """(N, C) mean softmax probability over the valid (unpadded) pixels."""
    pred_frac: np.ndarray
    """(N, C + 1) share of input pixels predicted as each class; last column = padding."""
    labelled: np.ndarray
    """(N,) bool: the sample has a ground-truth label (otherwise loss/IoU are NaN)."""
    calibration: np.ndarray
    """(N, bins, 3) per-image calibration counts (pixels, sum of confidence, correct), for ECE."""
    metadata: dict[str, np.ndarray] = field(default_factory=dict)
    """Per-sample metadata fields: float64 arrays for numbers, str arrays otherwise."""
    entropy: np.ndarray | None = None
    """(N,) mean predictive entropy over the valid pixels (label-free; NaN when not given)."""
    max_prob: np.ndarray | None = None
    """(N,) mean top softmax probability over the valid pixels (NaN when not given)."""

    def __post_init__(self) -> None:
        for name in ("entropy", "max_prob"):
            if getattr(self, name) is None:
                setattr(self, name, np.full(len(self.sample_ids), np.nan))

    def __len__(self) -> int:
        return len(self.sample_ids)

    def take(self, index: np.ndarray | Sequence[int]) -> Features:
        """Rows ``index`` (indices or a boolean mask) as a new :class:`Features`; a contiguous
        ascending run of rows (a domain, a subset) is a view, not a copy."""
        idx: Any = np.asarray(index)
        if idx.dtype == np.bool_:
            idx = np.flatnonzero(idx)
        if idx.size and idx.ndim == 1 and np.array_equal(idx, np.arange(idx[0], idx[0] + idx.size)):
            idx = slice(int(idx[0]), int(idx[0]) + idx.size)
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "metadata"}
        return Features(
            **{name: arr[idx] for name, arr in values.items()},
            metadata={k: v[idx] for k, v in self.metadata.items()},
        )

    def domain(self, name: str) -> Features:
        """The rows of one domain."""
        return self.take(self.domains == name)

    @staticmethod
    def concat(parts: Sequence[Features]) -> Features:
        """Stack several :class:`Features` row-wise (metadata fields are unioned)."""
        if not parts:
            raise ValueError("Features.concat: nothing to concatenate")
        names = [f.name for f in fields(Features) if f.name != "metadata"]
        stacked = {n: np.concatenate([getattr(p, n) for p in parts]) for n in names}
        keys = sorted({k for p in parts for k in p.metadata})
        meta = {}
        for key in keys:
            cols = [p.metadata.get(key, np.full(len(p), np.nan)) for p in parts]
            if all(c.dtype.kind == "f" for c in cols):
                meta[key] = np.concatenate(cols)
            else:
                meta[key] = np.concatenate([c.astype(str) for c in cols])
        return Features(**stacked, metadata=meta)


def metadata_columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Per-sample metadata dicts → columns: float64 where every value is a number, else str.

    Booleans count as numbers (0/1). A field missing from a row is NaN (numeric column) or ""
    (text column).
    """
    keys = sorted({k for row in rows for k in row})
    columns: dict[str, np.ndarray] = {}
    for key in keys:
        values = [row.get(key) for row in rows]
        present = [v for v in values if v is not None]
        if all(isinstance(v, int | float | np.number | np.bool_) for v in present):
            columns[key] = np.array([np.nan if v is None else float(v) for v in values])
        else:
            columns[key] = np.array(["" if v is None else str(v) for v in values], dtype=str)
    return columns


def metadata_columns_json(texts: Sequence[str]) -> dict[str, np.ndarray]:
    """:func:`metadata_columns` of JSON-encoded rows, decoded twice (once for the fields and
    their types, once to fill preallocated columns) so that the rows never all live as dicts."""
    numeric: dict[str, bool] = {}
    for text in texts:
        for key, value in json.loads(text).items():
            is_num = value is None or isinstance(value, int | float)  # bool is an int
            numeric[key] = numeric.get(key, True) and is_num
    n = len(texts)
    nums = {k: np.full(n, np.nan) for k, v in numeric.items() if v}
    strs: dict[str, list[str]] = {k: [""] * n for k, v in numeric.items() if not v}
    for i, text in enumerate(texts):
        for key, value in json.loads(text).items():
            if value is None:
                continue
            if key in nums:
                nums[key][i] = float(value)
            else:
                strs[key][i] = str(value)
    columns = {**nums, **{k: np.array(v, dtype=str) for k, v in strs.items()}}
    return {k: columns[k] for k in sorted(columns)}


class TorchRunner:
    """Runs a ``models`` segmentation network through ``models.run_batch`` (inference mode)."""

    def __init__(self, model: Any, device: Any, tap: str) -> None:
        self.model = model
        self.device = device
        self.tap = tap

    def get(self) -> TorchRunner:
        """This runner (the loaded model); :class:`LazyRunner` loads one first."""
        return self

    def __call__(
        self, x: np.ndarray, labels: np.ndarray, cam: tuple[Any, str] | None = None
    ) -> dict[str, Any]:
        """The model's outputs (see :class:`Runner`); with ``cam`` = (class-masks function of
        the logits, layer) the same forward also gives every class's Grad-CAM (``cams``)."""
        if cam is not None:
            return self._with_cam(x, labels, *cam)
        import torch

        from models import class_embeddings, image_embedding

        # models.run_batch, except that the labels reach class_embeddings already at the tap's
        # size when it divides the input's: every s-th pixel is exactly what its nearest-
        # neighbour resize picks (floor(i * s)), without converting the full-size label maps.
        self.model.eval()
        with torch.inference_mode():
            taps = self.model.forward_taps(torch.as_tensor(x, dtype=torch.float32).to(self.device))
            feature = taps[self.tap]
            small = _label_grid(labels, tuple(feature.shape[-2:]))
            emb, counts = class_embeddings(feature, small, self.model.info.num_classes)
            return {
                "logits": taps["logits"],
                "embedding": image_embedding(taps, self.tap).float().cpu().numpy(),
                "class_emb": emb.float().cpu().numpy(),
                "class_counts": counts.cpu().numpy().astype(np.int64),
            }

    def _with_cam(self, x: np.ndarray, labels: np.ndarray, masks: Any, layer: str) -> dict:
        import torch

        from models import class_embeddings, image_embedding
        from models.cam import gradcam

        self.model.eval()
        out = gradcam(
            self.model, torch.as_tensor(x, dtype=torch.float32).to(self.device), masks, layer
        )
        assert out.taps is not None  # gradcam returns its forward's taps
        with torch.no_grad():
            emb, counts = class_embeddings(out.taps[self.tap], labels, self.model.info.num_classes)
            return {
                "logits": out.logits,
                "embedding": image_embedding(out.taps, self.tap).float().cpu().numpy(),
                "class_emb": emb.float().cpu().numpy(),
                "class_counts": counts.cpu().numpy().astype(np.int64),
                "cams": out.cams,
            }


def _label_grid(labels: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(B, H, W) labels at a (h, w) feature grid by nearest neighbour when h | H and w | W
    (every (H/h)-th row and (W/w)-th column), else unchanged (class_embeddings resizes)."""
    y = np.asarray(labels)
    (big_h, big_w), (h, w) = y.shape[-2:], hw
    if h <= 0 or w <= 0 or big_h % h or big_w % w:
        return y
    return np.ascontiguousarray(y[:, :: big_h // h, :: big_w // w])


def load_runner(config: Config, cache: FeatureCache | None = None) -> TorchRunner:
    """Load the configured checkpoint on the configured device; write its card next to the cache.

    Raises :class:`ExtractionError` when the checkpoint is missing, ``models.CheckpointError``
    (a ValueError) when it does not fit. The process then keeps freed blocks for the next batch
    (:func:`domain_gap.allocator.keep_freed_blocks`): its forward passes stop re-faulting their
    activations.
    """
    from models import load_checkpoint, select_device

    path = Path(config.resolve(config.model.checkpoint) or "")
    if not path.is_file():
        raise ExtractionError(f"{path}: model checkpoint not found (config model.checkpoint)")
    model, card = load_checkpoint(
        path,
        arch=config.model.arch,
        num_classes=config.model.num_classes,
        output_stride=config.model.output_stride,
    )
    import torch

    keep_freed_blocks()
    device = select_device(config.model.device)
    # channels-last convolutions run about 30% faster on CPU; outputs agree to ~1e-5.
    model = model.to(device, memory_format=torch.channels_last).eval()
    if cache is not None:
        write_model_card(cache, card)
    return TorchRunner(model, device, config.model.tap)


class LazyRunner:
    """Loads the configured checkpoint on its first call only (a fully cached run never does)."""

    def __init__(self, config: Config, cache: FeatureCache | None = None) -> None:
        self.config = config
        self.cache = cache
        self._runner: TorchRunner | None = None

    def get(self) -> TorchRunner:
        """The loaded runner (loading it now if it is not loaded yet)."""
        if self._runner is None:
            self._runner = load_runner(self.config, self.cache)
        return self._runner

    def __call__(self, x: np.ndarray, labels: np.ndarray, **kwargs: Any) -> dict[str, Any]:
        return self.get()(x, labels, **kwargs)


def write_model_card(cache: FeatureCache, card: Any) -> None:
    """Keep the checkpoint's card beside its shards so cached reruns can report it."""
    card_dict = card if isinstance(card, dict) else getattr(card, "__dict__", {"card": str(card)})
    cache.root.mkdir(parents=True, exist_ok=True)
    text = json.dumps(card_dict, default=str, indent=1, sort_keys=True)
    write_atomic(cache.root / "model.json", text.encode())  # a full disk names the path


def read_model_card(cache: FeatureCache) -> dict[str, Any]:
    """The card written by :func:`write_model_card`, or {} when the model was never loaded."""
    try:
        return json.loads((cache.root / "model.json").read_text())
    except (OSError, ValueError):
        return {}


@dataclass(frozen=True)
class Forwarded:
    """One batch after the model: the (possibly mitigated) samples, the model's small outputs
    (embeddings) and the per-pixel work already reduced to :class:`PixelSummary`."""

    prepared: Sequence[Any]
    labelled: np.ndarray
    out: Mapping[str, np.ndarray]
    pixels: PixelSummary
    valid: np.ndarray | None = None
    cams: Any = None
    """(B, C, h, w) Grad-CAMs when the pass also makes heatmaps (else None)."""
    cam_masks: dict[str, np.ndarray] | None = None


def forward_batch(
    runner: Runner,
    prepared: Sequence[Any],
    config: Config,
    transform: Any = None,
    cam_sink: Any = None,
    x: np.ndarray | None = None,
) -> Forwarded:
    """Normalise a batch of ``PreparedSample`` (``transform``, a fitted mitigation, maps each
    image first), run the model and reduce its logits where they are (torch, model's device).

    ``cam_sink`` (a ``heatmaps.run.CamSink``, with a :class:`TorchRunner`) makes the same
    forward give the heatmaps' Grad-CAMs too."""
    if transform is not None:
        prepared = [_transformed(p, transform) for p in prepared]
    images = np.stack([p.image for p in prepared])
    labels = np.stack(
        [
            p.label if p.label is not None else np.full(images.shape[1:3], IGNORE_INDEX, np.uint8)
            for p in prepared
        ]
    ).astype(np.uint8)
    if x is None:
        x = normalize_image(images, config.image.mean, config.image.std)
    valid = np.stack([np.asarray(p.valid, dtype=bool) for p in prepared])
    found = None
    if cam_sink is None:
        out = dict(runner(x, labels))
    else:
        masks, found = cam_sink.target(labels, valid)
        out = dict(runner(x, labels, cam=(masks, config.analysis.heatmaps.layer)))  # type: ignore[call-arg]
    cams = out.pop("cams", None)
    logits = out.pop("logits")
    if tuple(logits.shape[2:]) != labels.shape[1:]:
        raise ExtractionError(
            f"model logits are {tuple(logits.shape[2:])}, expected the input size "
            f"{labels.shape[1:]}"
        )
    from domain_gap.metrics_torch import summarize_pixels  # torch: not on the platform's path

    pixels = summarize_pixels(logits, labels, valid, CALIBRATION_BINS, PRED_STRIDE)
    labelled = np.array([p.label is not None for p in prepared])
    return Forwarded(prepared, labelled, out, pixels, valid, cams, found)


def compute_records(
    runner: Runner, prepared: Sequence[Any], config: Config, transform: Any = None
) -> list[dict[str, np.ndarray]]:
    """Run one batch of ``PreparedSample`` through the model and the pure functions.

    ``transform`` (a fitted mitigation) maps each image before it is normalised; the metadata
    then describes the transformed image (rounded to uint8). Returns one dict of arrays per
    sample (the shard content, see :data:`RECORD_FIELDS`).
    """
    return batch_records(forward_batch(runner, prepared, config, transform))


def batch_records(batch: Forwarded) -> list[dict[str, np.ndarray]]:
    """The per-sample records of a forwarded batch: IoUs from its confusion matrices and the
    metadata of its images (numpy, host side; runs on the writer thread)."""
    px, out, labelled = batch.pixels, batch.out, batch.labelled
    cm = px.confusion
    class_iou = per_class_iou(cm)
    miou = sample_miou(cm)
    acc = pixel_accuracy(cm)
    metadata = _metadata(batch.prepared, batch.valid)
    return [
        {
            "embedding": np.asarray(out["embedding"][i], dtype=np.float32),
            "class_emb": np.asarray(out["class_emb"][i]).astype(np.float16),
            "class_counts": np.asarray(out["class_counts"][i]).astype(np.int64),
            "loss": np.asarray(px.loss[i] if labelled[i] else np.nan),  # not 0.0: no label
            "miou": np.asarray(miou[i], dtype=np.float64),
            "class_iou": class_iou[i].astype(np.float64),
            "pixel_acc": np.asarray(acc[i], dtype=np.float64),
            "confusion": cm[i],
            "prob_mean": px.prob_mean[i],
            "pred_frac": px.pred_frac[i],
            "pred_small": px.pred_small[i],
            "labelled": np.asarray(bool(labelled[i])),
            "calibration": px.calibration[i],
            "entropy": np.asarray(px.entropy[i], dtype=np.float64),
            "max_prob": np.asarray(px.max_prob[i], dtype=np.float64),
            "metadata": np.asarray(json.dumps(_jsonable(metadata[i]), sort_keys=True)),
        }
        for i in range(len(batch.prepared))
    ]


def _metadata(prepared: Sequence[Any], valid: np.ndarray | None = None) -> list[dict[str, Any]]:
    """The metadata of a batch of prepared samples, computed for the batch at once (``valid``:
    their stacked masks, when the caller has them already)."""
    if not prepared:
        return []
    images = np.stack([_as_uint8(p.image) for p in prepared])
    if valid is None:
        valid = np.stack([np.asarray(p.valid, dtype=bool) for p in prepared])
    infos = [
        {
            "domain": p.record.domain,
            "group": p.record.group,
            "file_name": p.record.file_name,
            "orig_hw": p.orig_hw,
            "vehicle": p.vehicle,
        }
        for p in prepared
    ]
    return compute_metadata_batch(images, [p.label for p in prepared], valid, infos)


def _transformed(sample: Any, transform: Any) -> Any:
    """The prepared sample with its image mapped by a fitted mitigation (float32, 0..255)."""
    from dataclasses import replace

    return replace(sample, image=transform.apply(sample.image, sample.valid))


def _as_uint8(image: np.ndarray) -> np.ndarray:
    """A mitigated float image as the uint8 image the metadata functions describe."""
    if image.dtype == np.uint8:
        return image
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _jsonable(meta: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None if math.isnan(value) else value
        out[key] = value
    return out


def cache_source(config: Config, domain: str) -> str:
    """What a domain's shards are keyed by besides the sample id: its root, plus the built-in
    sample's version, seed and size when the root is one, so a regenerated sample (same paths,
    new pictures) is never served the records of the old one."""
    from domain_gap.data.sample import sample_identity

    cfg = config.domain(domain)
    root = config.resolve(cfg.root) or ""
    if cfg.kind == "folder":  # the label template and format change what a label means
        root = f"{root}\0{cfg.labels}\0{cfg.label_format}"
    identity = sample_identity(root)
    return root if identity is None else f"{root}\0{identity}"


def domain_subset(config: Config, dataset: Any, name: str) -> str | None:
    """The subset of domain ``name`` that is analysed: the configured one, except for a target
    with no frame in it but unlabeled frames, which enters with every unlabeled frame (the
    source always stays on the configured subset, so its training images never mix in)."""
    subset = None if config.analysis.subset == "all" else config.analysis.subset
    if subset is None or name == config.source_domain:
        return subset
    if not dataset.select(domain=name, subset=subset) and dataset.select(
        domain=name, subset="unlabeled"
    ):
        return "unlabeled"
    return subset


def batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of ``items`` of at most ``size`` (the last one shorter)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def extract_domain(
    config: Config,
    dataset: Any,
    domain: str,
    subset: str | None,
    *,
    runner: Runner | None = None,
    cache: FeatureCache | None = None,
    progress: bool = True,
    transform: Any = None,
    label: str = "",
    cam_sink: Any = None,
    records: Sequence[Any] | None = None,
) -> Features:
    """Records of one domain's subset (``None`` = all), computing only what the cache lacks.

    ``runner`` defaults to the configured checkpoint, loaded only when some sample is missing
    from the cache. Each batch is written to the cache before the next one starts, so an
    interrupted pass resumes where it stopped. ``transform`` (a fitted mitigation, with a
    cache of its own) maps the images first; ``label`` names the pass in the progress bar.
    ``cam_sink`` (``heatmaps.run.CamSink``) writes the heatmap shards of the batches it still
    lacks from the same forward (a torch runner only; others leave them to the heatmap pass).
    ``records``: these frames of the domain instead of the whole subset (a chunk of it).
    """
    cache = cache or FeatureCache.for_config(config)
    records = list(dataset.select(domain=domain, subset=subset) if records is None else records)
    if not records:
        raise ExtractionError(f"domain {domain!r} has no samples in subset {subset or 'all'!r}")
    source = cache_source(config, domain)
    rows = _Rows(len(records))
    missing = []
    for i, r in enumerate(records):
        shard = cache.load(domain, r.sample_id, source, RECORD_FIELDS)
        if shard is None:
            missing.append(i)
        else:
            rows.put(i, shard)
    if missing:
        runner = runner or LazyRunner(config, cache)
        desc = f"extract {domain}" + (f" ({label})" if label else "")
        bar = tqdm(total=len(missing), desc=desc, unit="img", disable=not progress)

        def forward(chunk: Sequence[int], loaded: tuple[list[Any], np.ndarray]) -> Forwarded:
            prepared, x = loaded
            ids = [records[i].sample_id for i in chunk]
            torch_runner = isinstance(getattr(runner, "get", lambda: None)(), TorchRunner)
            wanted = cam_sink is not None and torch_runner and cam_sink.wanted(domain, ids, source)
            sink = cam_sink if wanted else None
            return forward_batch(runner, prepared, config, cam_sink=sink, x=x)

        def finish(chunk: Sequence[int], batch: Forwarded) -> None:
            ids = [records[i].sample_id for i in chunk]
            for i, arrays in zip(chunk, batch_records(batch), strict=True):
                cache.save(domain, records[i].sample_id, arrays, source)
                rows.put(i, arrays)
            if batch.cams is not None:
                cam_sink.save(domain, ids, source, batch.cams, batch.cam_masks, batch.valid)
            bar.update(len(chunk))

        def load(chunk: Sequence[int]) -> tuple[list[Any], np.ndarray]:
            prepared = [dataset.prepare(records[i]) for i in chunk]
            if transform is not None:
                prepared = [_transformed(p, transform) for p in prepared]
            images = np.stack([p.image for p in prepared])
            return prepared, normalize_image(images, config.image.mean, config.image.std)

        from domain_gap.metrics_torch import scratch_buffer  # torch: not on the platform's path

        with bar, scratch_buffer():  # one buffer for every batch's exponentials
            _pipelined(
                list(batches(missing, config.model.batch_size)),
                load,
                forward,
                finish,
            )
    return rows.features(records)


def _pipelined(
    chunks: Sequence[Sequence[int]],
    load: Callable[[Sequence[int]], Any],
    forward: Callable[[Sequence[int], Any], Forwarded],
    finish: Callable[[Sequence[int], Forwarded], None],
) -> None:
    """Run ``forward`` on this thread (the model's threads) while a loader thread decodes, mitigates
    and normalises the next chunk and a writer thread computes the metadata of the previous batch
    and writes its shards. At most one batch waits on each side, so memory stays flat and an
    interrupted pass loses at most two batches; errors surface where they happen.
    """
    if not chunks:
        return
    with ThreadPoolExecutor(1) as loader, ThreadPoolExecutor(1) as writer:
        upcoming = loader.submit(load, chunks[0])
        pending: Future[None] | None = None
        for k, chunk in enumerate(chunks):
            prepared = upcoming.result()
            if k + 1 < len(chunks):
                upcoming = loader.submit(load, chunks[k + 1])
            batch = forward(chunk, prepared)
            if pending is not None:
                pending.result()
            pending = writer.submit(finish, chunk, batch)
        pending.result()


_ROW_DTYPES = {
    "embedding": np.float32,
    "class_emb": np.float16,
    "class_counts": np.int64,
    "loss": np.float64,
    "miou": np.float64,
    "class_iou": np.float64,
    "pixel_acc": np.float64,
    "confusion": np.int64,
    "prob_mean": np.float64,
    "pred_frac": np.float64,
    "labelled": np.bool_,
    "calibration": np.float64,
    "entropy": np.float64,
    "max_prob": np.float64,
}
"""The :class:`Features` arrays filled from shards (the predicted masks stay on disk)."""


class _Rows:
    """The records of one pass, written row by row into arrays allocated once (memory = the
    final :class:`Features`, never a list of shards plus their stacked copy)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.arrays: dict[str, np.ndarray] = {}
        self.meta: list[str] = [""] * n

    def put(self, i: int, shard: Mapping[str, np.ndarray]) -> None:
        for name, dtype in _ROW_DTYPES.items():
            value = np.asarray(shard[name], dtype=dtype)
            if name not in self.arrays:
                self.arrays[name] = np.empty((self.n, *value.shape), dtype=dtype)
            self.arrays[name][i] = value
        self.meta[i] = str(shard["metadata"])

    def features(self, records: Sequence[Any]) -> Features:
        a = self.arrays
        return Features(
            sample_ids=np.array([r.sample_id for r in records], dtype=str),
            domains=np.array([r.domain for r in records], dtype=str),
            subsets=np.array([r.subset for r in records], dtype=str),
            embeddings=a["embedding"],
            class_emb=a["class_emb"],
            class_counts=a["class_counts"],
            loss=a["loss"],
            miou=a["miou"],
            class_iou=a["class_iou"],
            pixel_acc=a["pixel_acc"],
            confusion=a["confusion"],
            prob_mean=a["prob_mean"],
            pred_frac=a["pred_frac"],
            labelled=a["labelled"],
            calibration=a["calibration"],
            metadata=metadata_columns_json(self.meta),
            entropy=a["entropy"],
            max_prob=a["max_prob"],
        )


def load_predictions(
    config: Config, cache: FeatureCache, records: Sequence[Any]
) -> list[np.ndarray | None]:
    """The small cached predicted masks (every :data:`PRED_STRIDE`-th pixel) of ``records``."""
    out: list[np.ndarray | None] = []
    sources: dict[str, str] = {}
    for r in records:
        if r.domain not in sources:
            sources[r.domain] = cache_source(config, r.domain)
        source = sources[r.domain]
        shard = cache.load(r.domain, r.sample_id, source, ("pred_small",))
        out.append(None if shard is None else shard["pred_small"])
    return out
