"""Model cards: the single source of a model's classes, input scale and normalisation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from shindan.errors import ModelError

SCHEMA_PATH = Path(__file__).with_name("card.schema.json")
# What a model folder holds (training_log.json is written beside the model by the train
# commands): retraining into a folder replaces these, and refuses a folder with anything else.
# Here, not beside save_model, so commands check --out without importing torch.
MODEL_FILES = ("card.json", "weights.safetensors", "model.onnx", "training_log.json")
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@cache
def _schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def validate_card(data: dict[str, Any], source: str = "card") -> None:
    """Raise :class:`ModelError` if ``data`` does not follow the card schema."""
    import jsonschema  # 0.1 s to import: only when a card is read, not at start-up

    try:
        jsonschema.validate(data, _schema())
    except jsonschema.ValidationError as exc:
        where = "/".join(map(str, exc.absolute_path)) or "(top)"
        raise ModelError(f"{source}: invalid model card at {where}: {exc.message}") from None


@dataclass(frozen=True)
class ModelCard:
    """A validated model card and the folder its files live in."""

    data: dict[str, Any]
    directory: Path = field(compare=False)

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def version(self) -> str:
        return self.data["version"]

    @property
    def task(self) -> str:
        return self.data["task"]

    @property
    def classes(self) -> list[str]:
        return list(self.data["classes"])

    @property
    def mpp(self) -> float | None:
        """Input scale in µm/px (None for models that take whole images at any scale)."""
        return self.data["input"].get("mpp")

    @property
    def size(self) -> int:
        """Input tile side in pixels."""
        return int(self.data["input"]["size"])

    @property
    def overlap(self) -> int:
        """Tile overlap in pixels for tiled segmentation."""
        return int(self.data["input"].get("overlap", 0))

    @property
    def tta(self) -> tuple[str, ...]:
        """Test-time views whose logits are averaged with the plain input's (may be empty)."""
        return tuple(self.data["input"].get("tta", ()))

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(self.data["input"]["mean"])

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(self.data["input"]["std"])

    @property
    def channels(self) -> int:
        return int(self.data["input"].get("channels", 3))

    @property
    def weights_path(self) -> Path:
        return self.directory / self.data["files"]["weights"]

    @property
    def onnx_path(self) -> Path | None:
        name = self.data["files"].get("onnx")
        return self.directory / name if name else None

    @property
    def headline(self) -> str:
        return self.data.get("headline", "")

    def summary_line(self) -> str:
        """One line for ``shindan models``: name, task, classes, data, headline metric."""
        t = self.data["training"]
        return (
            f"{self.name}\t{self.task}\t{','.join(self.classes)}\t{t['data']}"
            f"{' (synthetic)' if t.get('synthetic') else ''}\t{self.headline or 'n/a'}"
        )


def load_card(name_or_path: str | Path) -> ModelCard:
    """Find a model card by shipped name, model folder, or card JSON path.

    Examples
    --------
    >>> from shindan.models import load_card
    >>> load_card("wbc").classes[:2]  # doctest: +SKIP
    ['basophil', 'eosinophil']
    """
    from shindan.models.registry import ZOO_DIR

    p = Path(name_or_path)
    if p.is_dir():
        p = p / "card.json"
    elif not p.suffix and not p.exists():
        p = ZOO_DIR / str(name_or_path) / "card.json"
        if not p.exists():
            from shindan.models.registry import list_models

            names = ", ".join(c.name for c in list_models()) or "none"
            raise ModelError(f"unknown model {str(name_or_path)!r} (shipped: {names})")
    if not p.exists():
        raise ModelError(f"{p}: no model card found")
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{p}: unreadable model card ({exc})") from None
    validate_card(data, str(p))
    card = ModelCard(data, p.parent)
    if not card.weights_path.exists():
        raise ModelError(f"{card.weights_path}: weight file missing")
    return card


# The default segmenter: small and fast on CPU; --encoder / --decoder-channels trade speed for
# capacity (see :func:`unet_architecture`).
DEFAULT_ENCODER = "timm-mobilenetv3_small_100"
DEFAULT_DECODER = (96, 64, 32, 16, 16)


