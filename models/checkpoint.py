"""Load and save DeepLabV3+ checkpoints safely and strictly.

Accepted files (read with ``torch.load(weights_only=True)``, so a file that would run code on
unpickling is refused):

- VainF's training-script dict: ``{"model_state": ..., "optimizer_state": ..., "cur_itrs": ...}``;
- a bare state dict;
- ours: VainF's dict plus metadata (``arch``, ``num_classes``, ``output_stride``,
  ``head_channels``, ``image``: height/width/mean/std, ``training``).

Weights load with ``strict=True``. When they do not fit, the error lists missing, unexpected
and mis-shaped keys and names the known architecture that fits best.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from domain_gap.atomic import atomic_path
from domain_gap.labels import NUM_CLASSES
from models.deeplab import ARCHS, DeepLabV3Plus, build_model

__all__ = [
    "CheckpointError",
    "best_fit",
    "infer_architecture",
    "load_checkpoint",
    "read_checkpoint",
    "refuse_unsupported",
    "save_checkpoint",
]

FORMAT = "domain-gap/1"
_CLASS_KEYS = ("classifier.classifier.3.weight", "classifier.classifier.4.weight")
"""The class conv of a DeepLabV3+ head, of a DeepLabV3 head."""
_HEAD_KEYS = ("classifier.aspp.convs.0.0.weight", "classifier.classifier.0.convs.0.0.weight")
_SHOW = 8
"""How many keys of each kind an error message lists."""


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, unsafe, or does not fit the requested network."""


# --------------------------------------------------------------------------- reading


def read_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint file → ``(state_dict, metadata)`` without building a model.

    ``metadata`` holds everything next to ``model_state`` except the optimizer/scheduler state,
    plus ``"layout"``: ``"domain-gap"``, ``"vainf"`` or ``"bare"``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: refused to load: it is not a weights-only checkpoint (it holds Python "
            f"objects that could run code when unpickled). Re-save just the tensors, e.g. "
            f"torch.save({{'model_state': model.state_dict()}}, path). Detail: {first}"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({exc})") from None
    if not isinstance(payload, Mapping):
        raise CheckpointError(
            f"{path}: expected a dict (VainF's {{'model_state': ...}} or a state dict), "
            f"got {type(payload).__name__}"
        )
    if "model_state" in payload:
        state = payload["model_state"]
        meta = {
            k: v
            for k, v in payload.items()
            if k not in ("model_state", "optimizer_state", "scheduler_state")
        }
        meta["layout"] = "domain-gap" if payload.get("format") == FORMAT else "vainf"
    elif payload and all(torch.is_tensor(v) for v in payload.values()):
        state, meta = payload, {"layout": "bare"}
    else:
        raise CheckpointError(
            f"{path}: expected VainF's training dict with a 'model_state' entry or a bare "
            f"state dict of tensors; found keys {_preview(list(payload))}"
        )
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path}: 'model_state' is not a state dict of tensors")
    state = dict(state)
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state, meta


# --------------------------------------------------------------------------- fitting


def refuse_unsupported(path: str | Path, state: Mapping[str, torch.Tensor]) -> None:
    """One line for the VainF layouts this project does not load: separable-conv heads
    (``--separable_conv``), HRNetV2 and Xception backbones."""
    separable = next((k for k in state if k.startswith("classifier.") and ".body." in k), None)
    if separable is not None:
        raise CheckpointError(
            f"{path}: a separable-conv checkpoint (VainF's --separable_conv; key {separable}) "
            "is not supported: train or export without --separable_conv"
        )
    if any(k.startswith(("backbone.transition1.", "backbone.stage4.")) for k in state):
        raise CheckpointError(f"{path}: an HRNetV2 checkpoint is not supported")
    if any(k.startswith("backbone.block1.") for k in state):
        raise CheckpointError(f"{path}: an Xception checkpoint is not supported")


