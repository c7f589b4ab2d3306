"""The shared classifier training loop: every classification task (images, CT stacks) trains here.

Datasets yield ``(float32 tensor C×H×W, already normalised, int label)``; the network comes from
the model card (:func:`shindan.models.build_network`). Class imbalance is handled with a
class-weighted loss, the optimiser is AdamW with a one-cycle (warm-up + cosine) schedule, and
training stops early on the validation macro-F1 with the best weights restored.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from shindan.engine.backends import default_device
from shindan.engine.tta import tta_logits
from shindan.errors import InputError
from shindan.models import build_network
from shindan.util.progress import progress_bar

__all__ = ["dataset_labels", "fit", "predict_dataset", "seed_everything"]


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch generator for data loaders."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - libraries that still use the global stream
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _worker_init(worker_id: int) -> None:
    # Each loader worker gets its own, reproducible numpy/python stream (torch seeds itself).
    s = torch.initial_seed() % 2**32
    np.random.seed(s)  # noqa: NPY002
    random.seed(s)


def dataset_labels(ds: Dataset) -> np.ndarray:
    """Integer labels of a dataset without loading its images when it has a ``labels`` attribute.

    Falls back to iterating the dataset (slow: decodes every item).
    """
    if isinstance(ds, Subset):
        return dataset_labels(ds.dataset)[np.asarray(ds.indices, dtype=np.int64)]
    labels = getattr(ds, "labels", None)
    if labels is not None:
        return np.asarray(labels, dtype=np.int64)
    return np.asarray([int(ds[i][1]) for i in range(len(ds))], dtype=np.int64)  # type: ignore[arg-type]


def _class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights n / (k · count_c), 0 for classes absent from training."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    w = np.zeros(n_classes)
    present = counts > 0
    w[present] = len(labels) / (present.sum() * counts[present])
    return torch.as_tensor(w, dtype=torch.float32)


@torch.no_grad()
def predict_dataset(
    net: nn.Module, ds: Dataset, batch_size: int = 64, num_workers: int = 0, tta: Sequence[str] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities (N, classes) and labels (N,) of a dataset, in dataset order,
    logits averaged over the test-time views ``tta``."""
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    net.eval()
    device = next(net.parameters()).device
    probs, labels = [], []
    with torch.inference_mode():
        for x, y in loader:
            logits = tta_logits(net, x.float().to(device), tta)
            probs.append(torch.softmax(logits, dim=1).cpu().numpy())
            labels.append(np.asarray(y, dtype=np.int64))
    if not probs:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    return np.concatenate(probs), np.concatenate(labels)


