"""One validated config file: schema, load, validate.

Every setting of the toolkit lives here. Unknown keys, wrong types and missing required
fields raise :class:`ConfigError` naming the file, the key path and what was expected.
Relative paths are resolved against the config file's folder; ``gs://`` roots are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from domain_gap.labels import NUM_CLASSES

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "sample.yaml"


class ConfigError(ValueError):
    """The config file is missing, unreadable or invalid."""


def _allows_bool(annotation: object) -> bool:
    """Whether a field's type admits ``true``/``false`` anywhere (bool, or a union with it),
    or holds settings models (which check their own fields)."""
    if annotation is bool or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return True
    return any(_allows_bool(a) for a in get_args(annotation))


def _has_bool(value: object) -> bool:
    if isinstance(value, dict):
        return any(_has_bool(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_bool(v) for v in value)
    return isinstance(value, bool)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bools(cls, value: object, info: ValidationInfo) -> object:
        """Refuse true/false where a number or text is expected (pydantic reads true as 1)."""
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and not _allows_bool(field.annotation) and _has_bool(value):
            raise PydanticCustomError(
                "bool_refused", "expected a number or text, not a boolean (true/false)"
            )
        return value


MAX_SIDE = 8192
"""Largest model input height or width (a bigger one would exhaust memory, not run)."""
Triple = Annotated[tuple[float, float, float], Field(description="per-channel RGB value")]


class ImageConfig(_Strict):
    """Model input geometry and normalisation."""

    height: int = Field(256, gt=0, le=MAX_SIDE)
    width: int = Field(512, gt=0, le=MAX_SIDE)
    resize: Literal["pad", "crop", "stretch"] = "pad"
    """pad: keep aspect, fit inside and pad with void; crop: keep aspect, fill and centre-crop;
    stretch: ignore aspect (never the silent default)."""
    mean: Triple = (0.485, 0.456, 0.406)
    std: Triple = (0.229, 0.224, 0.225)
    max_pixels: int = Field(100_000_000, gt=0)
    """A frame or label whose file header declares more pixels is refused before it is decoded
    (decompression bombs, absurd sizes)."""

    @field_validator("std")
    @classmethod
    def _positive_std(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(v) <= 0:
            raise ValueError("every std must be > 0")
        return v


class DomainConfig(_Strict):
    """One dataset on disk or in a bucket, in its native layout."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["cityscapes", "kitti", "folder"]
    root: str = Field(min_length=1)
    """A local folder or ``gs://bucket/prefix`` holding the dataset's native layout."""
    splits: list[str] | None = Field(None, min_length=1)
    """Native split folders to read (Cityscapes: train/val/test; KITTI: training/testing);
    required for those kinds, not used by ``folder``."""
    images: str | None = Field(None, min_length=1)
    """``folder`` only: a glob under the root (``*``, ``?``, ``**`` for any folders)."""
    labels: str | None = Field(None, min_length=1)
    """``folder`` only: label path template from the image path, with ``{stem}``, ``{name}``,
    ``{suffix}``, ``{dir}`` (the image's folder under the root) and ``{parts[i]}`` (its i-th
    folder); an image whose label file is absent is unlabeled. None: every frame unlabeled."""
    label_format: Literal["labelIds", "trainIds", "color"] = "labelIds"
    """What the label files hold: Cityscapes label ids (GTA5 ids, Synthia-as-Cityscapes),
    trainIds with void 255 (BDD100K, converted Cityscapes), or (``folder`` only) the Cityscapes
    colours. labelIds files that hold trainIds are detected and refused."""
    groups: int | None = None
    """``folder`` only: index of the image's folder under the root that names its group
    (city, sequence, camera; negative counts from the file); None: its parent folder."""
    unlabeled_root: str | None = None
    """Optional folder of extra unlabeled frames (any ``*.png``/``*.jpg`` below it)."""
    val_fraction: float = Field(0.5, ge=0.0, le=1.0)
    """For datasets without an official val split (KITTI): share of labelled frames held out."""
    split_files: dict[Literal["train", "val"], str] | None = None
    """Explicit subset lists (one sample path per line), overriding the seeded split."""
    max_samples: int | None = Field(None, gt=0)
    """Cap per subset, for quick runs."""
    metadata_csv: str | None = None
    """Your own per-sample fields (ISP, camera, weather…): a CSV keyed by ``sample_id`` or
    ``file_name``, joined as ``user_<column>`` fields (missing rows NaN, counted)."""
    metadata_columns: list[str] | None = Field(None, min_length=1)
    """The CSV columns to use (each must be in its header); None: every non-key column."""

    @model_validator(mode="after")
    def _check_kind(self) -> DomainConfig:
        folder_keys = [k for k in ("images", "labels", "groups") if getattr(self, k) is not None]
        if self.kind == "folder":
            if self.images is None:
                raise ValueError("kind 'folder' needs 'images' (a glob under the root)")
            if self.splits is not None:
                raise ValueError("kind 'folder' has no native splits: remove 'splits'")
        else:
            if self.splits is None:
                raise ValueError(f"kind {self.kind!r} needs 'splits' (its native split folders)")
            if folder_keys:
                raise ValueError(
                    f"{folder_keys} are 'folder' settings, not used by kind {self.kind!r}"
                )
            if self.label_format == "color":
                raise ValueError(
                    f"label_format 'color' is a 'folder' setting; kind {self.kind!r} reads "
                    "labelIds or trainIds"
                )
        return self


