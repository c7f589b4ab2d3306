"""What a case's headline must say besides its scores: the stain seen, results outside a
model's domain, specimen adequacy, and whether the tissue looks like kidney.

:func:`case_checks` gathers them for ``scores.json`` (``stain``, ``domain``,
``outside_domain``, ``adequacy``, ``plausibility``, ``warnings``); the CLI summary line and
the top of the report show ``warnings``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from shindan.kidney.adequacy import adequacy, count_arteries
from shindan.kidney.domain import check_domains
from shindan.kidney.plausibility import plausibility_warnings, tubule_diameter_um
from shindan.kidney.stain import slide_stain


def glomerulus_summary(
    items: Sequence[Mapping[str, Any]], classified: bool, outside: Sequence[str] = ()
) -> dict[str, Any]:
    """``scores.json`` ``glomeruli``: regions needing review are listed but not counted.

    ``count`` and ``sclerosed`` cover the glomeruli without a review mark; ``review`` is the
    number of regions with one. ``outside`` (the glomerulosclerosis model's domain issues)
    marks every sclerosis call with ``sclerosed_outside_domain``.

    Examples
    --------
    >>> s = glomerulus_summary([{"sclerosed": True, "review": None},
    ...     {"sclerosed": False, "review": None}, {"sclerosed": True, "review": "wide"}], True)
    >>> s["count"], s["sclerosed"], s["sclerosed_fraction"], s["review"]
    (2, 1, 0.5, 1)
    """
    counted = [g for g in items if not g.get("review")]
    sclerosed = sum(bool(g.get("sclerosed")) for g in counted) if classified else None
    marked = [
        {**g, "sclerosed_outside_domain": bool(outside) and g.get("sclerosed") is not None}
        for g in items
    ]
    return {
        "count": len(counted),
        "sclerosed": sclerosed,
        "sclerosed_fraction": (
            round(sclerosed / len(counted), 4) if sclerosed is not None and counted else None
        ),
        "review": len(items) - len(counted),
        "sclerosed_outside_domain": list(outside),
        "items": marked,
    }


def case_checks(
    slide: Any,
    labels: np.ndarray,
    mpp: float,
    glomeruli: Sequence[Mapping[str, Any]],
    cards: Mapping[str, Mapping[str, Any] | None],
    areas_um2: Mapping[str, float],
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """Stain, domains, glomerulus summary, adequacy and plausibility of one case, and its
    headline warnings (``scores.json`` keys of the same names).

    Parameters
    ----------
    slide : the input (its stain is recognised from a low-resolution read)
    labels : compartment label map at ``mpp`` µm/px
    glomeruli : the glomerulus table (dicts of :class:`~shindan.kidney.glomeruli.Glomerulus`)
    cards : role (``compartments``, ``nuclei``, ``glomerulosclerosis``) -> card data of the
        models that ran (None for those that did not)
    areas_um2 : compartment areas
    notes : warnings from the caller, put first (e.g. the demo's)
    """
    stain = slide_stain(slide)
    domains, outside = check_domains(cards, stain.stain, slide.mpp, stain.candidates)
    summary = glomerulus_summary(
        glomeruli,
        cards.get("glomerulosclerosis") is not None,
        outside.get("glomeruli.sclerosed", ()),
    )
    arteries = count_arteries(labels, mpp)
    tubule_d = tubule_diameter_um(labels, mpp)
    implausible = plausibility_warnings(areas_um2, glomeruli, tubule_d)
    verdict = adequacy(summary["count"], arteries)
    verdict["sclerosed_fraction"] = summary["sclerosed_fraction"]
    warnings = list(notes)
    for result, issues in outside.items():
        warnings += [f"{result} outside its model's domain: {i}" for i in issues]
    warnings += implausible
    return {
        "glomeruli": summary,
        "stain": stain.as_dict(),
        "domain": domains,
        "outside_domain": outside,
        "adequacy": verdict,
        "plausibility": {
            "kidney_like": not implausible,
            "tubule_diameter_um": None if tubule_d is None else round(tubule_d, 1),
            "warnings": implausible,
        },
        "warnings": warnings,
    }


def model_cards(models: Any) -> dict[str, dict[str, Any] | None]:
    """Role -> card data of the models of a :class:`~shindan.kidney.pipeline.KidneyModels`
    (None for a model not loaded)."""
    return {
        role: (p.card.data if p is not None else None)
        for role, p in (
            ("compartments", models.compartments),
            ("nuclei", models.nuclei),
            ("glomerulosclerosis", models.glomerulosclerosis),
        )
    }


def checks_columns(scores: Mapping[str, Any]) -> dict[str, object]:
    """The ``cohort.csv`` columns of the checks: regions for review, arteries, adequacy
    verdict, sclerosed fraction, stain, results outside a domain, warnings.

    Examples
    --------
    >>> checks_columns({"glomeruli": {"review": 1, "sclerosed_fraction": 0.25},
    ...     "adequacy": {"arteries": 2, "verdict": "minimal"}, "stain": {"stain": "H&E"},
    ...     "outside_domain": {"glomeruli.sclerosed": ["..."]}, "warnings": ["a", "b"]})
    ... # doctest: +NORMALIZE_WHITESPACE
    {'glomeruli_review': 1, 'glomeruli_sclerosed_fraction': 0.25, 'arteries': 2,
     'adequacy': 'minimal', 'stain': 'H&E', 'outside_domain': 'glomeruli.sclerosed',
     'warnings': 'a | b'}
    """
    return {
        "glomeruli_review": scores["glomeruli"].get("review"),
        "glomeruli_sclerosed_fraction": scores["glomeruli"].get("sclerosed_fraction"),
        "arteries": scores["adequacy"]["arteries"],
        "adequacy": scores["adequacy"]["verdict"],
        "stain": scores["stain"]["stain"],
        "outside_domain": " ".join(scores["outside_domain"]),
        "warnings": " | ".join(scores["warnings"]),
    }
