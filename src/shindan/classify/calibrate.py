"""Fit a two-class classifier's temperature and cut-off on its validation split; report them.

Why: a shipped model's 0.5 cut-off rarely travels to other labs, and its softmax is rarely
calibrated. The temperature (Guo et al. 2017) is fitted on the validation split's logits; the
cut-off on the positive class's calibrated probability by a stated rule on the same split
(never the test fold). :func:`fit_decision` writes the card's ``decision`` section,
:func:`decision_metrics` reports sensitivity, specificity and calibration at it, and
:func:`calibrate_model` does both for an existing model folder without retraining.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shindan.models.decision import Decision, apply_temperature, softmax
from shindan.stats.metrics import calibration

RULES = ("sensitivity", "youden")


def nll(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true classes ``y`` under ``softmax(logits / T)``."""
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), np.asarray(y)].mean())


def fit_temperature(
    logits: np.ndarray, y: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)
) -> float:
    """The temperature minimising the NLL of ``y`` (Guo et al. 2017), searched in ``bounds``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 500)
    >>> x = (1 - 2 * y) + rng.normal(0, 1, 500)  # log-odds of class 0 is 2x
    >>> z = np.stack([8 * x, np.zeros(500)], 1)  # over-confident by 4x
    >>> 3.0 < fit_temperature(z, y) < 5.0
    True
    """
    from scipy.optimize import minimize_scalar

    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    res = minimize_scalar(lambda t: nll(logits, y, math.exp(t)), bounds=(lo, hi), method="bounded")
    return float(math.exp(res.x))


def choose_threshold(
    score: np.ndarray, positive: np.ndarray, rule: str = "sensitivity", sensitivity: float = 0.95
) -> float:
    """A cut-off on the positive class's probability ``score`` chosen by ``rule``.

    ``sensitivity``: the highest cut-off that keeps at least ``sensitivity`` of the positives
    at or above it (missing a positive is the costly error); ``youden``: the cut-off
    maximising sensitivity + specificity - 1. The cut-off is placed half-way between the
    chosen score and the next lower score, so that it does not sit on a validation case.

    Examples
    --------
    >>> s = np.array([0.9, 0.8, 0.6, 0.4, 0.3, 0.1])
    >>> pos = np.array([1, 1, 1, 0, 1, 0], bool)
    >>> choose_threshold(s, pos, "sensitivity", 0.75)  # 3 of 4 positives: half-way 0.6/0.4
    0.5
    >>> choose_threshold(s, pos, "sensitivity", 1.0)  # all 4: half-way 0.3/0.1
    0.2
    """
    s = np.asarray(score, np.float64)
    pos = np.asarray(positive, bool)
    if rule not in RULES:
        raise ValueError(f"unknown threshold rule {rule!r} (choose from {', '.join(RULES)})")
    if not pos.any() or pos.all():
        raise ValueError("a threshold needs positive and negative cases")
    if rule == "sensitivity":
        if not 0.0 < sensitivity <= 1.0:
            raise ValueError(f"sensitivity must be in (0, 1], got {sensitivity}")
        ranked = np.sort(s[pos])[::-1]
        k = max(1, math.ceil(sensitivity * len(ranked) - 1e-9))
        cut = ranked[k - 1]
    else:
        cands = np.unique(s)
        j = [(s[pos] >= c).mean() + (s[~pos] < c).mean() for c in cands]
        cut = cands[int(np.argmax(j))]
    below = s[s < cut]
    return float((cut + below.max()) / 2) if below.size else float(cut / 2)


def binary_rates(y_positive: np.ndarray, called_positive: np.ndarray) -> dict[str, float | None]:
    """Sensitivity and specificity of a positive class (``None`` when undefined).

    Examples
    --------
    >>> binary_rates(np.array([1, 1, 0, 0], bool), np.array([1, 0, 0, 0], bool))
    {'sensitivity': 0.5, 'specificity': 1.0}
    """
    y = np.asarray(y_positive, bool)
    c = np.asarray(called_positive, bool)
    return {
        "sensitivity": float(c[y].mean()) if y.any() else None,
        "specificity": float((~c[~y]).mean()) if (~y).any() else None,
    }


def rule_text(positive: str, sensitivity: float) -> str:
    """The cut-off rule as the card states it (``sensitivity`` 0: Youden)."""
    if sensitivity:
        return (
            f"the highest cut-off on the calibrated p({positive}) that keeps the sensitivity for "
            f"{positive} >= {sensitivity:g} on the validation split (half-way to the next lower "
            "validation score)"
        )
    return (
        f"Youden's cut-off on the calibrated p({positive}) on the validation split "
        "(max sensitivity + specificity - 1; half-way to the next lower validation score)"
    )


