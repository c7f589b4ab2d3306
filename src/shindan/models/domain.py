"""A card's ``domain`` (stains, scale, tissue) and ``training.scales``, as train commands
write them from their options or their data (see card.schema.json)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def card_domain(
    stains: Sequence[str], mpp: float | Sequence[float] | None, tissue: str, note: str = ""
) -> dict[str, Any]:
    """``{"domain": {...}}`` for a card, or ``{}`` when no stain is given (a card without a
    domain is reported as unchecked by analyses).

    Examples
    --------
    >>> card_domain(["PAS"], None, "kidney glomerulus crops")
    {'domain': {'stains': ['PAS'], 'mpp': None, 'tissue': 'kidney glomerulus crops'}}
    >>> card_domain(["H&E"], [0.5, 0.25, 0.2527], "tissue")["domain"]["mpp"]
    [0.25, 0.5]
    >>> card_domain([], 0.5, "")
    {}
    """
    if not stains:
        return {}
    domain: dict[str, Any] = {
        "stains": [s.strip() for s in stains if s.strip()],
        # several training scales: [finest, coarsest], as the schema has it
        "mpp": [min(mpp), max(mpp)] if isinstance(mpp, list | tuple) else mpp,
        "tissue": tissue or "not stated",
    }
    if note:
        domain["mpp_note"] = note
    return {"domain": domain}


def scale_entry(data: str, mpp: float | None, source: str) -> dict[str, Any]:
    """One ``training.scales`` item: a training set, its µm/px (None: varies or unknown) and
    where that value comes from."""
    return {"data": data, "mpp": mpp, "source": source}
