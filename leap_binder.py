"""Tensorleap integration: wiring only.

Every number and picture comes from a function in ``domain_gap`` (encoders, metadata, metrics,
visualize) that the local engine calls too, so platform and local results cannot drift apart.
The dataset is the one named by ``$DOMAIN_GAP_CONFIG`` (default: the built-in synthetic sample).
"""


import os

os.environ.setdefault("TL_DISABLE_ANALYTICS", "true")

from pathlib import Path

import numpy as np
import onnxruntime as ort
from code_loader import leap_binder
from code_loader.contract.datasetclasses import (
    PredictionTypeHandler,
    PreprocessResponse,
)
from code_loader.contract.enums import DataStateType, LeapDataType, MetricDirection
from code_loader.contract.responsedataclasses import LeapAnalysisConfiguration
from code_loader.contract.visualizer_classes import LeapImage, LeapImageMask
from code_loader.inner_leap_binder.leapbinder_decorators import (
    tensorleap_custom_latent_space,
    tensorleap_custom_loss,
    tensorleap_custom_metric,
    tensorleap_custom_visualizer,
    tensorleap_gt_encoder,
    tensorleap_input_encoder,
    tensorleap_integration_test,
    tensorleap_load_model,
    tensorleap_metadata,
    tensorleap_preprocess,
    tensorleap_unlabeled_preprocess,
)

from domain_gap import encoders, metadata, metrics, source, visualize
from domain_gap.data.cityscapes import VEHICLE_KEYS as CITYSCAPES_VEHICLE_KEYS
from domain_gap.heatmaps.overlay import cam_overlay
from domain_gap.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from domain_gap.model_spec import ModelSpec, check_onnx_against_config, read_onnx_spec

MASK_LABELS = [*CLASS_NAMES, "void"]


def _response(subset: str, state: DataStateType) -> PreprocessResponse:
    ids = [r.sample_id for r in source.subset_records(subset)]
    return PreprocessResponse(sample_ids=ids, data={"subset": subset}, state=state,
                              sample_id_type=str)


# --- preprocess -------------------------------------------------------------------------------

@tensorleap_preprocess()
def preprocess() -> list[PreprocessResponse]:
    """Train and validation subsets, each covering every configured domain."""
    return [_response("train", DataStateType.training),
            _response("val", DataStateType.validation)]


def unlabeled_preprocess() -> PreprocessResponse:
    """Unlabeled target frames (KITTI testing, raw frames) when the config has any."""
    return _response("unlabeled", DataStateType.unlabeled)


if source.subset_records("unlabeled"):
    unlabeled_preprocess = tensorleap_unlabeled_preprocess()(unlabeled_preprocess)


# --- encoders -----------------------------------------------------------------------------------

@tensorleap_input_encoder("image", channel_dim=1)
def input_image(sample_id: str, preprocess: PreprocessResponse) -> np.ndarray:
    """The model input: (3, H, W) float32, normalised with the configured mean/std; target-domain
    samples pass through ``tensorleap.mitigation`` first when it is set."""
    return source.model_input(sample_id)


@tensorleap_input_encoder("raw_image", channel_dim=-1)
def raw_image(sample_id: str, preprocess: PreprocessResponse) -> np.ndarray:
    """The resized image in [0, 1], (H, W, 3) float32, for visualizers."""
    return encoders.raw_image(source.prepared(sample_id).image)


@tensorleap_gt_encoder("mask")
def gt_mask(sample_id: str, preprocess: PreprocessResponse) -> np.ndarray:
    """One-hot (19, H, W) float32, void all zero; unlabeled samples give an empty array."""
    label = source.prepared(sample_id).label
    if label is None:
        return np.array([], dtype=np.float32)
    return encoders.one_hot(label, NUM_CLASSES)


# --- metadata -----------------------------------------------------------------------------------

@tensorleap_metadata("domain")
def domain(sample_id: str, preprocess: PreprocessResponse) -> str:
    """Which dataset the sample comes from: the axis of the domain-gap view."""
    return source.record(sample_id).domain


@tensorleap_metadata("mitigation")
def mitigation(sample_id: str, preprocess: PreprocessResponse) -> str:
    """Which mitigation the sample's ``image`` input went through ("none": the plain input)."""
    return source.mitigation_label(sample_id)


@tensorleap_metadata("source")
def source_info(sample_id: str, preprocess: PreprocessResponse) -> dict[str, float | str]:
    """City or sequence, file name and the original size and aspect (before resizing)."""
    s = source.prepared(sample_id)
    return metadata.source_metadata(s.record.group, s.record.file_name, s.orig_hw)


@tensorleap_metadata("image")
def image_stats(sample_id: str, preprocess: PreprocessResponse) -> dict[str, float]:
    """Colour, brightness, contrast, saturation, sharpness… of what the model sees."""
    s = source.prepared(sample_id)
    return metadata.image_metadata(s.image, s.valid)