def fit(
    card: dict[str, Any],
    train: Dataset,
    val: Dataset | None,
    *,
    epochs: int = 30,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    patience: int = 5,
    seed: int = 0,
    class_weights: bool = True,
    progress: bool = True,
    num_threads: int | None = None,
    num_workers: int = 0,
    label_smoothing: float = 0.0,
    monitor: str = "macro_f1",
    log: Any = None,
    init: Callable[[nn.Module], Any] | None = None,
    val_score: Callable[[np.ndarray, np.ndarray], float] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train the card's network on ``train``; early-stop on ``val``; return (net, history).

    Parameters
    ----------
    card : dict
        Model card data (``architecture``, ``classes``, ``input``); the network is built from it.
    train, val : Dataset
        Items ``(float32 tensor C×H×W normalised, int label)``. ``val`` may be None: then the
        network trains for all ``epochs`` and the last weights are kept.
    epochs : int
        Maximum number of passes over ``train``.
    batch_size : int
        Images per optimiser step.
    lr, weight_decay : float
        Peak learning rate of the one-cycle schedule and AdamW's decoupled weight decay.
    patience : int
        Epochs without improvement of the monitored validation metric before stopping.
    seed : int
        Seeds weights, shuffling and augmentation: the same seed gives the same model.
    class_weights : bool
        Weight the cross-entropy by inverse class frequency (class imbalance).
    progress : bool
        Show a rich progress bar on stderr.
    num_threads : int, optional
        torch intra-op threads while training (restored afterwards); None leaves it as is.
    num_workers : int
        DataLoader worker processes for decoding/augmentation (0 = in this process).
    label_smoothing : float
        Cross-entropy label smoothing (0 = off).
    monitor : {"macro_f1", "loss"}
        Validation quantity for early stopping and best-weight selection.
    log : callable, optional
        Called with one line of text per epoch (e.g. ``print``) for logs without a terminal.
    init : callable, optional
        Called with the freshly built network before training, e.g. to load pretrained
        weights (:func:`shindan.models.pretrained.load_pretrained_encoder`).
    val_score : callable, optional
        ``val_score(y_val, probs)`` replaces the validation macro-F1 as the monitored score
        (``monitor="macro_f1"``), e.g. a mean over sites; recorded as ``val_score``.

    Returns
    -------
    net : nn.Module
        The network with the best validation weights restored, in eval mode, on the CPU.
    history : dict
        Per-epoch lists ``train_loss``, ``val_loss``, ``val_accuracy``, ``val_macro_f1``,
        ``lr`` and ``seconds``; ``best_epoch`` (1-based), ``best_score`` (the monitored value
        there), ``epochs_run``, ``stopped_early``.
    """
    from sklearn.metrics import accuracy_score, f1_score

    if monitor not in ("macro_f1", "loss"):
        raise InputError(f"unknown monitor {monitor!r} (choose macro_f1 or loss)")
    if len(train) == 0:  # type: ignore[arg-type]
        raise InputError("the training set is empty")
    old_threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        gen = seed_everything(seed)
        n_classes = len(card["classes"])
        device = default_device()
        net = build_network(card)
        if init is not None:
            init(net)
        net = net.to(device)
        labels = dataset_labels(train)
        if labels.min() < 0 or labels.max() >= n_classes:
            raise InputError(f"training labels outside 0..{n_classes - 1}")
        weight = _class_weights(labels, n_classes).to(device) if class_weights else None
        loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
        eval_loss_fn = nn.CrossEntropyLoss(weight=weight)
        # drop_last avoids a batch of one, which BatchNorm cannot normalise.
        drop_last = len(train) > batch_size  # type: ignore[arg-type]
        loader = DataLoader(
            train,
            batch_size=batch_size,
            shuffle=True,
            generator=gen,
            drop_last=drop_last,
            num_workers=num_workers,
            worker_init_fn=_worker_init if num_workers else None,
            persistent_workers=num_workers > 0,
        )
        steps = max(1, len(loader))
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=lr,
            total_steps=epochs * steps,
            pct_start=min(0.3, 2 / max(epochs, 1)),
            anneal_strategy="cos",
        )
        hist: dict[str, Any] = {
            k: []
            for k in ("train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr", "seconds")
        }
        if val_score is not None:
            hist["val_score"] = []
        best_score, best_epoch, best_state, bad = -math.inf, 0, None, 0
        stopped_early = False
        with progress_bar("training", epochs * steps, enabled=progress) as advance:
            for epoch in range(1, epochs + 1):
                t0 = time.perf_counter()
                net.train()
                total, count = 0.0, 0
                for x, y in loader:
                    y = torch.as_tensor(y, dtype=torch.long).to(device)
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(net(x.float().to(device)), y)
                    loss.backward()
                    opt.step()
                    sched.step()
                    total += float(loss.detach()) * len(y)
                    count += len(y)
                    advance(1)
                hist["train_loss"].append(total / max(count, 1))
                hist["lr"].append(opt.param_groups[0]["lr"])
                line = f"epoch {epoch}/{epochs} train_loss {hist['train_loss'][-1]:.4f}"
                if val is not None and len(val) > 0:  # type: ignore[arg-type]
                    probs, y_val = predict_dataset(net, val, batch_size=max(batch_size, 64))
                    v_loss = float(
                        eval_loss_fn(
                            torch.log(torch.as_tensor(probs, device=device).clamp_min(1e-12)),
                            torch.as_tensor(y_val, device=device),
                        )
                    )
                    pred = probs.argmax(1)
                    acc = float(accuracy_score(y_val, pred))
                    f1 = float(
                        f1_score(
                            y_val, pred, average="macro", labels=np.unique(y_val), zero_division=0
                        )
                    )
                    hist["val_loss"].append(v_loss)
                    hist["val_accuracy"].append(acc)
                    hist["val_macro_f1"].append(f1)
                    line += f" val_loss {v_loss:.4f} val_acc {acc:.4f} val_f1 {f1:.4f}"
                    watched = f1
                    if val_score is not None:
                        watched = float(val_score(y_val, probs))
                        hist["val_score"].append(watched)
                        line += f" val_score {watched:.4f}"
                    # Ties on F1 (common once it saturates) are broken by the lower loss.
                    score = (watched - 1e-6 * v_loss) if monitor == "macro_f1" else -v_loss
                    if score > best_score:
                        best_score, best_epoch, bad = score, epoch, 0
                        best_state = copy.deepcopy(net.state_dict())
                    else:
                        bad += 1
                else:
                    best_epoch = epoch
                hist["seconds"].append(time.perf_counter() - t0)
                if log is not None:
                    log(line + f" ({hist['seconds'][-1]:.0f} s)")
                if val is not None and bad >= patience:
                    stopped_early = True
                    break
        if best_state is not None:
            net.load_state_dict(best_state)
        net.cpu()
        hist.update(
            best_epoch=best_epoch,
            epochs_run=len(hist["train_loss"]),
            stopped_early=stopped_early,
            best_score=None
            if best_state is None
            else (
                hist["val_score" if val_score is not None else "val_macro_f1"][best_epoch - 1]
                if monitor == "macro_f1"
                else hist["val_loss"][best_epoch - 1]
            ),
        )
        return net.eval(), hist
    finally:
        torch.set_num_threads(old_threads)
