"""Class-conditional Grad-CAM of the DeepLabV3+ head, batched over images and classes.

For image b and class c the target is ``S_bc = sum of class c's logits over masks[b, c]``
(the pixels predicted, or labelled, as c). Grad-CAM at a layer with activation ``F`` (B,K,h,w)
weights each channel by the mean gradient ``alpha_bck = mean_p dS_bc / dF_bkp`` and keeps
``ReLU(sum_k alpha_bck F_bk)``. Two layers:

* ``aspp``: the ASPP output (the latent embedding's tap);
* ``classifier``: the input of the final 1x1 class conv (the decoder feature).

:func:`gradcam` computes the exact gradients of every (image, class) pair from one forward
pass, without a per-class backward pass, because only the spatial *sum* of each gradient is
needed and the head after the layer is linear up to one elementwise activation:

    logits = U(W2 . act(z)) + b2,   z = conv3x3([skip, U'(A)])

(U, U' bilinear upsampling, act = BatchNorm(eval) + ReLU). Pulling the mask back through U
(its exact adjoint, ``m = U^T M``) and pushing a constant shift of A through U' and the 3x3
conv (a constant image gives only 3x3 distinct border responses, ``R``) gives

    sum_p dS_bc/dA_bkp = sum_{j, region r} W2_cj R_kjr sum_{q in r} m_bcq act'(z)_bjq,

one batched matrix product per border region. At ``classifier`` the gradient is simply
``m_bcq W2_cj``, so the CAM is proportional to ``ReLU(W2_c . D)`` = ReLU of class c's
pre-upsampling score without its bias (:func:`classifier_cam`, the ONNX ``cam`` output).
:func:`gradcam_autograd` computes the same maps with autograd (one backward pass vectorised
over the classes, ``is_grads_batched``) for any model; tests check both against each other
and against the ``grad-cam`` library.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.deeplab import DeepLabV3Plus, is_plus

__all__ = [
    "CAM_LAYERS",
    "CamOutput",
    "classifier_cam",
    "gradcam",
    "gradcam_autograd",
    "target_layer",
    "upsample_cams",
]

CAM_LAYERS = ("aspp", "classifier")
"""Layers a CAM can be taken at (see the module docstring)."""


def target_layer(model: DeepLabV3Plus, layer: str) -> nn.Module:
    """The module whose output is the CAM feature map (for hooks, e.g. pytorch-grad-cam)."""
    if layer == "aspp":
        return model.classifier.aspp
    if layer == "classifier":
        return model.classifier.fuse[2]
    raise ValueError(f"layer: expected one of {CAM_LAYERS}, got {layer!r}")


@dataclass(frozen=True)
class CamOutput:
    """One batch: the logits and the Grad-CAM of every class at the layer's resolution."""

    logits: torch.Tensor
    """(B, C, H, W) as ``model(x)``."""
    cams: torch.Tensor
    """(B, C, h, w) ReLU'd maps, not normalised; zero for classes with an empty mask."""
    weights: torch.Tensor
    """(B, C, K) Grad-CAM channel weights (mean gradient over the layer's positions)."""
    taps: dict[str, torch.Tensor] | None = None
    """The forward pass's taps (:meth:`DeepLabV3Plus.forward_taps`), so that a caller can take
    its embeddings from the same pass; None from :func:`gradcam_autograd`."""


@contextmanager
def _capture(module: nn.Module, store: dict[str, torch.Tensor], name: str) -> Iterator[None]:
    handle = module.register_forward_hook(lambda _m, _i, out: store.__setitem__(name, out))
    try:
        yield
    finally:
        handle.remove()


