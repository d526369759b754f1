"""DeepLabV3 / V3+ networks (VainF checkpoint layouts), feature taps, embeddings, checkpoints,
ONNX.

Public API::

    build_model(arch, num_classes=NUM_CLASSES, output_stride=16, pretrained_backbone=False)
    model(x) -> logits;  model.forward_taps(x) -> {"logits", "high", "low", "aspp", "decoder"}
    image_embedding(taps, tap="aspp") -> (B, d)
    class_embeddings(feature, labels, num_classes=NUM_CLASSES) -> ((B, C, d), counts (B, C))
    load_checkpoint(path, arch=None, num_classes=None, ...) -> (model, card)
    save_checkpoint(model, path, ...)
    select_device("auto" | "cpu" | "cuda");  run_batch(model, images, device, tap)
    export_onnx(...), export_checkpoint(...)  (in models.export; imports onnx lazily)
"""

from models.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from models.deeplab import ARCHS, TAPS, DeepLabV3Plus, build_model
from models.device import iter_batches, run_batch, select_device
from models.embeddings import EMBEDDING_TAPS, class_embeddings, image_embedding

__all__ = [
    "ARCHS",
    "EMBEDDING_TAPS",
    "TAPS",
    "CheckpointError",
    "DeepLabV3Plus",
    "build_model",
    "class_embeddings",
    "image_embedding",
    "iter_batches",
    "load_checkpoint",
    "read_checkpoint",
    "run_batch",
    "save_checkpoint",
    "select_device",
]
