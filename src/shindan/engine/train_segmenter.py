"""Training loop for segmentation networks (smp U-Nets built from a model card).

Tiles come from a *sampler*: a function ``sampler(rng) -> (image uint8 (H, W, 3), label
uint8 (H, W))`` that draws one augmented training tile; label 255 marks unlabelled pixels,
which the loss skips, so partly annotated slides train only on their annotated regions.

Loss: cross-entropy + soft Dice (both ignoring 255). AdamW, linear warm-up then cosine decay,
early stopping on the validation mean Dice (per group of validation tiles, then averaged over
the groups, so that a large source cannot outvote a small one), a fixed seed, one CPU thread
by default. Runs on CUDA when present; the forward pass uses bf16 autocast where the hardware
has bf16 units (measured here: 2.3x faster steps than fp32 for the MobileNetV3 U-Net on one
CPU thread).
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shindan.engine.backends import default_device
from shindan.models import ModelCard, build_network

IGNORE = 255
Sampler = Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]
ValTiles = Sequence[tuple[np.ndarray, np.ndarray]]


@dataclass
class TrainConfig:
    """Settings of :func:`train_segmenter` (all have small, CPU-friendly defaults)."""

    steps: int = 2000  # maximum optimiser steps
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 100  # steps of linear warm-up
    eval_every: int = 200  # steps between validations
    patience: int = 5  # validations without improvement before stopping
    seed: int = 0
    threads: int = 1
    max_minutes: float | None = None  # wall-clock budget; stops at the next validation
    dice_weight: float = 1.0
    class_weights: list[float] | None = None
    dice_classes: list[int] | None = None  # classes averaged into the early-stopping Dice
    label_sets: dict[int, list[int]] | None = None  # partial labels, see dice_ce_loss
    precision: str = "auto"  # "auto" (bf16 autocast where supported), "bf16" or "fp32"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_steps(cls, steps: int, **kwargs: Any) -> TrainConfig:
        """A config whose warm-up is a tenth of ``steps`` (at most 100), as the train commands
        use: short fine-tunes must not spend most of their steps warming up."""
        return cls(steps=steps, warmup=min(100, steps // 10 + 1), **kwargs)


def _seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - third-party code may use the legacy RNG
    torch.manual_seed(seed)


def use_bf16(precision: str) -> bool:
    """Whether ``precision`` ('auto', 'bf16', 'fp32') means bf16 autocast on this machine."""
    from shindan.engine.backends import bf16_supported

    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, got {precision!r}")
    return precision == "bf16" or (precision == "auto" and bf16_supported())


def to_tensor(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (N, H, W, C) → normalised float32 (N, C, H, W), as the engine's predictors do."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().permute(0, 3, 1, 2) / 255.0
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - m) / s


def dice_ce_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    dice_weight: float = 1.0,
    class_weights: torch.Tensor | None = None,
    label_sets: dict[int, Sequence[int]] | None = None,
) -> torch.Tensor:
    """Cross-entropy + (1 - soft Dice) over labelled pixels (target 255 is skipped).

    ``label_sets`` maps extra target codes to sets of classes for partly known pixels (e.g.
    254 → "anything but glomerulus" on images where only glomeruli were outlined): their loss
    is ``-log(sum of the set's probabilities)``, and the Dice term leaves them out.
    """
    n_cls = logits.shape[1]
    exact = target < n_cls
    partial = torch.zeros_like(exact)
    if label_sets:
        for code in label_sets:
            partial |= target == code
    if not bool(exact.any() or partial.any()):
        return logits.sum() * 0.0
    logp = logits.log_softmax(1)
    tgt = torch.where(exact, target, 0).long()
    nll = -logp.gather(1, tgt.unsqueeze(1)).squeeze(1)
    w = class_weights[tgt] if class_weights is not None else torch.ones_like(nll)
    w = w * exact
    if label_sets:
        for code, allowed in label_sets.items():
            m = target == code
            if bool(m.any()):
                nll = torch.where(m, -torch.logsumexp(logp[:, list(allowed)], 1), nll)
                w = torch.where(m, torch.ones_like(w), w)
    ce = (nll * w).sum() / w.sum().clamp_min(1e-6)
    if dice_weight == 0 or not bool(exact.any()):
        return ce
    prob = logits.softmax(1) * exact.unsqueeze(1)
    onehot = F.one_hot(tgt, n_cls).permute(0, 3, 1, 2) * exact.unsqueeze(1)
    inter = (prob * onehot).sum((0, 2, 3))
    denom = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    present = onehot.sum((0, 2, 3)) > 0  # Dice of absent classes is undefined: leave them out
    dice = (2 * inter + 1.0) / (denom + 1.0)
    return ce + dice_weight * (1 - dice[present]).mean()


def confusion(
    pred: np.ndarray,
    target: np.ndarray,
    n_classes: int,
    label_sets: dict[int, Sequence[int]] | None = None,
) -> np.ndarray:
    """Confusion counts (rows = truth, cols = prediction) over pixels with a known class
    (targets 255 and partial-label codes >= ``n_classes`` are skipped).

    With ``label_sets`` the matrix gets one extra row: predictions on partly labelled pixels
    that their set rules out (e.g. glomerulus on a pixel known to be "not glomerulus"). They
    are false positives of the predicted class, which Dice must see.
    """
    v = target < n_classes
    idx = target[v].astype(np.int64) * n_classes + pred[v].astype(np.int64)
    cm = np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    if label_sets is None:
        return cm
    wrong = np.zeros(n_classes, np.int64)
    for code, allowed in label_sets.items():
        p = pred[target == code]
        wrong += np.bincount(p[~np.isin(p, allowed)].astype(np.int64), minlength=n_classes)
    return np.vstack([cm, wrong])


def dice_from_confusion(cm: np.ndarray) -> list[float | None]:
    """Per-class Dice from a confusion matrix (None for a class absent from truth and output);
    an extra row of partial-label false positives (see :func:`confusion`) counts too."""
    n = cm.shape[1]
    tp = np.diag(cm[:n]).astype(float)
    denom = cm.sum(0) + cm[:n].sum(1)
    return [float(2 * t / d) if d > 0 else None for t, d in zip(tp, denom, strict=True)]


@torch.no_grad()
def predict_tiles(
    net: nn.Module,
    images: Sequence[np.ndarray],
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 4,
) -> list[np.ndarray]:
    """Argmax label maps of whole tiles (sides padded to a multiple of 32 by reflection)."""
    net.eval()
    device = next(net.parameters()).device
    out = []
    for img in images:
        h, w = img.shape[:2]
        ph, pw = (-h) % 32, (-w) % 32
        x = to_tensor(img[None], mean, std).to(device)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        out.append(net(x)[0, :, :h, :w].argmax(0).cpu().numpy().astype(np.uint8))
    return out


def evaluate(
    net: nn.Module,
    val: Sequence[tuple[np.ndarray, np.ndarray]],
    n_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    label_sets: dict[int, Sequence[int]] | None = None,
) -> np.ndarray:
    """Confusion matrix of the network over validation (image, label) tiles (with
    ``label_sets``, plus the row of partial-label false positives, see :func:`confusion`)."""
    preds = predict_tiles(net, [v[0] for v in val], mean, std)
    return sum(
        confusion(p, lab, n_classes, label_sets) for p, (_, lab) in zip(preds, val, strict=True)
    )


def validation_score(
    confusions: Mapping[str, np.ndarray], dice_classes: Sequence[int]
) -> tuple[float, dict[str, float]]:
    """Mean over groups of each group's mean Dice over those ``dice_classes`` that its truth
    contains (a class a group has no pixels of, e.g. tubule in glomerulus-only PAS images,
    would only score its false positives), and the per-group scores.

    Examples
    --------
    >>> import numpy as np
    >>> he = np.array([[8, 2], [2, 8]])  # both classes: Dice 0.8 each
    >>> pas = np.array([[0, 0], [1, 9]])  # class 1 only: Dice 0.947
    >>> score, groups = validation_score({"he": he, "pas": pas}, [0, 1])
    >>> round(score, 3), {k: round(v, 3) for k, v in groups.items()}
    (0.874, {'he': 0.8, 'pas': 0.947})
    """
    groups: dict[str, float] = {}
    for name, cm in confusions.items():
        n = cm.shape[1]
        truth = cm[:n].sum(1)
        dices = dice_from_confusion(cm)
        scored = [dices[c] for c in dice_classes if truth[c] > 0 and dices[c] is not None]
        if scored:
            groups[name] = float(np.mean(scored))
    return (float(np.mean(list(groups.values()))) if groups else 0.0), groups


def _lr_factor(step: int, warmup: int, total: int, time_fraction: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to 2% over whichever runs out first: steps or time."""
    if step < warmup:
        return (step + 1) / warmup
    t = max((step - warmup) / max(1, total - warmup), time_fraction)
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def _progress(disable: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=Console(file=sys.stderr),
        disable=disable,
        transient=False,
    )


def train_segmenter(
    card: ModelCard | dict[str, Any],
    sampler: Sampler,
    val: ValTiles | Mapping[str, ValTiles],
    config: TrainConfig | None = None,
    *,
    net: nn.Module | None = None,
    on_best: Callable[[nn.Module, dict[str, Any]], None] | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool = True,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train a segmentation network described by ``card`` and return the best one.

    Parameters
    ----------
    card : ModelCard or dict
        Architecture, classes and normalisation (``input.mean``/``input.std``).
    sampler : callable
        ``sampler(rng) -> (image uint8 (H, W, 3), label uint8 (H, W))``; all tiles of a batch
        must have the same size. Label 255 = unlabelled.
    val : sequence of (image, label), or a mapping of group name to such sequences
        Held-out tiles (any size) scored every ``config.eval_every`` steps. The score is the
        mean Dice over ``config.dice_classes`` (those present in the truth), per group, then
        averaged over the groups (see :func:`validation_score`).
    net : nn.Module, optional
        Start from this network (fine-tuning) instead of a fresh ``build_network(card)``.
    on_best : callable, optional
        Called with ``(net, result)`` whenever the validation Dice improves (e.g. to save it).

    Returns
    -------
    net : nn.Module
        The best network by validation mean Dice, in eval mode.
    result : dict
        ``best_dice``, ``per_class_dice``, ``step``, ``history`` and the config.
    """
    cfg = config or TrainConfig()
    data = card.data if isinstance(card, ModelCard) else card
    classes = list(data["classes"])
    n_cls = len(classes)
    mean, std = data["input"]["mean"], data["input"]["std"]
    torch.set_num_threads(max(1, cfg.threads))
    _seed_everything(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = default_device()
    bf16 = use_bf16(cfg.precision)
    net = (net if net is not None else build_network(data)).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    cw = (
        torch.tensor(cfg.class_weights, dtype=torch.float32, device=device)
        if cfg.class_weights
        else None
    )
    dice_classes = cfg.dice_classes if cfg.dice_classes is not None else list(range(n_cls))
    say = log or (lambda s: None)

    val_groups = dict(val) if isinstance(val, Mapping) else ({"all": val} if val else {})
    best: dict[str, Any] = {"best_dice": -1.0, "step": 0, "per_class_dice": {}}
    best_state = copy.deepcopy(net.state_dict())
    history: list[dict[str, Any]] = []
    bad_evals, start, running = 0, time.monotonic(), None
    with _progress(not progress) as bar:
        task = bar.add_task("train", total=cfg.steps, info="")
        for step in range(cfg.steps):
            net.train()
            elapsed = (time.monotonic() - start) / 60
            frac = elapsed / cfg.max_minutes if cfg.max_minutes else 0.0
            for g in opt.param_groups:
                g["lr"] = cfg.lr * _lr_factor(step, cfg.warmup, cfg.steps, frac)
            tiles = [sampler(rng) for _ in range(cfg.batch_size)]
            x = to_tensor(np.stack([t[0] for t in tiles]), mean, std).to(device)
            y = torch.from_numpy(np.stack([t[1] for t in tiles]).astype(np.int64)).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = net(x)
            loss = dice_ce_loss(
                logits.float(),
                y,
                dice_weight=cfg.dice_weight,
                class_weights=cw,
                label_sets=cfg.label_sets,
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
            bar.update(task, advance=1, info=f"loss {running:.3f} best {best['best_dice']:.3f}")
            last = step + 1 == cfg.steps
            if (step + 1) % cfg.eval_every and not last:
                continue
            cms = {
                g: evaluate(net, tiles, n_cls, mean, std, cfg.label_sets)
                for g, tiles in val_groups.items()
            } or {"none": np.eye(n_cls, dtype=np.int64)}
            cm = sum(cms.values())
            dices = dice_from_confusion(cm)
            mdice, group_dice = validation_score(cms, dice_classes)
            minutes = (time.monotonic() - start) / 60
            rec = {
                "step": step + 1,
                "loss": round(running, 4),
                "mean_dice": round(mdice, 4),
                "per_class_dice": {
                    classes[i]: (None if d is None else round(d, 4)) for i, d in enumerate(dices)
                },
                "minutes": round(minutes, 1),
            }
            if len(cms) > 1:
                rec["group_dice"] = {g: round(d, 4) for g, d in group_dice.items()}
            history.append(rec)
            say(
                f"step {step + 1} loss {running:.4f} val mean Dice {mdice:.4f} "
                f"{rec['per_class_dice']} {rec.get('group_dice', '')} ({minutes:.1f} min)"
            )
            if mdice > best["best_dice"]:
                best = {
                    "best_dice": mdice,
                    "step": step + 1,
                    "per_class_dice": rec["per_class_dice"],
                    **({"group_dice": rec["group_dice"]} if "group_dice" in rec else {}),
                    "confusion": cm.tolist(),
                }
                best_state = copy.deepcopy(net.state_dict())
                bad_evals = 0
                if on_best is not None:
                    on_best(net, {**best, "history": history})
            else:
                bad_evals += 1
            if bad_evals >= cfg.patience:
                say(f"early stop at step {step + 1} (no gain in {cfg.patience} validations)")
                break
            if cfg.max_minutes is not None and minutes >= cfg.max_minutes:
                say(f"time budget of {cfg.max_minutes} min reached at step {step + 1}")
                break
    net.load_state_dict(best_state)
    net.eval()
    return net, {
        **best,
        "history": history,
        "config": {**asdict(cfg), "precision": "bf16" if bf16 else "fp32", "device": device.type},
    }