@tensorleap_metadata("classes")
def class_fractions(sample_id: str, preprocess: PreprocessResponse) -> dict[str, float]:
    """Share of each class and of void in the GT (NaN for unlabeled samples)."""
    s = source.prepared(sample_id)
    return metadata.label_metadata(s.label, s.valid)


@tensorleap_metadata("vehicle")
def vehicle(sample_id: str, preprocess: PreprocessResponse) -> dict[str, float]:
    """Speed, yaw rate, temperature, GPS where the dataset records them (NaN elsewhere)."""
    fields = metadata.vehicle_metadata(source.prepared(sample_id).vehicle, CITYSCAPES_VEHICLE_KEYS)
    return {k.removeprefix("vehicle_"): v for k, v in fields.items()}  # shown as vehicle_<key>


if source.active_dataset().user_tables:

    @tensorleap_metadata("user")
    def user(sample_id: str, preprocess: PreprocessResponse) -> dict[str, float | str]:
        """The domains' own metadata_csv columns (shown as user_<column>; NaN or "" missing)."""
        return source.user_fields(sample_id)


# --- model --------------------------------------------------------------------------------------

def _onnx_path() -> Path:
    config = source.active_config()
    path = config.resolve(config.model.onnx)
    if path is None:
        raise FileNotFoundError("config: model.onnx is not set (use domain-gap export-onnx)")
    return Path(path)


def _onnx_spec() -> ModelSpec | None:
    """The ONNX file's spec (tap, embedding dim, ...), refused in one line where the config
    states something else; None while there is no file yet (a fresh clone before export)."""
    config = source.active_config()
    path = config.resolve(config.model.onnx)
    if path is None or not Path(path).is_file():
        return None
    return check_onnx_against_config(path, config.model)


SPEC = _onnx_spec()
EMBEDDING_DIM = SPEC.embedding_dim if SPEC else (source.active_config().model.embedding_dim or 0)
"""Read from the ONNX file; the config only states it to insist on a value."""


def _model_outputs() -> list[str]:
    """Output names of the configured ONNX file ([] while it cannot be read)."""
    try:
        session = ort.InferenceSession(str(_onnx_path()), providers=["CPUExecutionProvider"])
    except (OSError, RuntimeError, ValueError):
        return []
    return [o.name for o in session.get_outputs()]


HAS_CAM = "cam" in _model_outputs()
"""The ONNX file has the optional third output ``cam`` (exported with ``cam=True``)."""
_CAM_HANDLER = [PredictionTypeHandler("cam", list(CLASS_NAMES), channel_dim=1)] if HAS_CAM else []


@tensorleap_load_model([
    PredictionTypeHandler("segmentation", list(CLASS_NAMES), channel_dim=1),
    PredictionTypeHandler("embedding", [f"e{i}" for i in range(EMBEDDING_DIM)], channel_dim=1),
    *_CAM_HANDLER,
])
def load_model() -> ort.InferenceSession:
    """The exported ONNX model: outputs ``logits`` (B,19,H,W) and ``embedding`` (B,d), and
    ``cam`` (B,19,h,w) when exported with it."""
    path = _onnx_path()
    read_onnx_spec(path)  # one line naming the file when it is missing or not ONNX
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.get_outputs()
    if len(outputs) != 2 + HAS_CAM or outputs[1].shape[-1] != EMBEDDING_DIM:
        shapes = [(o.name, o.shape) for o in outputs]
        raise ValueError(f"{path}: expected outputs logits and embedding (B, {EMBEDDING_DIM}) "
                         f"(its spec's embedding_dim), got {shapes}")
    return session


@tensorleap_custom_latent_space("embedding", use_ls_for_analysis=True)
def embedding_latent(embedding: np.ndarray) -> np.ndarray:
    """The pooled ASPP embedding the local engine measures the gap in (model-computed)."""
    return np.asarray(embedding, dtype=np.float32).reshape(len(embedding), -1)


# --- loss and metrics ---------------------------------------------------------------------------

def _labels(mask: np.ndarray, batch_hw: tuple[int, ...]) -> np.ndarray:
    """trainIds (B, H, W) from the one-hot GT; an unlabeled sample's empty GT is all void."""
    if mask.size == 0:
        return np.full(batch_hw, IGNORE_INDEX, dtype=np.uint8)
    return encoders.labels_from_one_hot(mask)


def _bhw(logits: np.ndarray) -> tuple[int, ...]:
    return (logits.shape[0], *logits.shape[2:])


