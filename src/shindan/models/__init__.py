"""Models: architectures, model cards (JSON schema), a registry of shipped models, weight I/O.

Like timm: one factory (:func:`load_card` + :func:`build_network`) and every model described by
the same card, so the engine never hard-codes a model's preprocessing.
"""

from shindan.models.card import ModelCard, load_card, validate_card
from shindan.models.network import build_network, load_network, save_model
from shindan.models.registry import ZOO_DIR, list_models

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
