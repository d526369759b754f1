"""The model spec: what a network is, written once into its checkpoint card and its ONNX file
(``metadata_props``) and read back from there, so the config only states what differs.

Torch-free (the Tensorleap binder, which has no torch, reads ONNX specs with onnxruntime).
:func:`check_model_config` checks a config's model settings against the checkpoint and the
ONNX file before any extraction starts; every mismatch is one line naming the setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "SPEC_KEYS",
    "VAINF_MEAN",
    "VAINF_STD",
    "ModelSpec",
    "SpecError",
    "check_model_config",
    "check_onnx_against_config",
    "read_onnx_spec",
]

VAINF_MEAN = (0.485, 0.456, 0.406)
VAINF_STD = (0.229, 0.224, 0.225)
"""The input normalisation VainF's Cityscapes models were trained with (ImageNet's)."""


class SpecError(ValueError):
    """A model file lacks its spec, or the spec and the config disagree."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything the analysis needs to know about a network, beyond its weights."""

    arch: str
    num_classes: int
    output_stride: int
    head_channels: int
    embedding_tap: str
    embedding_dim: int
    input_mean: tuple[float, float, float]
    input_std: tuple[float, float, float]
    input_height: int
    input_width: int

    def metadata(self) -> dict[str, str]:
        """As ONNX ``metadata_props`` (strings; mean/std comma-separated)."""
        out = {}
        for key, value in asdict(self).items():
            is_seq = isinstance(value, tuple | list)
            out[key] = ",".join(f"{float(v):.6g}" for v in value) if is_seq else str(value)
        return out

    @classmethod
    def from_metadata(cls, props: Mapping[str, str], where: str) -> ModelSpec:
        """Parse ``metadata_props``; a missing or malformed entry is one line naming it."""
        missing = [k for k in SPEC_KEYS if k not in props]
        if missing:
            raise SpecError(
                f"{where}: metadata lacks {', '.join(missing)} (an older export: re-export it "
                "with domain-gap export-onnx)"
            )
        try:
            triples = {
                k: tuple(float(v) for v in props[k].split(",")) for k in ("input_mean", "input_std")
            }
            ints = {k: int(props[k]) for k in SPEC_KEYS if k not in triples and k not in _TEXT}
        except ValueError as exc:
            raise SpecError(f"{where}: malformed spec metadata ({exc})") from None
        if any(len(v) != 3 for v in triples.values()):
            raise SpecError(f"{where}: input_mean/input_std: expected three values each")
        text = {k: props[k] for k in _TEXT}
        return cls(**text, **ints, **triples)


SPEC_KEYS = tuple(ModelSpec.__dataclass_fields__)
_TEXT = ("arch", "embedding_tap")


def read_onnx_spec(path: str | Path) -> ModelSpec:
    """The spec stored in an ONNX file; an unreadable file is one line naming it."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: ONNX file not found (config model.onnx; domain-gap export-onnx)")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SpecError(f"{path}: not a readable ONNX model (config model.onnx): {first}") from None
    return ModelSpec.from_metadata(session.get_modelmeta().custom_metadata_map, str(path))


def check_onnx_against_config(path: str | Path, model: Any) -> ModelSpec:
    """The ONNX file's spec, refused in one line when ``model`` (a ``ModelConfig``) states a
    tap, embedding width or class count that differs from it."""
    spec = read_onnx_spec(path)
    if model.tap != spec.embedding_tap:
        raise SpecError(
            f"model.tap = {model.tap}, but {path} embeds the {spec.embedding_tap!r} tap "
            f"(re-export with domain-gap export-onnx --tap {model.tap}, or set model.tap)"
        )
    if model.embedding_dim is not None and model.embedding_dim != spec.embedding_dim:
        raise SpecError(
            f"model.embedding_dim = {model.embedding_dim}, but {path} has a "
            f"{spec.embedding_dim}-dim embedding (leave the setting out to take the file's)"
        )
    if model.num_classes != spec.num_classes:
        raise SpecError(
            f"model.num_classes = {model.num_classes}, but {path} has {spec.num_classes} classes"
        )
    return spec


def check_model_config(config: Any) -> ModelSpec | None:
    """Check ``config.model`` against its checkpoint and ONNX file before any work starts.

    The checkpoint must be readable, of a supported layout and have ``num_classes`` classes
    (read without building the network); an existing ONNX file must be readable and carry a
    spec that agrees with ``tap``, ``embedding_dim`` and ``num_classes`` (a file not exported
    yet is left to the binder, which needs it). Returns the ONNX spec (None without an ONNX file).
    """
    from models.checkpoint import (
        CheckpointError,
        infer_architecture,
        read_checkpoint,
        refuse_unsupported,
    )

    m = config.model
    path = Path(config.resolve(m.checkpoint) or "")
    if not path.is_file():
        raise SpecError(f"{path}: model checkpoint not found (config model.checkpoint)")
    state, meta = read_checkpoint(path, "meta")
    refuse_unsupported(path, state)
    found = meta.get("num_classes", (infer_architecture(state) or {}).get("num_classes"))
    if found is not None and int(found) != m.num_classes:
        raise CheckpointError(
            f"{path}: model.num_classes = {m.num_classes}, but the checkpoint's classifier has "
            f"{int(found)} classes"
        )
    onnx_path = config.resolve(m.onnx)
    if onnx_path is None:
        return None
    if not Path(onnx_path).is_file():
        return None  # not exported yet: analyze does not run it (the binder says so in one line)
    return check_onnx_against_config(onnx_path, m)
