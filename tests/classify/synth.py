"""Synthetic labelled images and a tiny classifier trained on them in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("disc", "ring", "square")


def draw(kind: str, rng: np.random.Generator, side: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """A stained-looking object on a pink background and its mask (bool)."""
    yy, xx = np.mgrid[:side, :side]
    cy, cx = rng.uniform(0.35, 0.65, 2) * side
    r = rng.uniform(0.18, 0.26) * side
    d = np.hypot(yy - cy, xx - cx)
    if kind == "disc":
        mask = d < r
    elif kind == "ring":
        mask = (d < r) & (d > 0.55 * r)
    else:
        mask = (abs(yy - cy) < r * 0.85) & (abs(xx - cx) < r * 0.85)
    bg = np.array([235, 200, 215]) + rng.normal(0, 4, 3)
    fg = np.array([90, 50, 140]) + rng.normal(0, 10, 3)
    img = np.where(mask[..., None], fg, bg) + rng.normal(0, 6, (side, side, 3))
    return np.clip(img, 0, 255).astype(np.uint8), mask


def make_tree(
    root: Path,
    per_class: int = 16,
    seed: int = 0,
    masks: Path | None = None,
    classes: tuple[str, ...] = CLASSES,
) -> Path:
    """``root/<class>/p<k>-<i>.png`` (group = 'p<k>', 4 groups); masks by stem if asked."""
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img, mask = draw(c, rng)
            name = f"p{i % 4}-{c}{i}"
            Image.fromarray(img).save(root / c / f"{name}.png")
            if masks is not None:
                masks.mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask.astype(np.uint8) * 255).save(masks / f"{name}.png")
    return root


def tiny_options(**kw):
    """Train options for a very small, very fast network (seconds on one core)."""
    from shindan.classify.train import TrainOptions

    base = dict(
        name="tiny",
        arch="resnet10t",
        size=32,
        epochs=4,
        batch_size=8,
        lr=3e-3,
        patience=10,
        folds=4,
        val_fraction=0.25,
        colour=0.3,
        progress=False,
        n_boot=50,
        shifts=["jpeg-15", "zoom-0.65"],
        licence="test",
        command="shindan classify train (test)",
        arch_kwargs={"channels": [8, 16, 32, 64], "stem_width": 8},
    )
    base.update(kw)
    return TrainOptions(**base)
