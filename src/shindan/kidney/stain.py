"""Which stain an input carries (H&E, PAS or other), from the colour of its tissue pixels.

A model trained on one stain says nothing reliable on another (the glomerulosclerosis model
learnt PAS; on H&E it calls normal glomeruli sclerosed), so the analysis states the stain it
sees and marks the results of models whose card does not list it (:mod:`shindan.kidney.domain`).

Method (documented in docs/design.md, "Stain recognition"):

1. Tissue pixels: optical density OD = -log10(RGB / 255) summed over channels above 0.3, and
   not near-black (blacked-out areas, padding).
2. Features: each pixel's OD chromaticity (the share of its OD in red, green, blue). Within
   an image, the 30% of pixels with the least red OD (the least haematoxylin: cytoplasm,
   matrix, stroma) carry the counterstain's colour: eosin is orange-pink (its OD leans to
   blue), PAS magenta leans to red. Their median chromaticity, that of the 10% most
   haematoxylin-rich pixels, overall quantiles and OD levels make 11 numbers
   (:func:`stain_features`).
3. A multinomial logistic regression (standardised features) calibrated on the shared data:
   H&E = AAPI kidney tiles and cut-outs, MoNuSeg, CPM-15, GBM40, LGG; PAS = HuBMAP and
   AIDPATH; other = blood smears (PBC May-Grünwald-Giemsa, BCCD). Coefficients in
   :data:`CALIBRATION`; refit with :func:`calibrate`. A call whose probability is below
   :data:`MIN_CONFIDENCE` is reported as ``other``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

STAINS = ("H&E", "PAS", "other")
# Below this probability the call is "other": neither stain is recognised with confidence
# (the pale H&E tile HE_001 reads PAS at 0.65 on a whole-slide read; "other" marks the
# PAS-only glomerulosclerosis model as outside its domain, as it should be).
MIN_CONFIDENCE = 0.7
# Tissue whose OD chromaticity is this close to neutral grey is unstained or greyscale: other.
MIN_CHROMA = 0.06
# Fewer tissue pixels than this: no call (too little tissue to tell).
MIN_TISSUE_PIXELS = 500
# Longest side the colour statistics are taken at: the calibration images were reduced to it.
FEATURE_SIDE = 800
_MAX_PIXELS = 20_000

# Fitted by :func:`calibrate` on the shared data (per_set=120, seed=0). Accuracy on whole
# images (calls below MIN_CONFIDENCE count as "other"), with the fit on all sets and with the
# set left out of the fit (a source never seen: PAS vs H&E from colour alone does not carry
# over from HuBMAP to AIDPATH, nor from other H&E to the purple glioma set GBM40):
#   tiles-aapi-he: H&E, n=3, fitted 0.667, set left out 0.667
#   compartments-aapi-he: H&E, n=120, fitted 0.975, set left out 0.967
#   glomeruli-hubmap-pas: PAS, n=120, fitted 1.000, set left out 1.000
#   glomerulosclerosis-aidpath: PAS, n=120, fitted 0.917, set left out 0.267
#   monuseg: H&E, n=30, fitted 1.000, set left out 0.933
#   cpm15: H&E, n=15, fitted 0.933, set left out 0.800
#   gbm40: H&E, n=40, fitted 0.975, set left out 0.200
#   lgg-tcga: H&E, n=36, fitted 1.000, set left out 1.000
#   pbc: other, n=120, fitted 1.000, set left out 0.908
#   bccd: other, n=120, fitted 1.000, set left out 0.992
CALIBRATION: dict[str, list] = {
    "classes": ["H&E", "PAS", "other"],
    "mean": [
        0.296249,
        0.212616,
        0.492586,
        0.21971,
        0.316266,
        0.245101,
        0.280386,
        0.318747,
        0.205431,
        0.727641,
        0.693631,
    ],
    "std": [
        0.074129,
        0.048989,
        0.076901,
        0.055345,
        0.042133,
        0.05139,
        0.060716,
        0.069145,
        0.049311,
        0.257559,
        0.333072,
    ],
    "coef": [
        [
            -0.02735,
            0.54027,
            0.17174,
            -1.86565,
            -2.13374,
            0.50317,
            -0.94968,
            -0.07814,
            -1.08298,
            2.68748,
            -3.09253,
        ],
        [
            -1.3711,
            -0.93242,
            1.45422,
            4.49477,
            2.49323,
            -0.88409,
            0.24102,
            -2.68586,
            0.50708,
            -1.39414,
            3.63632,
        ],
        [
            1.39845,
            0.39215,
            -1.62596,
            -2.62912,
            -0.35949,
            0.38091,
            0.70867,
            2.764,
            0.5759,
            -1.29334,
            -0.54378,
        ],
    ],
    "intercept": [3.10904, -1.64851, -1.46053],
}


@dataclass(frozen=True)
class StainCall:
    """The recognised stain, the classifier's probabilities and the tissue pixels used.

    ``candidates``: the most probable stains that together reach p = 0.9 (one when the call
    is confident; "H&E" and "PAS" when it is torn between them): a model trained on all of
    them runs inside its domain even when ``stain`` is ``other``.
    """

    stain: str
    probabilities: dict[str, float]
    tissue_pixels: int
    candidates: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "stain": self.stain,
            "probabilities": {k: round(v, 3) for k, v in self.probabilities.items()},
            "candidates": list(self.candidates),
            "tissue_pixels": self.tissue_pixels,
            "method": "colour of tissue pixels (optical-density chromaticity), "
            "logistic regression calibrated on the shared H&E, PAS and blood-smear sets",
        }


def reduce_image(image: np.ndarray, side: int = FEATURE_SIDE) -> np.ndarray:
    """``image`` shrunk by an integer factor (box average) so its longer side is <= ``side``."""
    k = int(np.ceil(max(image.shape[:2]) / side))
    if k <= 1:
        return image
    h, w = (image.shape[0] // k) * k, (image.shape[1] // k) * k
    a = image[:h, :w, :3].astype(np.float32)
    return a.reshape(h // k, k, w // k, k, 3).mean(axis=(1, 3))


def stain_features(image: np.ndarray) -> tuple[np.ndarray | None, int]:
    """The 11 colour features of an RGB image's tissue pixels, and how many pixels those are.

    Returns ``(None, n)`` when fewer than :data:`MIN_TISSUE_PIXELS` tissue pixels are found.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.full((40, 40, 3), (200, 110, 170), np.uint8)  # magenta-pink tissue
    >>> f, n = stain_features(img)
    >>> f.shape, n
    ((11,), 1600)
    """
    a = np.asarray(image, np.float32)[..., :3]
    od = -np.log10(np.clip(a, 1, 255) / 255)
    tot = od.sum(-1)
    tissue = (tot > 0.3) & (a.max(-1) > 30)
    n = int(tissue.sum())
    if n < MIN_TISSUE_PIXELS:
        return None, n
    od, tot = od[tissue], tot[tissue]
    step = max(1, n // _MAX_PIXELS)  # a fixed stride: the same image gives the same features
    od, tot = od[::step], tot[::step]
    c = od / tot[:, None]  # OD chromaticity (red, green, blue shares)
    least_h = c[:, 0] <= np.quantile(c[:, 0], 0.3)
    most_h = c[:, 0] >= np.quantile(c[:, 0], 0.9)
    q = np.quantile
    feats = [
        q(c[least_h, 2], 0.5),
        q(c[least_h, 0], 0.5),
        q(c[least_h, 1], 0.5),
        q(c[most_h, 2], 0.5),
        q(c[most_h, 0], 0.5),
        q(c[:, 0], 0.5),
        q(c[:, 2], 0.5),
        q(c[:, 2], 0.9),
        q(c[:, 0], 0.1),
        q(tot, 0.5),
        q(tot[least_h], 0.5),
    ]
    return np.asarray(feats, np.float64), n


def _colourless(image: np.ndarray) -> bool:
    """Whether the tissue pixels are grey: their OD chromaticity (median) lies within
    :data:`MIN_CHROMA` of neutral, where no stain was calibrated (the features would
    extrapolate)."""
    a = np.asarray(image, np.float32)[..., :3]
    od = -np.log10(np.clip(a, 1, 255) / 255)
    tot = od.sum(-1)
    tissue = (tot > 0.3) & (a.max(-1) > 30)
    c = np.median(od[tissue] / tot[tissue][:, None], axis=0)
    return bool(np.abs(c - 1 / 3).max() < MIN_CHROMA)


def classify_stain(image: np.ndarray, calibration: dict | None = None) -> StainCall:
    """Recognise the stain of an RGB image (any size; reduced to :data:`FEATURE_SIDE`).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> grey = np.full((64, 64, 3), 120, np.uint8) + rng.integers(0, 3, (64, 64, 3), np.uint8)
    >>> classify_stain(grey).stain  # no stain colour at all
    'other'
    """
    cal = calibration or CALIBRATION
    small = reduce_image(np.asarray(image))
    feats, n = stain_features(small)
    if feats is None or _colourless(small):
        return StainCall("other", dict.fromkeys(cal["classes"], 0.0), n, ("other",))
    z = (feats - np.asarray(cal["mean"])) / np.asarray(cal["std"])
    logits = np.asarray(cal["coef"]) @ z + np.asarray(cal["intercept"])
    p = np.exp(logits - logits.max())
    p /= p.sum()
    probs = {c: float(v) for c, v in zip(cal["classes"], p, strict=True)}
    ranked = sorted(probs, key=probs.__getitem__, reverse=True)
    best = ranked[0]
    k = int(np.searchsorted(np.cumsum([probs[c] for c in ranked]), 0.9)) + 1
    return StainCall(
        best if probs[best] >= MIN_CONFIDENCE else "other", probs, n, tuple(ranked[:k])
    )


def slide_stain(slide, max_side: int = 1600) -> StainCall:
    """:func:`classify_stain` on a slide read whole at a scale where its longer side is at
    most ``max_side`` px (and no finer than 1 µm/px)."""
    from shindan.tiling import read_at_mpp, require_mpp

    s_mpp = require_mpp(slide)
    w0, h0 = slide.dimensions
    mpp = max(s_mpp, 1.0, max(w0, h0) * s_mpp / max_side)
    w, h = max(1, int(round(w0 * s_mpp / mpp))), max(1, int(round(h0 * s_mpp / mpp)))
    return classify_stain(read_at_mpp(slide, (0, 0), (w, h), mpp))


# The calibration sets: (folder glob under the shared data root, stain).
CALIBRATION_SETS: dict[str, tuple[Sequence[str], str]] = {
    "tiles-aapi-he": (["kidney/tiles-aapi-he/*/image.jpg"], "H&E"),
    "compartments-aapi-he": (
        [
            "kidney/compartments-aapi-he/train/*/*.jpg",
            "kidney/compartments-aapi-he/background/*.jpg",
        ],
        "H&E",
    ),
    "glomeruli-hubmap-pas": (["kidney/glomeruli-hubmap-pas/*/*.jpg"], "PAS"),
    "glomerulosclerosis-aidpath": (["kidney/glomerulosclerosis-aidpath/*GS/*.jpg"], "PAS"),
    "monuseg": (["nuclei/monuseg-train/images/*"], "H&E"),
    "cpm15": (["nuclei/cpm15/images/*"], "H&E"),
    "gbm40": (["nuclei/gbm40/images/*"], "H&E"),
    "lgg-tcga": (["nuclei/lgg-tcga/images/*"], "H&E"),
    "pbc": (["blood/pbc/*/*.jpg"], "other"),
    "bccd": (["blood/bccd/*/*.jpg"], "other"),
}


def calibration_samples(
    root: str | Path, per_set: int = 120, seed: int = 0
) -> Iterable[tuple[str, str, Path]]:
    """(set name, stain, file) for up to ``per_set`` files of each calibration set, chosen at
    random with ``seed``."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for name, (patterns, stain) in CALIBRATION_SETS.items():
        files = sorted(p for pat in patterns for p in root.glob(pat) if "_mask" not in p.name)
        if len(files) > per_set:
            files = [files[i] for i in sorted(rng.choice(len(files), per_set, replace=False))]
        for f in files:
            yield name, stain, f


