"""Models: architectures, model cards (JSON schema), a registry of shipped models, weight I/O.

Like timm: one factory (:func:`load_card` + :func:`build_network`) and every model described by
the same card, so the engine never hard-codes a model's preprocessing.
"""

from typing import Any

from shindan.models.card import ModelCard, load_card, validate_card
from shindan.models.registry import ZOO_DIR, list_models

# network.py needs torch (the train extra): its functions load on first use, so cards, the
# registry and ONNX analysis work on the base install.
_NETWORK = ("build_network", "load_network", "save_model")


def __getattr__(name: str) -> Any:
    if name in _NETWORK:
        from shindan.models import network

        return getattr(network, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ZOO_DIR",
    "ModelCard",
    "build_network",
    "list_models",
    "load_card",
    "load_network",
    "save_model",
    "validate_card",
]