def _pull_back(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``U^T masks``: the exact adjoint of bilinear upsampling from ``size`` to the mask size."""
    with torch.enable_grad():
        small = masks.new_zeros((*masks.shape[:2], *size), requires_grad=True)
        up = F.interpolate(small, size=masks.shape[-2:], mode="bilinear", align_corners=False)
        (grad,) = torch.autograd.grad(up, small, grad_outputs=masks)
    return grad


def _derivative(act: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """The elementwise derivative of an elementwise ``act`` at ``z`` (one cheap backward)."""
    with torch.enable_grad():
        leaf = z.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(act(leaf), leaf, grad_outputs=torch.ones_like(leaf))
    return grad


def _slices(n: int) -> list[slice]:
    """Rows (or columns) grouped by how a 3x3, padding-1 conv sees a constant image."""
    if n < 3:
        return [slice(i, i + 1) for i in range(n)]
    return [slice(0, 1), slice(1, n - 1), slice(n - 1, n)]


def _constant_response(conv: nn.Conv2d, channels: int, rows: int, cols: int) -> torch.Tensor:
    """(K, J, rows, cols): the conv's output per border region for a constant 1 on one of its
    last ``channels`` input channels (bias left out)."""
    if conv.kernel_size != (3, 3) or conv.padding != (1, 1) or conv.stride != (1, 1):
        raise ValueError(f"decoder conv: expected 3x3, stride 1, padding 1, got {conv}")
    if conv.dilation != (1, 1) or conv.groups != 1:
        raise ValueError(f"decoder conv: expected no dilation and no groups, got {conv}")
    weight = conv.weight[:, -channels:]
    eye = torch.eye(channels, dtype=weight.dtype, device=weight.device)
    ones = eye[:, :, None, None].expand(channels, channels, rows, cols)
    return F.conv2d(ones, weight, padding=1)


def _region_products(m: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """(B, C, J, r, s): ``sum_{q in region (r, s)} m_bcq h_bjq`` for the border regions."""
    rows, cols = _slices(m.shape[-2]), _slices(m.shape[-1])
    out = m.new_empty((m.shape[0], m.shape[1], h.shape[1], len(rows), len(cols)))
    for r, ys in enumerate(rows):
        for s, xs in enumerate(cols):
            mm = m[:, :, ys, xs].flatten(2)
            hh = h[:, :, ys, xs].flatten(2)
            out[..., r, s] = torch.bmm(mm, hh.transpose(1, 2))
    return out


def _aspp_weights(
    model: DeepLabV3Plus, m: torch.Tensor, pre: torch.Tensor, aspp: torch.Tensor
) -> torch.Tensor:
    """Grad-CAM weights at the ASPP output from the pulled-back masks ``m`` (B,C,h4,w4);
    only the classes with a mask in some image of the batch are computed (zero elsewhere)."""
    fuse = model.classifier.fuse
    h = _derivative(fuse[1:3], pre)  # BatchNorm (eval) + ReLU: elementwise
    conv, w2 = fuse[0], model.classifier.class_conv.weight[:, :, 0, 0]
    rows, cols = len(_slices(pre.shape[-2])), len(_slices(pre.shape[-1]))
    response = _constant_response(conv, aspp.shape[1], rows, cols)
    used = torch.nonzero(m.abs().sum(dim=(0, 2, 3)) > 0)[:, 0]
    products = _region_products(m[:, used].contiguous(), h)
    total = m.new_zeros((m.shape[0], m.shape[1], aspp.shape[1]))
    total[:, used] = torch.einsum("bcjrs,cj,kjrs->bck", products, w2[used], response)
    return total / (aspp.shape[-2] * aspp.shape[-1])


def gradcam(
    model: DeepLabV3Plus,
    x: torch.Tensor,
    masks: Callable[[torch.Tensor], torch.Tensor] | torch.Tensor,
    layer: str = "aspp",
) -> CamOutput:
    """Grad-CAM of every (image, class) from one forward pass (see the module docstring).

    ``masks`` is a (B, C, H, W) float tensor or a function of the logits returning one (e.g.
    the predicted classes). The model must be in eval mode (BatchNorm then acts per pixel).
    """
    if model.training:
        raise ValueError("gradcam: put the model in eval mode first (model.eval())")
    module = target_layer(model, layer)  # validates the name
    if layer == "aspp" and not is_plus(model.info.arch):
        return _gradcam_by_autograd(model, x, masks, module)
    store: dict[str, torch.Tensor] = {}
    with torch.no_grad(), _capture(model.classifier.fuse[0], store, "pre"):
        taps = model.forward_taps(x)
        logits = taps["logits"]
        target = masks(logits) if callable(masks) else masks
        target = target.to(logits.dtype)
        decoder = taps["decoder"]
        m = _pull_back(target, decoder.shape[-2:])
        w2 = model.classifier.class_conv.weight[:, :, 0, 0]
        if layer == "classifier":
            feature = decoder
            cells = decoder.shape[-2] * decoder.shape[-1]
            weights = m.sum(dim=(2, 3))[:, :, None] * w2[None] / cells
        else:
            feature = taps["aspp"]
            weights = _aspp_weights(model, m, store["pre"], feature)
        cams = F.relu(torch.einsum("bck,bkhw->bchw", weights, feature.to(weights.dtype)))
    return CamOutput(logits, cams, weights, taps)


def _gradcam_by_autograd(
    model: DeepLabV3Plus,
    x: torch.Tensor,
    masks: Callable[[torch.Tensor], torch.Tensor] | torch.Tensor,
    module: nn.Module,
) -> CamOutput:
    """The ASPP-layer CAM of a DeepLabV3 head (no skip: the closed form's layout does not
    apply) by autograd; the same estimand, one more forward."""
    with torch.no_grad():
        taps = model.forward_taps(x)
    target = masks(taps["logits"]) if callable(masks) else masks
    out = gradcam_autograd(model, x, target.to(taps["logits"].dtype), module)
    return CamOutput(out.logits, out.cams, out.weights, taps)


def gradcam_autograd(
    model: nn.Module, x: torch.Tensor, masks: torch.Tensor, module: nn.Module
) -> CamOutput:
    """Reference Grad-CAM by autograd at ``module``'s output, for any segmentation model.

    One backward pass serves the whole batch and every class that has a mask somewhere in it
    (``torch.autograd.grad(..., is_grads_batched=True)``; images are independent in eval mode).
    """
    store: dict[str, torch.Tensor] = {}
    with torch.enable_grad(), _capture(module, store, "feature"):
        logits = model(x)
        feature = store["feature"]
        scores = (logits * masks.to(logits.dtype)).sum(dim=(2, 3))  # (B, C)
        present = torch.nonzero(masks.flatten(2).sum(dim=(0, 2)) > 0)[:, 0].cpu()
        weights = feature.new_zeros((x.shape[0], logits.shape[1], feature.shape[1]))
        if len(present):
            onehot = torch.zeros((len(present), *scores.shape), dtype=scores.dtype)
            onehot[torch.arange(len(present)), :, present] = 1.0
            (grads,) = torch.autograd.grad(
                scores, feature, grad_outputs=onehot.to(scores.device), is_grads_batched=True
            )
            weights[:, present] = grads.mean(dim=(3, 4)).transpose(0, 1)
    feature = feature.detach()
    cams = F.relu(torch.einsum("bck,bkhw->bchw", weights.detach(), feature))
    return CamOutput(logits.detach(), cams, weights.detach())


def classifier_cam(model: DeepLabV3Plus, decoder: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) closed-form Grad-CAM at ``classifier``: ``ReLU(W2_c . D)``, the class's
    pre-upsampling score without its bias. Proportional, per (image, class), to
    :func:`gradcam` at that layer (the factor is the mask's pixel count over h*w)."""
    w2 = model.classifier.class_conv.weight
    return F.relu(F.conv2d(decoder, w2))


def upsample_cams(
    cams: torch.Tensor, size: tuple[int, int], valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Bilinear upsampling to the input ``size`` (as the logits are), with padding zeroed."""
    up = F.interpolate(cams, size=size, mode="bilinear", align_corners=False).clamp_min(0)
    if valid is not None:
        up = up * valid[:, None].to(up.dtype)
    return up