class ModelConfig(_Strict):
    """Which network to analyse and how to run it."""

    checkpoint: str = "models/demo/deeplabv3plus_demo.pt"
    onnx: str | None = "models/demo/deeplabv3plus_demo.onnx"
    arch: str | None = None
    """Architecture name; None reads it from the checkpoint's model card."""
    num_classes: int = Field(NUM_CLASSES, gt=0)
    """Classes of the classifier (the label table's); a checkpoint with another width is refused."""
    output_stride: Literal[8, 16] = 16
    tap: Literal["aspp", "decoder"] = "aspp"
    """Feature map pooled into the per-image embedding."""
    embedding_dim: int | None = Field(None, gt=0)
    """Width of the ONNX model's ``embedding`` output; None takes the ONNX file's spec (a
    stated value that differs from it is refused)."""
    batch_size: int = Field(8, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"


MitigationKind = Literal[
    "rgb_normalize", "histogram_match", "histogram_match_lab", "fourier_amplitude", "adabn"
]
MODEL_SUPPLIED = ("model", "mean", "std")
"""AdaBN options the pipeline fills in from the model and the image config (not settable)."""


class MitigationConfig(_Strict):
    """One fix to test: a kind from ``domain_gap.mitigations`` and its options."""

    kind: MitigationKind
    name: str | None = Field(None, min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    """Label in the report, samples.csv columns and caches; defaults to ``kind``."""
    options: dict[str, float | int | str] = {}
    """Keyword options of the kind (fourier_amplitude: beta, window; adabn: source_weight,
    batch_size; histogram_match_lab: bins)."""

    @model_validator(mode="after")
    def _check_options(self) -> MitigationConfig:
        import inspect

        from domain_gap.mitigations import KINDS

        allowed = set(inspect.signature(KINDS[self.kind]).parameters) - set(MODEL_SUPPLIED)
        unknown = sorted(set(self.options) - allowed)
        if unknown:
            raise ValueError(
                f"{self.kind} options: unknown {unknown}; expected some of {sorted(allowed)}"
            )
        return self

    @property
    def label(self) -> str:
        return self.name or self.kind


class MitigationFitConfig(_Strict):
    """Which frames fit the mitigations: never the evaluated ones."""

    subsets: list[Literal["train", "unlabeled"]] = Field(["train", "unlabeled"], min_length=1)
    """Target subsets the transforms are fitted on (the evaluation subset is never used)."""
    source_subset: Literal["train", "val"] = "train"
    """Source subset whose pixels define the reference (the model's training distribution)."""
    max_images: int = Field(64, ge=2)
    """At most this many fit images per side (a seeded choice when there are more)."""


class HeatmapConfig(_Strict):
    """Where the model looks: class-conditional Grad-CAM per domain (``domain_gap.heatmaps``)."""

    enabled: bool = True
    layer: Literal["aspp", "classifier"] = "aspp"
    """aspp: the latent embedding's tap; classifier: the input of the final 1x1 class conv."""
    target: Literal["predicted", "labelled"] = "predicted"
    """The pixels whose class-c logits are summed: predicted as c, or labelled c."""
    min_images: int = Field(10, ge=2)
    """A class is tested when it is present in at least this many images of both domains."""
    min_area: float = Field(0.001, ge=0.0, lt=1.0)
    """A class counts as present in an image from this share of its valid pixels."""
    ring: float = Field(0.05, gt=0.0, le=1.0)
    """Width of the context ring around an object, as a share of the valid image height."""
    grid: tuple[Annotated[int, Field(ge=2, le=256)], Annotated[int, Field(ge=2, le=256)]] = (32, 64)
    """Rows and columns of the fixed normalised grid the maps are compared on."""


class AnalysisConfig(_Strict):
    """Statistics settings."""

    source: str | None = None
    """Name of the source domain; defaults to the first domain."""
    subset: Literal["train", "val", "all"] = "val"
    permutations: int = Field(500, ge=19)
    bootstrap: int = Field(200, ge=10)
    clusters: int = Field(8, ge=2)
    max_dim: int | None = Field(None, ge=2)
    """None: the standard FD on the full embedding (pooled PCA only where a domain has no
    more images than dimensions); a number caps the FD at that many PCA dimensions."""
    alpha: float = Field(0.05, gt=0, lt=1)
    mmd: Literal["auto", "exact", "linear"] = "auto"
    """The latent MMD test: exact up to 20,000 pooled images, random Fourier features above."""
    projection: Literal["auto", "pca", "tsne", "umap"] = "auto"
    """The latent map's 2-D projection; auto = t-SNE up to 5,000 images, then UMAP."""
    mitigations: list[MitigationConfig] = []
    """Fixes to re-measure on every target's evaluation subset (the "What if" section)."""
    mitigation_fit: MitigationFitConfig = MitigationFitConfig()
    heatmaps: HeatmapConfig = HeatmapConfig()
    """Where the model looks (the heatmaps section)."""
    subsample: int = Field(20_000, ge=4)
    """Frames per domain held in memory. Above it, ``analyze`` runs every section on a seeded
    subsample of this many frames per domain (stated in the report) and streams every frame
    from the cache for the FD, the performance and the metadata histograms
    (``summary.fleet``); the memory then does not grow with the number of frames."""

    @model_validator(mode="after")
    def _unique_mitigations(self) -> AnalysisConfig:
        labels = [m.label for m in self.mitigations]
        dup = sorted({n for n in labels if labels.count(n) > 1})
        if dup:
            raise ValueError(f"mitigation names must be unique, repeated: {dup} (set 'name')")
        return self


class ExecutionConfig(_Strict):
    """Where the extraction pass runs: in this process, or as a Ray Data pipeline on a cluster
    (``domain_gap.execution``; needs the optional extra ``domain-gap[ray]``)."""

    executor: Literal["local", "ray"] = "local"
    address: str | None = None
    """Ray cluster to join: ``auto`` (the one this machine belongs to), ``ray://host:10001``
    (Ray Client); None starts a private local Ray on this machine's CPUs."""
    num_gpus_per_worker: float = Field(0.0, ge=0.0)
    """GPUs reserved by each model actor (0: CPU inference; 1: one GPU per actor)."""
    concurrency: int = Field(1, ge=1)
    """Model actors, each loading the model once (the pipeline's parallel forwards)."""
    num_cpus_per_worker: float = Field(1.0, gt=0.0)
    """CPUs reserved by each model actor and each read-and-decode task."""
    max_restarts: int = Field(2, ge=0)
    """Times a killed model actor is restarted (its in-flight batch is retried)."""


class TensorleapConfig(_Strict):
    """What the Tensorleap binder feeds the platform."""

    mitigation: str | None = Field(None, min_length=1)
    """Label of one image-space entry of ``analysis.mitigations``: the binder's ``image`` input
    of every target-domain sample is that fix's output (source samples stay as they are)."""


class Config(_Strict):
    """The whole toolkit configuration."""

    seed: int = 0
    image: ImageConfig = ImageConfig()
    domains: list[DomainConfig] = Field(min_length=1)
    model: ModelConfig = ModelConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    tensorleap: TensorleapConfig = TensorleapConfig()
    execution: ExecutionConfig = ExecutionConfig()
    cache_dir: str = ".cache/domain-gap"
    gcs_timeout_s: float = Field(30.0, gt=0, le=3600)
    """Bound on one gs:// request, its retries included: past it, one line says why (auth
    failed, host unreachable, timeout) instead of minutes of silent retries."""
    base_dir: str = "."
    """Folder that relative paths are resolved against (set to the config file's folder)."""

    @model_validator(mode="after")
    def _check_domains(self) -> Config:
        names = [d.name for d in self.domains]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"domain names must be unique, repeated: {sorted(dup)}")
        if self.analysis.source is not None and self.analysis.source not in names:
            raise ValueError(f"analysis.source {self.analysis.source!r} is not one of {names}")
        return self

    @model_validator(mode="after")
    def _check_tensorleap(self) -> Config:
        name = self.tensorleap.mitigation
        if name is None:
            return self
        kinds = {m.label: m.kind for m in self.analysis.mitigations}
        if name not in kinds:
            raise ValueError(
                f"tensorleap.mitigation {name!r} is not a label of analysis.mitigations "
                f"{sorted(kinds)}"
            )
        if kinds[name] == "adabn":
            raise ValueError(
                f"tensorleap.mitigation {name!r} is adabn, which changes the model, not the "
                "image: export the adapted model (domain-gap export-onnx --adabn-config) instead"
            )
        return self

    @property
    def source_domain(self) -> str:
        return self.analysis.source or self.domains[0].name

    def domain(self, name: str) -> DomainConfig:
        for d in self.domains:
            if d.name == name:
                return d
        raise KeyError(name)

    def resolve(self, path: str | None) -> str | None:
        """Resolve a path from the config: gs:// unchanged, relative → against base_dir."""
        if path is None or path.startswith("gs://"):
            return path
        p = Path(path).expanduser()
        return str(p if p.is_absolute() else (Path(self.base_dir) / p).resolve())


def _format_errors(source: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]).lstrip(".")
        kind = e["type"]
        if kind == "extra_forbidden":
            msg = "unknown key"
        elif kind == "missing":
            msg = "required key is missing"
        else:
            msg = e["msg"]
            if "input" in e and not isinstance(e["input"], dict | list):
                msg += f" (got {e['input']!r})"
        lines.append(f"{source}: {loc or '<root>'}: {msg}")
    return "\n".join(lines)


def parse_config(data: object, source: str = "<config>", base_dir: str | Path = ".") -> Config:
    """Validate a mapping (as read from YAML) into a :class:`Config`."""
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"{source}: expected a mapping at the top level, got {kind}")
    data = dict(data)
    data.setdefault("base_dir", str(base_dir))
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(source, err)) from None


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate a YAML config; ``None`` loads the shipped sample config."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(data, source=str(path), base_dir=path.resolve().parent)