@tensorleap_custom_loss("cross_entropy")
def cross_entropy(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-sample cross-entropy over non-void pixels, shape (B,); 0 without labelled pixels."""
    return metrics.sample_loss(logits, _labels(mask, _bhw(logits))).astype(np.float32)


def _confusion(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return metrics.confusion_matrices(metrics.predict(logits), _labels(mask, _bhw(logits)))


@tensorleap_custom_metric("miou", direction=MetricDirection.Upward)
def miou(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-sample mIoU (argmax; classes present in GT or prediction)."""
    return metrics.sample_miou(_confusion(logits, mask)).astype(np.float32)


@tensorleap_custom_metric("pixel_accuracy", direction=MetricDirection.Upward)
def pixel_accuracy(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Share of non-void pixels predicted correctly."""
    return metrics.pixel_accuracy(_confusion(logits, mask)).astype(np.float32)


IOU_KEYS = [f"iou_{name.replace(' ', '_')}" for name in CLASS_NAMES]


@tensorleap_custom_metric("class_iou", direction=dict.fromkeys(IOU_KEYS, MetricDirection.Upward))
def class_iou(logits: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """IoU of every class per sample (NaN where the class is in neither GT nor prediction)."""
    iou = metrics.per_class_iou(_confusion(logits, mask)).astype(np.float32)
    return {key: iou[:, c] for c, key in enumerate(IOU_KEYS)}


# --- visualizers: each gets one sample with a leading batch axis of 1 ------------------------

@tensorleap_custom_visualizer("image", LeapDataType.Image)
def image_visualizer(raw_image: np.ndarray) -> LeapImage:
    """The image as the model sees it (resized, padded)."""
    return LeapImage(visualize.to_uint8(raw_image[0]), compress=False)


@tensorleap_custom_visualizer("gt_mask", LeapDataType.ImageMask)
def gt_visualizer(raw_image: np.ndarray, mask: np.ndarray) -> LeapImageMask:
    """Ground truth over the image; void is its own label."""
    labels = _labels(mask[:1], (1, *raw_image.shape[1:3]))[0]
    return LeapImageMask(visualize.mask_for_leap(labels), visualize.to_uint8(raw_image[0]),
                         MASK_LABELS)


@tensorleap_custom_visualizer("prediction_mask", LeapDataType.ImageMask)
def prediction_visualizer(raw_image: np.ndarray, logits: np.ndarray) -> LeapImageMask:
    """Argmax prediction over the image."""
    pred = metrics.predict(logits[:1])[0]
    return LeapImageMask(visualize.mask_for_leap(pred), visualize.to_uint8(raw_image[0]),
                         MASK_LABELS)


@tensorleap_custom_visualizer("loss_heatmap", LeapDataType.Image)
def loss_visualizer(logits: np.ndarray, mask: np.ndarray) -> LeapImage:
    """Per-pixel cross-entropy: where the loss comes from."""
    ce = metrics.pixel_cross_entropy(logits[:1], _labels(mask[:1], _bhw(logits[:1])))[0]
    return LeapImage(visualize.loss_heatmap(ce), compress=False)


@tensorleap_custom_visualizer("error_map", LeapDataType.Image)
def error_visualizer(logits: np.ndarray, mask: np.ndarray) -> LeapImage:
    """Correct, wrong and void pixels."""
    pred = metrics.predict(logits[:1])[0]
    labels = _labels(mask[:1], _bhw(logits[:1]))[0]
    return LeapImage(visualize.error_map(pred, labels), compress=False)


def cam_visualizer(raw_image: np.ndarray, logits: np.ndarray, cam: np.ndarray) -> LeapImage:
    """Grad-CAM at the classifier layer (the ONNX ``cam`` output, closed form) of the class
    predicted on the most pixels, over the image."""
    return LeapImage(cam_overlay(visualize.to_uint8(raw_image[0]), logits[0], cam[0]),
                     compress=False)


if HAS_CAM:
    cam_visualizer = tensorleap_custom_visualizer("cam_overlay", LeapDataType.Image)(cam_visualizer)


# --- integration test ---------------------------------------------------------------------------

@tensorleap_integration_test()
def integration_test(sample_id: str, preprocess: PreprocessResponse) -> None:
    """Call every registered function on one sample, as the platform will."""
    image = input_image(sample_id, preprocess)
    raw = raw_image(sample_id, preprocess)
    mask = gt_mask(sample_id, preprocess)
    model = load_model()
    outputs = model.run(None, {"image": image})
    logits = outputs[0]
    embedding = outputs[1]
    embedding_latent(embedding)
    cross_entropy(logits, mask)
    miou(logits, mask)
    pixel_accuracy(logits, mask)
    class_iou(logits, mask)
    image_visualizer(raw)
    gt_visualizer(raw, mask)
    prediction_visualizer(raw, logits)
    loss_visualizer(logits, mask)
    error_visualizer(logits, mask)
    if HAS_CAM:
        cam_visualizer(raw, logits, outputs[2])
    domain(sample_id, preprocess)
    mitigation(sample_id, preprocess)
    source_info(sample_id, preprocess)
    image_stats(sample_id, preprocess)
    class_fractions(sample_id, preprocess)
    vehicle(sample_id, preprocess)


leap_binder.leap_analysis_configuration = LeapAnalysisConfiguration(domain_gap_metadata=["domain"])


if __name__ == "__main__":
    import leap_test

    leap_test.main()
