"""ONNX export: input ``image`` (B,3,H,W) → outputs ``logits`` (B,C,H,W) and ``embedding`` (B,d),
plus, with ``cam=True``, ``cam`` (B,C,h,w): the closed-form Grad-CAM at the classifier layer
(:func:`models.cam.classifier_cam`, at the decoder's stride-4 resolution).

The embedding output is exactly :func:`models.embeddings.image_embedding` of the chosen tap,
so Tensorleap (which runs the ONNX file) and the local engine (which runs torch) agree.
:func:`export_checkpoint` checks that agreement with onnxruntime and refuses a worse file.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from domain_gap.atomic import atomic_path
from domain_gap.model_spec import VAINF_MEAN, VAINF_STD, ModelSpec
from models.cam import classifier_cam
from models.checkpoint import load_checkpoint
from models.deeplab import DeepLabV3Plus
from models.embeddings import EMBEDDING_TAPS, image_embedding

__all__ = [
    "ARGMAX_AGREEMENT",
    "OPSET",
    "PARITY_TOLERANCE",
    "ExportError",
    "export_adabn",
    "export_checkpoint",
    "export_model",
    "export_onnx",
    "model_spec",
    "onnx_parity",
    "parity_figures",
    "parity_line",
]

OPSET = 17
PARITY_TOLERANCE = 1e-4
"""Relative: an output passes when max|onnx - torch| <= PARITY_TOLERANCE * max(1, max|torch|)
(float32 rounding grows with the values: ResNet logits reach hundreds)."""
ARGMAX_AGREEMENT = 0.9999
"""Share of pixels whose ONNX argmax class must equal torch's."""
INPUT_NAME = "image"
OUTPUT_NAMES = ("logits", "embedding")
CAM_OUTPUT = "cam"
"""The optional third output (``export_onnx(..., cam=True)``)."""


class ExportError(RuntimeError):
    """The ONNX export failed or its outputs differ from torch beyond the tolerance."""


class _LogitsAndEmbedding(nn.Module):
    """Wrap a model so that ``forward`` returns ``(logits, image_embedding(taps, tap))``."""

    def __init__(self, model: DeepLabV3Plus, tap: str, cam: bool = False) -> None:
        super().__init__()
        self.model = model
        self.tap = tap
        self.cam = cam

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        taps = self.model.forward_taps(image)
        outputs = (taps["logits"], image_embedding(taps, self.tap))
        return (*outputs, classifier_cam(self.model, taps["decoder"])) if self.cam else outputs


def export_onnx(
    model: DeepLabV3Plus,
    out_path: str | Path,
    height: int,
    width: int,
    tap: str = "aspp",
    metadata: dict[str, str] | None = None,
    cam: bool = False,
) -> Path:
    """Trace ``model`` at ``height`` x ``width`` (batch axis dynamic) and write ONNX atomically.

    The file's metadata is the model spec (:func:`model_spec`: arch, num_classes, output
    stride, head width, embedding tap and dim, input mean/std and size) plus any other
    ``metadata`` given. ``cam`` adds the ``cam`` output.
    """
    import onnx

    if tap not in EMBEDDING_TAPS:
        raise ValueError(f"tap (--tap): expected one of {EMBEDDING_TAPS}, got {tap!r}")
    if height < 32 or width < 32:
        raise ValueError(f"height/width: expected at least 32 pixels, got {height}x{width}")
    wrapper = _LogitsAndEmbedding(model, tap, cam).eval().cpu()
    dummy = torch.zeros(1, 3, height, width)
    names = [*OUTPUT_NAMES, *([CAM_OUTPUT] if cam else [])]
    dynamic = {name: {0: "batch"} for name in (INPUT_NAME, *names)}
    props = {
        **(metadata or {}),
        **model_spec(model, tap, height, width, metadata).metadata(),
        **({"cam_layer": "classifier"} if cam else {}),
    }
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # legacy-exporter deprecation and tracer notices
            torch.onnx.export(
                wrapper,
                (dummy,),
                str(tmp),
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=names,
                dynamic_axes=dynamic,
                do_constant_folding=True,
            )
        proto = onnx.load(str(tmp))
        onnx.checker.check_model(proto)
        del proto.metadata_props[:]
        for key, value in props.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, str(value)
        onnx.save(proto, str(tmp))
    return out_path


