"""Grouped, stratified splits: no patient/slide appears on both sides of a split."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from shindan.classify.data import ImageTable
from shindan.errors import InputError


def _group_ids(groups: np.ndarray) -> np.ndarray:
    return np.unique(groups.astype(str), return_inverse=True)[1]


def kfold(table: ImageTable, folds: int, seed: int = 0) -> list[np.ndarray]:
    """Indices of each of ``folds`` test folds (StratifiedGroupKFold, shuffled with ``seed``)."""
    g = _group_ids(table.groups)
    n_groups = len(np.unique(g))
    if folds < 2:
        raise InputError(f"--folds must be at least 2, got {folds}")
    if n_groups < folds:
        raise InputError(f"{n_groups} groups cannot fill {folds} folds; use fewer folds")
    skf = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [test for _, test in skf.split(np.zeros(len(table)), table.labels, g)]


def train_val_test(
    table: ImageTable, folds: int = 5, test_fold: int = 0, val_fraction: float = 0.15, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split into (train, val, test) indices, grouped and stratified.

    The test set is fold ``test_fold`` of ``folds``; the validation set (early stopping) is
    about ``val_fraction`` of the rest, again by whole groups. ``folds`` 0 means no test set.
    """
    if not 0 < val_fraction < 0.5:
        raise InputError(f"--val-fraction must be in (0, 0.5), got {val_fraction}")
    if folds:
        if not 0 <= test_fold < folds:
            raise InputError(f"--test-fold must be in 0..{folds - 1}, got {test_fold}")
        test = np.sort(kfold(table, folds, seed)[test_fold])
    else:
        test = np.zeros(0, np.int64)
    rest = np.setdiff1d(np.arange(len(table)), test)
    inner = table.subset(rest)
    # Tiny tables: no more folds than groups or than images of the rarest class.
    smallest = int(np.bincount(inner.labels)[np.unique(inner.labels)].min())
    k = min(max(2, round(1 / val_fraction)), len(np.unique(inner.groups.astype(str))), smallest)
    if k < 2:
        raise InputError("too few images or groups per class to hold out a validation set")
    val_local = kfold(inner, k, seed + 1)[0]
    val = np.sort(rest[val_local])
    train = np.setdiff1d(rest, val)
    return train, val, test


def site_split(
    table: ImageTable,
    sites: np.ndarray,
    folds: int = 5,
    test_fold: int = 0,
    val_fraction: float = 0.15,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) indices holding out a part of every site (hospital, camera).

    Each site's test part is the fold :func:`train_val_test` holds out of that site's images
    alone (so ``classify evaluate --split test`` on one site's data finds it again); its
    validation part is about ``val_fraction`` of the rest of that site. A class rarer than the
    number of folds is spread as far as it goes instead of shrinking the folds.

    Examples
    --------
    >>> from pathlib import Path
    >>> t = ImageTable(tuple(Path(f"{i}.jpg") for i in range(40)), np.arange(40) % 2,
    ...                np.arange(40).astype(object), ("a", "b"))
    >>> tr, va, te = site_split(t, np.arange(40) // 20, 5, 0, 0.25, 0)
    >>> len(tr), len(va), len(te)
    (24, 8, 8)
    """
    import warnings

    if not 0 < val_fraction < 0.5:
        raise InputError(f"--val-fraction must be in (0, 0.5), got {val_fraction}")
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        for site in np.unique(sites):
            idx = np.flatnonzero(sites == site)
            sub = table.subset(idx)
            if folds:
                if not 0 <= test_fold < folds:
                    raise InputError(f"--test-fold must be in 0..{folds - 1}, got {test_fold}")
                test = np.sort(kfold(sub, folds, seed)[test_fold])
            else:
                test = np.zeros(0, np.int64)
            rest = np.setdiff1d(np.arange(len(sub)), test)
            inner = sub.subset(rest)
            k = min(max(2, round(1 / val_fraction)), len(np.unique(inner.groups.astype(str))))
            val = np.sort(rest[kfold(inner, k, seed + 1)[0]])
            for out, local in zip(parts, (np.setdiff1d(rest, val), val, test), strict=True):
                out.append(idx[local])
    train, val, test = (np.sort(np.concatenate(p)) for p in parts)
    return train, val, test
