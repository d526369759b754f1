"""models.cam: the batched Grad-CAM equals the grad-cam library image by image, equals autograd,
the classifier closed form equals autograd, and padding never receives attention."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import build_model
from models.cam import (
    classifier_cam,
    gradcam,
    gradcam_autograd,
    target_layer,
    upsample_cams,
)

TOL = 1e-4


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    """A narrow random DeepLabV3+ whose BatchNorm statistics are calibrated on noise."""
    torch.manual_seed(0)
    net = build_model("deeplabv3plus_mobilenet", head_channels=32)
    net.train()
    with torch.no_grad():
        net(torch.randn(2, 3, 64, 128) * 1.5 + 0.3)
    return net.eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(2, 3, 64, 128, generator=torch.Generator().manual_seed(1))


def predicted(logits: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) masks of the predicted classes."""
    return F.one_hot(logits.argmax(1), logits.shape[1]).permute(0, 3, 1, 2).float()


def normalised(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64) - np.min(a)
    return a / max(a.max(), 1e-12)


def pairs(masks: torch.Tensor, per_image: int = 19) -> list[tuple[int, int]]:
    """(image, class) pairs with a mask, the ``per_image`` largest classes of each image."""
    area = masks.sum(dim=(2, 3))
    order = torch.argsort(-area, dim=1, stable=True)[:, :per_image]
    return [(b, int(c)) for b in range(len(area)) for c in order[b] if area[b, c] > 0]


@pytest.mark.parametrize("layer", ["aspp", "classifier"])
def test_batched_cam_equals_the_grad_cam_library_image_by_image(model, x, layer) -> None:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    out = gradcam(model, x, predicted, layer)
    masks = predicted(out.logits)
    ours = upsample_cams(out.cams, x.shape[-2:]).numpy()
    checked = 0
    with GradCAM(model=model, target_layers=[target_layer(model, layer)]) as cam:
        for b, c in pairs(masks, per_image=4):
            target = SemanticSegmentationTarget(c, masks[b, c].numpy())
            ref = cam(input_tensor=x[b : b + 1], targets=[target])[0]
            if ref.max() == 0:  # ReLU left nothing: ours must be empty too
                assert ours[b, c].max() <= 1e-8
                continue
            np.testing.assert_allclose(normalised(ours[b, c]), normalised(ref), atol=TOL)
            checked += 1
    assert checked >= 2


@pytest.mark.parametrize("layer", ["aspp", "classifier"])
def test_batched_cam_equals_autograd_with_one_vectorised_backward(model, x, layer) -> None:
    fast = gradcam(model, x, predicted, layer)
    masks = predicted(fast.logits)
    ref = gradcam_autograd(model, x, masks, target_layer(model, layer))
    scale = ref.weights.abs().max()
    assert torch.allclose(fast.weights, ref.weights, atol=1e-5 * float(scale))
    for b, c in pairs(masks):
        a, r = fast.cams[b, c].numpy(), ref.cams[b, c].numpy()
        np.testing.assert_allclose(normalised(a), normalised(r), atol=TOL)
    torch.testing.assert_close(fast.logits, model(x).detach())


def test_labelled_masks_and_absent_classes(model, x) -> None:
    """Any (B, C, H, W) masks work; a class without pixels gets an all-zero map."""
    labels = torch.zeros(2, 19, 64, 128)
    labels[:, 0, :32] = 1.0
    labels[0, 13, 40:50, 10:30] = 1.0
    out = gradcam(model, x, labels, "aspp")
    ref = gradcam_autograd(model, x, labels, target_layer(model, "aspp"))
    assert out.cams[:, 5].abs().max() == 0 and out.cams[1:, 13].abs().max() == 0
    np.testing.assert_allclose(
        normalised(out.cams[0, 13].numpy()), normalised(ref.cams[0, 13].numpy()), atol=TOL
    )


def test_closed_form_at_the_classifier_equals_autograd(model, x) -> None:
    """ReLU of the pre-upsampling score without its bias: no backward pass needed."""
    x = x[:1]
    taps = model.forward_taps(x)
    closed = classifier_cam(model, taps["decoder"]).detach()
    masks = predicted(taps["logits"].detach())
    ref = gradcam_autograd(model, x, masks, target_layer(model, "classifier"))
    bias = model.classifier.classifier[3].bias.detach()
    scores = model.classifier.classifier[3](taps["decoder"]).detach()
    torch.testing.assert_close(closed, F.relu(scores - bias[None, :, None, None]))
    for b, c in pairs(masks):
        np.testing.assert_allclose(
            normalised(closed[b, c].numpy()), normalised(ref.cams[b, c].numpy()), atol=TOL
        )


def test_gradcam_refuses_a_model_in_training_mode(x) -> None:
    net = build_model("deeplabv3plus_mobilenet", head_channels=8).train()
    with pytest.raises(ValueError, match="eval"):
        gradcam(net, x, predicted, "aspp")
    with pytest.raises(ValueError, match="layer"):
        gradcam(net.eval(), x, predicted, "decoder")


def test_padding_never_receives_attention_mass(model, x) -> None:
    valid = torch.zeros(2, 64, 128, dtype=torch.bool)
    valid[:, 16:48] = True  # letterboxed: rows above and below are padding
    out = gradcam(model, x, predicted, "aspp")
    assert out.cams.sum() > 0
    up = upsample_cams(out.cams, x.shape[-2:], valid)
    assert up[:, :, ~valid[0]].abs().max() == 0
    assert up[:, :, valid[0]].sum() > 0
