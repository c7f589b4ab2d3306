"""Class-activation maps with the grad-cam library, and the attention index ``cam_in_mask``.

Like pytorch-grad-cam itself, one base class does the plumbing (loading the network from its
card, preprocessing, picking the target layer and class, resizing maps back to the image) and
each method is a subclass that only names its grad-cam class.
"""

from __future__ import annotations

from abc import ABC
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
from torch import nn

from shindan.engine.backends import normaliser
from shindan.errors import InputError, ModelError
from shindan.models import ModelCard, load_card, load_network
from shindan.models.decision import Decision

# Grad-CAM maps at stride 32 of a 128 px input are 4x4: too coarse to say whether the model
# looks at the cell. The default layer is the deepest stage whose map is at least this wide.
MIN_CAM_SIDE = 7


def cam_in_mask(cam: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of the heatmap's mass inside the mask (0–1; NaN when the map is all zero).

    Parameters
    ----------
    cam : (rows, cols) float, >= 0
        Heatmap on the image's pixel grid.
    mask : (rows, cols) bool or int
        Object mask on the same grid; any non-zero pixel is inside.
    """
    if cam.shape != mask.shape:
        raise InputError(f"heatmap {cam.shape} and mask {mask.shape} differ in size")
    c = np.clip(np.asarray(cam, dtype=np.float64), 0, None)
    total = c.sum()
    if total <= 0:
        return float("nan")
    return float(c[np.asarray(mask) != 0].sum() / total)


def default_layer(net: nn.Module, size: int) -> str:
    """Name of the deepest feature stage whose map is at least ``MIN_CAM_SIDE`` wide."""
    info = getattr(net, "feature_info", None)
    if info is not None:
        stages = [(f["module"], f["reduction"]) for f in info]
        ok = [name for name, red in stages if size / red >= MIN_CAM_SIDE]
        return (ok or [stages[-1][0]])[-1]
    convs = [name for name, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ModelError("network has no convolution layer to explain")
    return convs[-1]


class Explainer(ABC):
    """Heatmaps for a classification model; subclasses set ``cam_class`` (a grad-cam class).

    Parameters
    ----------
    model : str, Path or ModelCard
        Shipped model name or model folder.
    layer : str, optional
        Dotted name of the target layer (default: :func:`default_layer`).
    batch_size : int
        Images per forward pass (and per batch of masked inputs for ScoreCAM/AblationCAM).
    """

    name: ClassVar[str]
    cam_class: ClassVar[Any]
    cam_kwargs: ClassVar[dict[str, Any]] = {}

    def __init__(self, model: Any, layer: str | None = None, batch_size: int = 16):
        self.card: ModelCard = model if isinstance(model, ModelCard) else load_card(str(model))
        if self.card.task != "classification":
            raise ModelError(
                f"{self.card.name} is a {self.card.task} model; explain needs a classifier"
            )
        self.net = load_network(self.card)
        for p in self.net.parameters():
            p.requires_grad_(True)
        self.layer = layer or default_layer(self.net, self.card.size)
        try:
            target = self.net.get_submodule(self.layer)
        except AttributeError:
            raise InputError(f"model {self.card.name} has no layer {self.layer!r}") from None
        self.batch_size = batch_size
        kw = dict(self.cam_kwargs)
        if "batch_size" in self.cam_class.__init__.__code__.co_varnames:
            kw["batch_size"] = batch_size
        self.cam = self.cam_class(model=self.net, target_layers=[target], **kw)
        self._normalise = normaliser(self.card)
        self.decision = Decision.from_card(self.card)  # temperature and cut-off, as predict

    @property
    def classes(self) -> list[str]:
        return self.card.classes

    def _tensor(self, batch: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self._normalise(batch))

    def __call__(
        self, batch: np.ndarray, targets: list[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Heatmaps and probabilities for a uint8 (N, size, size, 3) batch.

        Returns ``cams`` (N, size, size) in [0, 1] for the predicted class (by the card's
        decision, as ``classify predict`` labels it; or ``targets``) and ``probs`` (N, classes,
        calibrated with the card's temperature).
        """
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        x = self._tensor(batch)
        with torch.no_grad():
            t = self.decision.temperature
            probs = torch.softmax(self.net(x) / t, dim=1).numpy()
        classes = self.decision.labels(probs) if targets is None else np.asarray(targets)
        cams = self.cam(input_tensor=x, targets=[ClassifierOutputTarget(int(k)) for k in classes])
        return np.nan_to_num(np.asarray(cams, dtype=np.float32)), probs

    def __del__(self) -> None:  # grad-cam registers hooks; release them with the object
        cam = getattr(self, "cam", None)
        if cam is not None and hasattr(cam, "activations_and_grads"):
            cam.activations_and_grads.release()


def _subclass(name: str, cls_name: str, doc: str, **kwargs: Any) -> type[Explainer]:
    import pytorch_grad_cam

    return type(
        cls_name + "Explainer",
        (Explainer,),
        {
            "name": name,
            "cam_class": getattr(pytorch_grad_cam, cls_name),
            "cam_kwargs": kwargs,
            "__doc__": doc,
        },
    )


METHODS: dict[str, type[Explainer]] = {
    "gradcam": _subclass("gradcam", "GradCAM", "Grad-CAM (Selvaraju et al. 2017)."),
    "gradcam++": _subclass("gradcam++", "GradCAMPlusPlus", "Grad-CAM++ (Chattopadhay 2018)."),
    "scorecam": _subclass(
        "scorecam",
        "ScoreCAM",
        "Score-CAM (Wang et al. 2020): gradient-free, one forward per channel.",
    ),
    "eigencam": _subclass(
        "eigencam",
        "EigenCAM",
        "Eigen-CAM (Muhammad & Yeasin 2020): gradient-free, first principal "
        "component of the activations (not class-specific).",
    ),
    "ablationcam": _subclass(
        "ablationcam", "AblationCAM", "Ablation-CAM (Desai & Ramaswamy 2020): gradient-free."
    ),
}


def make_explainer(
    model: Any, method: str = "gradcam", layer: str | None = None, batch_size: int = 16
) -> Explainer:
    """An explainer by method name (see :data:`METHODS`)."""
    try:
        cls = METHODS[method.lower()]
    except KeyError:
        raise InputError(f"unknown method {method!r} (choose from {', '.join(METHODS)})") from None
    return cls(model, layer=layer, batch_size=batch_size)


def upsample(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A heatmap resized to ``shape`` (rows, cols) by bilinear interpolation."""
    if cam.shape == tuple(shape):
        return cam.copy()
    return cv2.resize(cam, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def _jet(values: np.ndarray) -> np.ndarray:
    heat = cv2.applyColorMap(np.clip(values * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)


def colour_bar(height: int) -> np.ndarray:
    """The heatmap's colour scale as an RGB panel ``height`` px tall: a jet strip from 1 (top,
    most attention) to 0 (bottom) on white, labelled "1" and "0" when tall enough to read.

    Examples
    --------
    >>> bar = colour_bar(200)
    >>> bar.shape[0], bar.shape[2]
    (200, 3)
    """
    width = max(12, height // 6)
    panel = np.full((height, width, 3), 255, np.uint8)
    strip = max(4, width // 3)
    pad = max(1, height // 20)
    values = np.linspace(1.0, 0.0, height - 2 * pad)[:, None].repeat(strip, axis=1)
    panel[pad : height - pad, 1 : 1 + strip] = _jet(values)
    if height >= 96:  # tick labels, black on white beside the strip
        scale = height / 400
        for text, y in (("1", pad + int(14 * scale) + 2), ("0", height - pad)):
            cv2.putText(
                panel,
                text,
                (strip + 3, y),
                cv2.FONT_HERSHEY_SIMPLEX,
                scale,
                (0, 0, 0),
                max(1, int(scale * 2)),
                cv2.LINE_AA,
            )
    return panel


def overlay(
    image: np.ndarray, cam: np.ndarray, alpha: float = 0.45, bar: bool = True
) -> np.ndarray:
    """RGB uint8 image with the heatmap (jet colours) blended on top at ``alpha``.

    With ``bar`` a :func:`colour_bar` is put on the right: the left ``image.shape[1]``
    columns stay on the image's own pixel grid.
    """
    heat = _jet(cam).astype(np.float32)
    out = (1 - alpha) * image.astype(np.float32) + alpha * heat
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return np.concatenate([out, colour_bar(out.shape[0])], axis=1) if bar else out