def infer_architecture(state: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
    """Guess ``arch``, ``num_classes`` and ``head_channels`` from key names and shapes."""
    keys = set(state)
    head = "deeplabv3" if "classifier.classifier.0.convs.0.0.weight" in keys else "deeplabv3plus"
    if "backbone.low_level_features.0.0.weight" in keys:
        arch = f"{head}_mobilenet"
    elif "backbone.conv_stem.weight" in keys:
        arch = "deeplabv3plus_efficientnet_lite0"
    elif "backbone.layer4.0.conv1.weight" in keys:
        blocks = {k.split(".")[2] for k in keys if k.startswith("backbone.layer3.")}
        arch = f"{head}_resnet101" if len(blocks) > 6 else f"{head}_resnet50"
    else:
        return None
    out: dict[str, Any] = {"arch": arch}
    plus = head == "deeplabv3plus"
    class_key, head_key = _CLASS_KEYS[0 if plus else 1], _HEAD_KEYS[0 if plus else 1]
    if class_key in state and state[class_key].ndim == 4:
        out["num_classes"] = int(state[class_key].shape[0])
    if head_key in state and state[head_key].ndim == 4:
        out["head_channels"] = int(state[head_key].shape[0])
    return out


_SHAPES: dict[tuple[str, int, int], dict[str, tuple[int, ...]]] = {}


def _expected_shapes(arch: str, num_classes: int, head_channels: int) -> dict[str, tuple[int, ...]]:
    """Parameter/buffer shapes of an architecture (built on the meta device: no memory, fast)."""
    key = (arch, num_classes, head_channels)
    if key not in _SHAPES:
        with torch.device("meta"):
            model = build_model(arch, num_classes, 16, head_channels=head_channels)
        _SHAPES[key] = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return _SHAPES[key]


def _compare(
    expected: Mapping[str, tuple[int, ...]], state: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str], list[str]]:
    """Missing, unexpected and mis-shaped keys (a missing BN counter is tolerated)."""
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shaped = [
        f"{k} {tuple(state[k].shape)} != {expected[k]}"
        for k in expected
        if k in state and tuple(state[k].shape) != expected[k]
    ]
    return missing, unexpected, shaped


def best_fit(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, Any], float]:
    """The known architecture whose keys and shapes overlap the state dict most.

    Returns ``({"arch", "num_classes", "head_channels"}, share of keys that match)``.
    """
    guess = infer_architecture(state) or {}
    class_guesses = sorted({guess.get("num_classes", NUM_CLASSES), NUM_CLASSES, 21})
    head_guesses = sorted({guess.get("head_channels", 256), 256})
    best: tuple[dict[str, Any], float] = ({}, -1.0)
    for arch in ARCHS:
        for num_classes in class_guesses:
            for head in head_guesses:
                expected = _expected_shapes(arch, num_classes, head)
                good = sum(
                    1
                    for k, shape in expected.items()
                    if k in state and tuple(state[k].shape) == shape
                )
                unexpected = sum(1 for k in state if k not in expected)
                score = good / max(len(expected) + unexpected, 1)
                if score > best[1]:
                    best = (
                        {"arch": arch, "num_classes": num_classes, "head_channels": head},
                        score,
                    )
    return best