def calibrate(root: str | Path, per_set: int = 120, seed: int = 0) -> dict[str, object]:
    """Fit the stain classifier on the shared data at ``root``; returns the calibration
    (for :data:`CALIBRATION`) and its accuracy per set, fitted on all sets and with each
    set left out of the fit (how it does on a source it has never seen).

    Run ``python -m shindan.kidney.stain ../shared/data`` to print both.
    """
    from PIL import Image
    from sklearn.linear_model import LogisticRegression

    names, stains, feats, whole = [], [], [], []
    for name, stain, f in calibration_samples(root, per_set, seed):
        image = np.asarray(Image.open(f).convert("RGB"))
        parts = [image]
        if min(image.shape[:2]) >= 1500:  # a large tile also teaches with its quadrants
            h, w = image.shape[0] // 2, image.shape[1] // 2
            parts += [image[:h, :w], image[:h, w:], image[h:, :w], image[h:, w:]]
        for k, part in enumerate(parts):
            x, _ = stain_features(reduce_image(part))
            if x is not None:
                names.append(name)
                stains.append(stain)
                feats.append(x)
                whole.append(k == 0)
    X, y, sets = np.asarray(feats), np.asarray(stains), np.asarray(names)

    def fit(rows: np.ndarray) -> dict[str, list]:
        mu, sd = X[rows].mean(0), X[rows].std(0) + 1e-9
        # every set weighs the same (a few large tiles count as much as 120 crops), then
        # every stain the same
        w = np.array([1.0 / np.sum(sets[rows] == s) for s in sets[rows]])
        for c in np.unique(y[rows]):
            w[y[rows] == c] /= w[y[rows] == c].sum()
        clf = LogisticRegression(C=1.0, max_iter=5000)
        clf.fit((X[rows] - mu) / sd, y[rows], sample_weight=w * len(w))
        return {
            "classes": [str(c) for c in clf.classes_],
            "mean": mu.round(6).tolist(),
            "std": sd.round(6).tolist(),
            "coef": clf.coef_.round(5).tolist(),
            "intercept": clf.intercept_.round(5).tolist(),
        }

    def accuracy(cal: dict, rows: np.ndarray) -> float:
        def call(x: np.ndarray) -> str:
            z = (x - np.asarray(cal["mean"])) / np.asarray(cal["std"])
            logits = np.asarray(cal["coef"]) @ z + np.asarray(cal["intercept"])
            p = np.exp(logits - logits.max())
            p /= p.sum()
            k = int(p.argmax())
            return cal["classes"][k] if p[k] >= MIN_CONFIDENCE else "other"

        return float(np.mean([call(X[i]) == y[i] for i in np.flatnonzero(rows)]))

    full = fit(np.ones(len(y), bool))
    report = {}
    for name in dict.fromkeys(names):
        rows = (sets == name) & np.asarray(whole)  # scored on whole images
        report[name] = {
            "stain": str(y[rows][0]),
            "n": int(rows.sum()),
            "accuracy_fitted": round(accuracy(full, rows), 3),
            "accuracy_set_left_out": round(accuracy(fit(sets != name), rows), 3),
        }
    return {"calibration": full, "accuracy": report}


if __name__ == "__main__":  # python -m shindan.kidney.stain DATA_ROOT
    import json
    import sys

    print(json.dumps(calibrate(sys.argv[1] if len(sys.argv) > 1 else "../shared/data"), indent=1))