def model_spec(
    model: DeepLabV3Plus, tap: str, height: int, width: int, metadata: dict[str, str] | None
) -> ModelSpec:
    """The spec written into the ONNX file; mean/std from ``metadata`` (``input_mean``,
    ``input_std``, e.g. the checkpoint card's) else VainF's normalisation."""
    meta = metadata or {}

    def triple(key: str, default: tuple[float, float, float]) -> tuple[float, float, float]:
        values = tuple(float(v) for v in meta[key].split(",")) if key in meta else default
        if len(values) != 3:
            raise ValueError(f"{key}: expected three comma-separated values, got {meta[key]!r}")
        return values  # type: ignore[return-value]

    info = model.info
    return ModelSpec(
        arch=info.arch,
        num_classes=info.num_classes,
        output_stride=info.output_stride,
        head_channels=info.head_channels,
        embedding_tap=tap,
        embedding_dim=model.tap_channels()[tap],
        input_mean=triple("input_mean", VAINF_MEAN),
        input_std=triple("input_std", VAINF_STD),
        input_height=height,
        input_width=width,
    )


def onnx_parity(
    model: DeepLabV3Plus, onnx_path: str | Path, images: np.ndarray, tap: str = "aspp"
) -> dict[str, float]:
    """Max |onnxruntime - torch| on ``logits`` and ``embedding`` for a batch of inputs."""
    import onnxruntime as ort

    x = np.ascontiguousarray(images, dtype=np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    onnx_logits, onnx_emb, *onnx_cam = session.run(names, {INPUT_NAME: x})
    model.eval()
    with torch.inference_mode():
        taps = model.cpu().forward_taps(torch.from_numpy(x))
        logits = taps["logits"].numpy()
        emb = image_embedding(taps, tap).numpy()
        cam = classifier_cam(model, taps["decoder"]).numpy() if onnx_cam else None
    if onnx_logits.shape != logits.shape or onnx_emb.shape != emb.shape:
        raise ExportError(
            f"{onnx_path}: ONNX output shapes {onnx_logits.shape}, {onnx_emb.shape} differ from "
            f"torch {logits.shape}, {emb.shape}"
        )
    pairs = {"logits": (onnx_logits, logits), "embedding": (onnx_emb, emb)}
    if cam is not None:
        if onnx_cam[0].shape != cam.shape:
            raise ExportError(f"{onnx_path}: ONNX cam {onnx_cam[0].shape}, torch {cam.shape}")
        pairs["cam"] = (onnx_cam[0], cam)
    return parity_figures(pairs)


def parity_figures(pairs: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Per output (``name: (onnx, torch)``): max |Δ|, the scale max(1, max|torch|) and whether
    max |Δ| <= PARITY_TOLERANCE * scale; for ``logits`` also the argmax agreement. ``ok`` is
    the verdict over all of them (pure, so the rule is tested on its own)."""
    report: dict[str, Any] = {}
    ok = True
    for name, (got, ref) in pairs.items():
        diff = float(np.abs(got - ref).max())
        scale = max(1.0, float(np.abs(ref).max()))
        report[f"{name}_max_abs_diff"] = diff
        report[f"{name}_scale"] = scale
        ok = ok and diff <= PARITY_TOLERANCE * scale
    got, ref = pairs["logits"]
    agreement = float((got.argmax(1) == ref.argmax(1)).mean())
    report["argmax_agreement"] = agreement
    report["max_abs_diff"] = max(report[f"{n}_max_abs_diff"] for n in pairs)
    report["ok"] = bool(ok and agreement >= ARGMAX_AGREEMENT)
    return report


def parity_line(parity: dict[str, Any]) -> str:
    """One line with both figures, as ``export-onnx`` prints them."""
    scale = parity["logits_scale"]
    return (
        f"parity: max |onnx - torch| logits {parity['logits_max_abs_diff']:.3g} <= "
        f"{PARITY_TOLERANCE:g} x max(1, max|logits| = {scale:.4g}) = "
        f"{PARITY_TOLERANCE * scale:.3g}; embedding {parity['embedding_max_abs_diff']:.3g}; "
        f"argmax agreement {parity['argmax_agreement']:.4%} (>= {ARGMAX_AGREEMENT:.2%})"
    )


def export_model(
    model: DeepLabV3Plus,
    out: str | Path,
    height: int = 256,
    width: int = 512,
    tap: str = "aspp",
    metadata: dict[str, str] | None = None,
    seed: int = 0,
    images: np.ndarray | None = None,
    cam: bool = False,
) -> dict[str, Any]:
    """Export an in-memory model to ONNX and check onnxruntime against torch.

    Parity is measured on ``images`` (B, 3, height, width), by default a seeded batch of 2
    normal-noise images; past the relative :data:`PARITY_TOLERANCE` (or below
    :data:`ARGMAX_AGREEMENT`) the new file is removed and :class:`ExportError` raised.
    """
    out = Path(out)
    export_onnx(model, out, height, width, tap, metadata, cam)
    if images is None:
        rng = np.random.default_rng(seed)
        images = rng.standard_normal((2, 3, height, width), dtype=np.float32)
    parity = onnx_parity(model, out, images, tap)
    if not parity["ok"]:
        out.unlink(missing_ok=True)
        raise ExportError(f"{out}: ONNX differs from torch, file removed; {parity_line(parity)}")
    return {
        "path": str(out),
        "arch": model.info.arch,
        "tap": tap,
        "height": height,
        "width": width,
        "embedding_dim": model.tap_channels()[tap],
        "tolerance": PARITY_TOLERANCE,
        **parity,
    }


def _card_metadata(checkpoint: str | Path, card: dict[str, Any]) -> dict[str, str]:
    metadata = {"checkpoint": Path(checkpoint).name}
    image = card.get("image") or {}
    for key in ("mean", "std"):
        if key in image:
            metadata[f"input_{key}"] = _csv(image[key])
    return metadata


def _csv(values: Any) -> str:
    return ",".join(f"{float(v):.6g}" for v in values)


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    arch: str | None = None,
    height: int = 256,
    width: int = 512,
    num_classes: int | None = None,
    output_stride: int = 16,
    tap: str = "aspp",
    seed: int = 0,
    cam: bool = False,
) -> dict[str, Any]:
    """Load a checkpoint, export it to ONNX and check parity (see :func:`export_model`)."""
    model, card = load_checkpoint(checkpoint, arch, num_classes, output_stride)
    metadata = _card_metadata(checkpoint, card)
    report = export_model(model, out, height, width, tap, metadata, seed, cam=cam)
    return {**report, "arch": card["arch"]}


def _adabn_spec(config: Any) -> Any:
    spec = next((m for m in config.analysis.mitigations if m.kind == "adabn"), None)
    if spec is None:
        kinds = [m.kind for m in config.analysis.mitigations]
        raise ValueError(f"analysis.mitigations has no adabn entry to export (kinds: {kinds})")
    return spec


def _parity_frames(config: Any, dataset: Any, records: Any, height: int, width: int) -> Any:
    """Up to 2 target fit frames as normalised model inputs at the export size.

    AdaBN fits BN to target frames; on noise its outputs grow large (|logits| in the tens),
    where float32 rounding alone exceeds the absolute tolerance, so parity is checked on the
    frames the statistics describe."""
    from domain_gap.data.dataset import DomainDataset
    from domain_gap.encoders import normalize_image

    if (height, width) != (config.image.height, config.image.width):
        image = config.image.model_copy(update={"height": height, "width": width})
        dataset = DomainDataset(config.model_copy(update={"image": image}))
    frames = [dataset.prepare(r).image for r in records[:2]]
    return normalize_image(np.stack(frames), config.image.mean, config.image.std)


def export_adabn(
    checkpoint: str | Path,
    out: str | Path,
    config: Any,
    target: str | None = None,
    arch: str | None = None,
    height: int | None = None,
    width: int | None = None,
    num_classes: int | None = None,
    output_stride: int = 16,
    tap: str | None = None,
) -> dict[str, Any]:
    """Fit the ``adabn`` entry of ``config.analysis.mitigations`` on ``target`` (default: the
    first non-source domain) as the what-if does, then export the adapted model with the
    parity check (on target fit frames). ``config`` (a ``domain_gap.config.Config``) supplies
    data, fit frames, options, tap (unless ``tap`` is given), normalisation and the default
    input size; ``checkpoint`` is the model adapted."""
    from domain_gap.analysis.extract import TorchRunner
    from domain_gap.binder_mitigation import fit_for_target, fit_records
    from domain_gap.data.dataset import DomainDataset
    from models.device import select_device

    spec = _adabn_spec(config)
    target = target or next((d.name for d in config.domains if d.name != config.source_domain), "")
    height, width = height or config.image.height, width or config.image.width
    model_cfg = config.model.model_copy(update={"checkpoint": str(Path(checkpoint).resolve())})
    config = config.model_copy(update={"model": model_cfg})
    model, card = load_checkpoint(checkpoint, arch or config.model.arch, num_classes, output_stride)
    device = select_device(config.model.device)
    runner = TorchRunner(model.to(device).eval(), device, config.model.tap)
    dataset = DomainDataset(config)
    fitted = fit_for_target(config, dataset, spec, target, runner=runner)
    adapted = fitted.adapt_model(model).cpu().eval()
    frames = _parity_frames(config, dataset, fit_records(config, dataset, target)[1], height, width)
    metadata = {
        **_card_metadata(checkpoint, card),
        "input_mean": _csv(config.image.mean),
        "input_std": _csv(config.image.std),
        "mitigation": spec.label,
        "adabn_target": target,
        "adabn_fit_key": fitted.key(),
        **{f"adabn_{k}": str(v) for k, v in fitted.params().items()},
    }
    tap = tap or config.model.tap
    report = export_model(adapted, out, height, width, tap, metadata, images=frames)
    info = {"mitigation": spec.label, "target": target, "fit_key": fitted.key()}
    return {**report, "arch": card["arch"], **info, **fitted.params()}
