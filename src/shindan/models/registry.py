"""The shipped models: one folder each under ``zoo/`` with ``card.json`` and weight files."""

from __future__ import annotations

from pathlib import Path

from shindan.models.card import ModelCard, load_card

ZOO_DIR = Path(__file__).with_name("zoo")


def list_models() -> list[ModelCard]:
    """Cards of every shipped model, sorted by name."""
    return [load_card(d) for d in sorted(ZOO_DIR.iterdir()) if (d / "card.json").exists()]
