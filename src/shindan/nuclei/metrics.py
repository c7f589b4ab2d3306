"""Nucleus segmentation metrics: pixel Dice and the Aggregated Jaccard Index (AJI)."""

from __future__ import annotations

import numpy as np


def dice(truth: np.ndarray, pred: np.ndarray) -> float:
    """Pixel Dice of two masks (any non-zero pixel is foreground); 1.0 when both are empty."""
    t, p = np.asarray(truth) > 0, np.asarray(pred) > 0
    denom = t.sum() + p.sum()
    return float(2 * (t & p).sum() / denom) if denom else 1.0


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0..N (0 kept as background)."""
    _, inv = np.unique(labels, return_inverse=True)
    out = inv.reshape(labels.shape)
    if labels.min() != 0:  # no background pixel: keep instance 1 as 1
        out = out + 1
    return out


def aji(truth: np.ndarray, pred: np.ndarray) -> float:
    """Aggregated Jaccard Index of two instance label maps (Kumar et al. 2017, IEEE TMI).

    For each true nucleus G_i, the predicted nucleus S_j with the highest IoU is matched
    (unmatched nuclei pair with the empty set); C accumulates |G_i ∩ S_j| and U |G_i ∪ S_j|;
    every predicted nucleus never matched adds its area to U. AJI = C / U.
    """
    t = _relabel(np.asarray(truth).astype(np.int64))
    p = _relabel(np.asarray(pred).astype(np.int64))
    nt, np_ = int(t.max()), int(p.max())
    if nt == 0:
        return 1.0 if np_ == 0 else 0.0
    # contingency table of overlaps (row 0 / column 0 = background)
    inter = np.bincount((t * (np_ + 1) + p).ravel(), minlength=(nt + 1) * (np_ + 1))
    inter = inter.reshape(nt + 1, np_ + 1)
    area_t = inter.sum(1)
    area_p = inter.sum(0)
    ov = inter[1:, 1:].astype(np.float64)
    union = area_t[1:, None] + area_p[None, 1:] - ov
    iou = np.where(ov > 0, ov / np.maximum(union, 1), 0.0)
    c = u = 0.0
    used = np.zeros(np_ + 1, bool)
    for i in range(nt):
        if np_ and iou[i].max() > 0:
            j = int(iou[i].argmax())
            c += ov[i, j]
            u += union[i, j]
            used[j + 1] = True
        else:
            u += area_t[i + 1]
    u += area_p[1:][~used[1:]].sum()
    return float(c / u) if u else 1.0