def fit_decision(
    probs: np.ndarray,
    y: np.ndarray,
    classes: Sequence[str],
    positive: str | None = None,
    sensitivity: float = 0.95,
    fitted_on: str = "validation split",
) -> dict[str, Any]:
    """The card's ``decision`` section fitted on validation probabilities (plain softmax).

    Parameters
    ----------
    probs : (N, K) float
        Uncalibrated softmax probabilities of the validation images (``log probs`` serve as
        logits: the softmax ignores a per-row constant).
    y : (N,) int
        True class indices.
    classes : list of str
    positive : str, optional
        Two classes: the class whose cut-off is chosen (default: the first class).
    sensitivity : float
        Target validation sensitivity for ``positive`` (0: Youden's cut-off).
    fitted_on : str
        What the validation images were, for the card.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 400)
    >>> z = np.stack([(1 - 2 * y) * 3 + rng.normal(0, 3, 400), np.zeros(400)], 1)
    >>> d = fit_decision(softmax(z), y, ["GS", "nonGS"], "GS", 0.9)
    >>> sorted(d)[:4], d["positive"]
    (['fitted_on', 'positive', 'rule', 'target_sensitivity'], 'GS')
    """
    y = np.asarray(y, np.int64)
    logits = np.log(np.maximum(np.asarray(probs, np.float64), 1e-12))
    t = fit_temperature(logits, y)
    out: dict[str, Any] = {"temperature": round(t, 4), "fitted_on": fitted_on}
    if len(classes) == 2:
        positive = positive or classes[0]
        k = list(classes).index(positive)
        p = softmax(logits / out["temperature"])[:, k]
        rule = "sensitivity" if sensitivity else "youden"
        thr = choose_threshold(p, y == k, rule, sensitivity)
        out.update(
            positive=positive,
            threshold=round(min(max(thr, 1e-4), 1 - 1e-4), 4),
            rule=rule_text(positive, sensitivity),
        )
        if sensitivity:
            out["target_sensitivity"] = sensitivity
    out["validation"] = decision_metrics(y, apply_temperature(probs, t), out, classes)
    out["validation"]["nll"] = round(nll(logits, y, out["temperature"]), 4)
    out["validation"]["nll_uncalibrated"] = round(nll(logits, y), 4)
    return out