def unet_architecture(
    encoder: str, decoder_channels: str | Sequence[int]
) -> tuple[str, tuple[int, ...]]:
    """Check a U-Net encoder name and decoder widths (a sequence or "96,64,32,16,16").

    Raises
    ------
    ModelError
        If segmentation-models-pytorch has no such encoder, or the widths are not five
        positive integers.

    Examples
    --------
    >>> unet_architecture("timm-mobilenetv3_large_075", "128,64,32,16,16")
    ('timm-mobilenetv3_large_075', (128, 64, 32, 16, 16))
    """
    import warnings

    import segmentation_models_pytorch as smp

    try:  # smp resolves aliases (timm-*, tu-*) only when it builds one: build it, no weights
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            smp.encoders.get_encoder(encoder, weights=None)
    except (KeyError, RuntimeError, ValueError):
        raise ModelError(
            f"unknown U-Net encoder {encoder!r} (see segmentation_models_pytorch)"
        ) from None
    parts = decoder_channels.split(",") if isinstance(decoder_channels, str) else decoder_channels
    try:
        widths = tuple(int(c) for c in parts)
    except ValueError:
        widths = ()
    if len(widths) != 5 or min(widths) < 1:
        raise ModelError(f"decoder channels must be 5 positive integers, got {decoder_channels!r}")
    return encoder, widths


def unet_card(
    name: str,
    classes: list[str],
    summary: str,
    *,
    mpp: float,
    size: int = 512,
    overlap: int = 64,
    encoder: str = DEFAULT_ENCODER,
    decoder_channels: tuple[int, ...] = DEFAULT_DECODER,
    limits: list[str] | None = None,
) -> dict[str, Any]:
    """A card skeleton for an smp U-Net segmenter at ``mpp`` µm/px (training filled in later)."""
    return {
        "name": name,
        "version": "1.0.0",
        "task": "segmentation",
        "summary": summary,
        "architecture": {
            "library": "smp",
            "name": "Unet",
            "kwargs": {"encoder_name": encoder, "decoder_channels": list(decoder_channels)},
        },
        "classes": list(classes),
        "input": {
            "mpp": mpp,
            "size": size,
            "overlap": overlap,
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
        },
        "files": {"weights": "weights.safetensors"},
        "training": {"data": "", "licence": "", "command": ""},
        "limits": list(limits or []),
    }


def as_fine_tune(card: dict[str, Any], base: ModelCard) -> dict[str, Any]:
    """``card`` (a training's card, its ``training`` block filled in) marked as a fine-tune
    of ``base``, so that nothing of ``base`` is passed off as the new model's.

    The version gains ``+ft``; the summary says what was fine-tuned on what; the training
    command is prefixed with ``base``'s (reproducing the model means reproducing its starting
    point first); the licence adds ``base``'s, which the weights inherit; and ``base``'s
    headline (a score of another model) is dropped. ``card`` is not modified.

    Examples
    --------
    >>> base = ModelCard({"name": "m", "version": "1.2.0", "training": {
    ...     "command": "train a", "licence": "CC BY-NC"}}, Path("."))
    >>> new = as_fine_tune({"name": "m", "version": "1.2.0", "headline": "Dice 0.9",
    ...     "training": {"data": "3 images", "licence": "MIT", "command": "train b"}}, base)
    >>> new["version"], new["training"]["command"], "headline" in new
    ('1.2.0+ft', 'train a && train b', False)
    >>> new["training"]["licence"]
    'MIT, and that of m 1.2.0: CC BY-NC'
    """
    training = dict(card["training"])
    base_training = base.data.get("training", {})
    base_cmd = base_training.get("command", "")
    if base_cmd:
        training["command"] = f"{base_cmd} && {training.get('command', '')}"
    training["init"] = {"name": base.name, "version": base.version}
    training["licence"] = (
        f"{training.get('licence') or 'as the training data'}, and that of "
        f"{base.name} {base.version}: {base_training.get('licence') or 'not stated'}"
    )
    out = {k: v for k, v in card.items() if k != "headline"}
    out["training"] = training
    out["version"] = base.version + (".ft" if "+" in base.version else "+ft")
    out["summary"] = (
        f"{base.name} {base.version} fine-tuned on {training.get('data') or 'new data'}; "
        "its scores are in metrics (those of the starting model do not carry over)."
    )
    return out