def _preview(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return f"[{shown}{f', ... (+{len(keys) - _SHOW} more)' if len(keys) > _SHOW else ''}]"


def _fit_error(
    path: Path,
    info: Mapping[str, Any],
    state: Mapping[str, torch.Tensor],
    missing: list[str],
    unexpected: list[str],
    shaped: list[str],
) -> CheckpointError:
    fit, share = best_fit(state)
    lines = [
        f"{path}: weights do not fit {info['arch']} (num_classes={info['num_classes']}, "
        f"head_channels={info['head_channels']}):"
    ]
    if missing:
        lines.append(f"  {len(missing)} missing keys {_preview(missing)}")
    if unexpected:
        lines.append(f"  {len(unexpected)} unexpected keys {_preview(unexpected)}")
    if shaped:
        lines.append(f"  {len(shaped)} keys with other shapes {_preview(shaped)}")
    if fit and share > 0:
        lines.append(
            f"  best fit: arch={fit['arch']}, num_classes={fit['num_classes']}, "
            f"head_channels={fit['head_channels']} ({share:.0%} of keys match)"
        )
    return CheckpointError("\n".join(lines))


# --------------------------------------------------------------------------- public API


def load_checkpoint(
    path: str | Path,
    arch: str | None = None,
    num_classes: int | None = None,
    output_stride: int = 16,
    map_location: str | torch.device = "cpu",
    head_channels: int | None = None,
) -> tuple[DeepLabV3Plus, dict[str, Any]]:
    """Build the network and load a checkpoint strictly → ``(model in eval mode, card)``.

    ``arch=None`` takes the architecture (and num_classes, output stride, head width) from the
    checkpoint's metadata, else infers arch and widths from its keys. An explicit ``arch`` uses
    the given ``output_stride``. ``num_classes=None`` takes the classifier's width (metadata,
    else the class conv's shape); a given one that disagrees with it is a one-line error naming
    ``model.num_classes``. The card describes what was loaded.
    """
    path = Path(path)
    state, meta = read_checkpoint(path, map_location)
    refuse_unsupported(path, state)
    inferred = infer_architecture(state) or {}
    found = meta.get("num_classes", inferred.get("num_classes"))
    if num_classes is not None and found is not None and int(found) != num_classes:
        raise CheckpointError(
            f"{path}: model.num_classes = {num_classes}, but the checkpoint's classifier has "
            f"{int(found)} classes"
        )
    classes = int(num_classes or found or NUM_CLASSES)
    if arch is not None:
        source = "argument"
        info = {"arch": arch, "num_classes": classes, "output_stride": output_stride}
    elif meta.get("arch") is not None:
        source = "checkpoint"
        info = {
            "arch": meta["arch"],
            "num_classes": classes,
            "output_stride": int(meta.get("output_stride", output_stride)),
        }
    elif "arch" in inferred:
        source = "inferred"
        info = {"arch": inferred["arch"], "num_classes": classes, "output_stride": output_stride}
    else:
        fit, share = best_fit(state)
        raise CheckpointError(
            f"{path}: cannot tell the architecture from the keys {_preview(list(state))}; "
            f"pass arch= explicitly (closest known: {fit.get('arch')}, {share:.0%} of keys)"
        )
    if info["arch"] not in ARCHS:
        raise CheckpointError(
            f"{path}: unknown architecture {info['arch']!r}; expected one of {sorted(ARCHS)}"
        )
    info["head_channels"] = int(
        head_channels or meta.get("head_channels") or inferred.get("head_channels") or 256
    )
    model = build_model(
        info["arch"],
        info["num_classes"],
        info["output_stride"],
        head_channels=info["head_channels"],
    )
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, unexpected, shaped = _compare(expected, state)
    if missing or unexpected or shaped:
        raise _fit_error(path, info, state, missing, unexpected, shaped)
    full = dict(state)
    for k in expected:  # old checkpoints may lack BN counters; they do not affect outputs
        full.setdefault(k, torch.zeros((), dtype=torch.long))
    model.load_state_dict(full, strict=True)
    model.eval()
    card: dict[str, Any] = {
        "path": str(path),
        **info,
        "arch_source": source,
        "layout": meta["layout"],
    }
    for key in ("image", "training", "cur_itrs", "best_score", "embedding_tap", "embedding_dim"):
        if key in meta:
            card[key] = meta[key]
    return model, card


def save_checkpoint(
    model: DeepLabV3Plus,
    path: str | Path,
    image: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    tap: str = "aspp",
) -> Path:
    """Write ``{"model_state", arch, num_classes, output_stride, head_channels, embedding_tap,
    embedding_dim, image, training}`` atomically (the model spec's card; ``image`` holds the
    input size and mean/std); VainF's loader reads ``model_state`` from it as from its own."""
    info = model.info
    payload: dict[str, Any] = {
        "format": FORMAT,
        "model_state": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "arch": info.arch,
        "num_classes": info.num_classes,
        "output_stride": info.output_stride,
        "head_channels": info.head_channels,
        "embedding_tap": tap,
        "embedding_dim": model.tap_channels()[tap],
    }
    if image is not None:
        payload["image"] = dict(image)
    if training is not None:
        payload["training"] = dict(training)
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path