def decision_metrics(
    y: np.ndarray, probs: np.ndarray, decision: dict[str, Any], classes: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, calibration and (two classes) the positive class's sensitivity and
    specificity at the card's cut-off and at arg-max, from calibrated probabilities.

    Examples
    --------
    >>> p = np.array([[0.7, 0.3], [0.4, 0.6], [0.2, 0.8]])
    >>> m = decision_metrics(np.array([0, 0, 1]), p, {"temperature": 1.0, "positive": "a",
    ...     "threshold": 0.35}, ["a", "b"])
    >>> m["accuracy"], m["accuracy_argmax"], m["sensitivity"]
    (1.0, 0.6667, 1.0)
    """
    y = np.asarray(y, np.int64)
    p = np.asarray(probs, np.float64)
    card = {"classes": list(classes), "decision": decision}
    dec = Decision.from_card(card)
    raw = apply_temperature(p, 1.0 / dec.temperature)
    pred, arg = dec.labels(p), p.argmax(1)
    out: dict[str, Any] = {
        "n": int(len(y)),
        "accuracy": round(float((pred == y).mean()), 4),
        "accuracy_argmax": round(float((arg == y).mean()), 4),
        "ece": round(calibration(y, p)["ece"], 4),
        "ece_uncalibrated": round(calibration(y, raw)["ece"], 4),
    }
    if dec.positive is not None:
        pos = y == dec.positive
        at = binary_rates(pos, pred == dec.positive)
        half = binary_rates(pos, arg == dec.positive)
        r = lambda v: None if v is None else round(v, 4)  # noqa: E731
        out.update(
            positive=classes[dec.positive],
            threshold=dec.threshold,
            sensitivity=r(at["sensitivity"]),
            specificity=r(at["specificity"]),
            sensitivity_argmax=r(half["sensitivity"]),
            specificity_argmax=r(half["specificity"]),
        )
    return out


def calibrate_model(
    model: str | Path,
    data: str | Path,
    *,
    sensitivity: float = 0.95,
    positive: str | None = None,
    backend: str = "auto",
    batch_size: int = 64,
    command: str = "",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Fit the decision of an existing two-class model folder on its own validation split and
    write it into the folder's ``card.json`` (weights untouched; no retraining).

    The validation and test splits are re-created from the split the card records (same data,
    same seed), so ``data`` must be the model's training data. The card gets ``decision``
    (temperature, positive class, cut-off, rule, validation metrics) and ``metrics.decision``:
    sensitivity, specificity, accuracy and calibration on the test fold and under each
    synthetic shift of it, at the cut-off and at arg-max.

    Returns
    -------
    dict
        The card's new ``decision`` section.
    """
    from shindan.classify.evaluate import is_training_data, labelled_table
    from shindan.classify.predict import predict_paths
    from shindan.classify.shifts import SHIFTS, get_shift
    from shindan.classify.splits import train_val_test
    from shindan.engine import load_predictor
    from shindan.errors import InputError
    from shindan.models import load_card
    from shindan.models.card import validate_card
    from shindan.util.atomic import atomic_path

    folder = Path(model)
    if not (folder / "card.json").is_file():
        raise InputError(
            f"{model}: not a model folder (no card.json); give the folder to calibrate"
        )
    card = load_card(folder)
    training = card.data.get("training", {})
    split = training.get("split") or {}
    if card.task != "classification" or len(card.classes) != 2:
        raise InputError(f"{card.name}: calibrate needs a two-class classifier")
    if not split.get("folds") or training.get("sites"):
        raise InputError(f"{card.name}: its card records no single-source split to re-create")
    if not 0.0 <= sensitivity <= 1.0:
        raise InputError(f"--sensitivity must be in [0, 1], got {sensitivity}")
    positive = positive or (card.data.get("decision") or {}).get("positive") or card.classes[0]
    if positive not in card.classes:
        raise InputError(f"--positive {positive!r} is not a class of {card.name}")
    table = labelled_table(data, card, split.get("group_pattern"))
    if not is_training_data(table, card):
        raise InputError(
            f"{data}: not the data {card.name} was trained on (images per class differ from "
            "its card), so its validation split cannot be re-created"
        )
    _, va, te = train_val_test(
        table, split["folds"], split["test_fold"], split["val_fraction"], training.get("seed", 0)
    )
    predictor = load_predictor(card, backend=backend)
    predictor.decision = Decision()  # plain softmax: the fit starts from the network's logits

    def probs_of(idx: np.ndarray, shift: str | None = None) -> np.ndarray:
        paths = [table.paths[i] for i in idx]
        transform = get_shift(shift) if shift else None
        return predict_paths(predictor, paths, batch_size, transform, progress=progress)

    decision = fit_decision(
        probs_of(va),
        table.labels[va],
        card.classes,
        positive,
        sensitivity,
        fitted_on=f"validation split ({len(va)} images, {len(set(table.groups[va]))} groups) "
        "re-created from the card's training.split",
    )
    if command:
        decision["command"] = command
    say = log or (lambda msg: None)
    say(f"temperature {decision['temperature']}, cut-off p({positive}) >= {decision['threshold']}")
    results: dict[str, Any] = {}
    if len(te):
        names = list((card.data.get("metrics") or {}).get("robustness") or SHIFTS)
        for name in [None, *names]:
            probs = apply_temperature(probs_of(te, name), decision["temperature"])
            m = decision_metrics(table.labels[te], probs, decision, card.classes)
            m["auc"] = _auc(table.labels[te] == card.classes.index(positive), probs, positive, card)
            results[name or "test"] = m
            say(
                f"{name or 'test'}: accuracy {m['accuracy_argmax']} -> {m['accuracy']}, "
                f"sensitivity {m['sensitivity_argmax']} -> {m['sensitivity']}, specificity "
                f"{m['specificity_argmax']} -> {m['specificity']}"
            )
    data_out = json.loads(json.dumps(card.data))
    data_out["decision"] = decision
    if results:
        metrics = data_out.setdefault("metrics", {})
        metrics["decision"] = {
            "test": results.pop("test"),
            "robustness": results,
            "note": "the test fold and its synthetic shifts, at the card's cut-off (accuracy, "
            "sensitivity, specificity) and at arg-max (*_argmax); ece_uncalibrated is the "
            "plain softmax",
        }
    validate_card(data_out, str(folder / "card.json"))
    with atomic_path(folder / "card.json") as tmp:
        tmp.write_text(json.dumps(data_out, indent=2) + "\n")
    return decision


def _auc(y: np.ndarray, probs: np.ndarray, positive: str, card: Any) -> float | None:
    from sklearn.metrics import roc_auc_score

    if y.all() or not y.any():
        return None
    return round(float(roc_auc_score(y, probs[:, card.classes.index(positive)])), 4)
