"""Whether each model of a kidney analysis runs inside the domain its card states.

A card's ``domain`` lists the stains the model was trained on and the scale of its training
images. A result computed by a model outside its domain (the PAS-trained glomerulosclerosis
model on H&E, a model fed images much coarser than it learnt from, any model on a stain not
recognised) is marked in ``scores.json`` (``domain``, ``outside_domain``, ``warnings``) and
in the report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# Input this much coarser than the coarsest training images lacks detail the model used.
MAX_COARSER = 1.5

# Which models each result depends on (roles of :class:`~shindan.kidney.pipeline.KidneyModels`).
RESULT_MODELS: dict[str, tuple[str, ...]] = {
    "interstitial_fibrosis": ("compartments",),
    "inflammation": ("compartments", "nuclei"),
    "glomeruli.count": ("compartments",),
    "glomeruli.sclerosed": ("glomerulosclerosis",),
    "adequacy": ("compartments",),
}


def _coarsest(mpp: Any) -> float | None:
    if mpp is None:
        return None
    return float(max(mpp)) if isinstance(mpp, list | tuple) else float(mpp)


def domain_issues(
    card: Mapping[str, Any],
    stain: str,
    input_mpp: float | None,
    candidates: Sequence[str] = (),
) -> list[str]:
    """Why a model with card data ``card`` runs outside its domain on this input (empty list:
    inside). A card without ``domain`` gives one issue saying so. ``candidates`` (see
    :class:`~shindan.kidney.stain.StainCall`): when ``stain`` is ``other`` but the input is
    one of these stains, undecided, a model trained on all of them is inside.

    Examples
    --------
    >>> card = {"name": "gs", "domain": {"stains": ["PAS"], "mpp": None, "tissue": "kidney"}}
    >>> domain_issues(card, "H&E", 0.25)
    ['gs was trained on PAS only; this input looks H&E']
    >>> domain_issues({"name": "n", "domain": {"stains": ["H&E"], "mpp": 0.25, "tissue": ""}},
    ...               "H&E", 0.5)
    ['n was trained on images of 0.25 µm/px or finer; this input has 0.5 µm/px']
    """
    name = card.get("name", "model")
    domain = card.get("domain")
    if not domain:
        return [f"{name}: its card states no domain (stains, scale): not checked"]
    issues = []
    stains = [s.lower() for s in domain.get("stains", [])]
    undecided = [c for c in candidates if c != "other"]
    if stain == "other" and len(undecided) == len(candidates) > 1:
        if not all(c.lower() in stains for c in undecided):
            issues.append(
                f"{name} was trained on {', '.join(domain['stains'])}; this input looks "
                f"{' or '.join(undecided)} (undecided)"
            )
    elif stain == "other":
        issues.append(
            f"{name} was trained on {', '.join(domain['stains'])}; the stain of this input "
            "is not recognised as any of them"
        )
    elif stain.lower() not in stains:
        issues.append(
            f"{name} was trained on {', '.join(domain['stains'])} only; this input looks {stain}"
        )
    coarsest = _coarsest(domain.get("mpp"))
    if coarsest is not None and input_mpp is not None and input_mpp > coarsest * MAX_COARSER:
        issues.append(
            f"{name} was trained on images of {coarsest:g} µm/px or finer; this input has "
            f"{input_mpp:g} µm/px"
        )
    return issues


def check_domains(
    cards: Mapping[str, Mapping[str, Any] | None],
    stain: str,
    input_mpp: float | None,
    candidates: Sequence[str] = (),
) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    """Domain check of every model that ran, and the results that fall outside a domain.

    Parameters
    ----------
    cards : role (``compartments``, ``nuclei``, ``glomerulosclerosis``) -> card data, or None
        for a model that did not run.
    stain : the recognised stain (:mod:`shindan.kidney.stain`)
    input_mpp : µm/px of the input
    candidates : the stains the input may be (see :func:`domain_issues`)

    Returns
    -------
    domains : role -> ``{"model", "stains", "mpp", "in_domain", "issues"}``
    outside : result name (see :data:`RESULT_MODELS`) -> the issues of the models it uses

    Examples
    --------
    >>> gs = {"name": "gs", "domain": {"stains": ["PAS"], "mpp": None, "tissue": "kidney"}}
    >>> comp = {"name": "c", "domain": {"stains": ["H&E", "PAS"], "mpp": 1.0, "tissue": ""}}
    >>> domains, outside = check_domains(
    ...     {"compartments": comp, "nuclei": None, "glomerulosclerosis": gs}, "H&E", 0.5)
    >>> domains["compartments"]["in_domain"], domains["glomerulosclerosis"]["in_domain"]
    (True, False)
    >>> list(outside)
    ['glomeruli.sclerosed']
    """
    domains: dict[str, dict[str, Any]] = {}
    for role, card in cards.items():
        if card is None:
            continue
        issues = domain_issues(card, stain, input_mpp, candidates)
        domain = card.get("domain") or {}
        domains[role] = {
            "model": card.get("name"),
            "stains": domain.get("stains"),
            "mpp": domain.get("mpp"),
            "in_domain": not issues if domain else None,
            "issues": issues,
        }
    outside = {}
    for result, roles in RESULT_MODELS.items():
        issues = [i for r in roles if r in domains for i in domains[r]["issues"]]
        if issues:
            outside[result] = issues
    return domains, outside
