"""Contrast phases of a renal-mass CT: which series is which, from descriptions or a user map.

Renal-mass protocols scan the same region up to four times: before contrast (non-contrast),
about 30–40 s after injection (corticomedullary, "arterial"), about 90–120 s (nephrographic,
"portal venous") and several minutes later (excretory, "delayed"). Scanners name the series
freely, so the phase is guessed from ``SeriesDescription`` keywords (English and Japanese) or
given by the user in a map from series UID or description to phase.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from shindan.ct.dicom import SeriesHeader
from shindan.errors import InputError

__all__ = ["PHASES", "assign_phases", "guess_phase", "normalise_phase", "read_phase_map"]

PHASES: tuple[str, ...] = ("non-contrast", "corticomedullary", "nephrographic", "excretory")

# Keyword patterns per phase (case-insensitive). When several phases match, the longest match
# wins ("late arterial" is corticomedullary, "delayed nephrographic" nephrographic).
_PATTERNS: dict[str, tuple[str, ...]] = {
    "non-contrast": (
        r"\bnon[-_ ]?contrast",
        r"\bnon[-_ ]?con\b",
        r"\bnon[-_ ]?enhanced",
        r"\bun[-_ ]?enhanced",
        r"\bpre[-_ ]?contrast",
        r"\bpre\b",
        r"\bplain\b",
        r"\bnative\b",
        r"\bnc\b",
        r"\bncct\b",
        r"\bw/o\b",
        r"\bwithout\b",
        r"\bc-(?![\w])",
        r"単純",
    ),
    "corticomedullary": (
        r"\bcortico[-_ ]?medullary",
        r"\bcortico",
        r"\bcmp?\b",
        r"\barterial",
        r"\bart\b",
        r"\bearly\b",
        r"動脈相",
        r"皮髄相",
        r"早期相",
    ),
    "nephrographic": (
        r"\bnephrographic",
        r"\bnephro",
        r"\bneph\b",
        r"\bnp\b",
        r"\bportal",
        r"\bvenous",
        r"\bpv\b",
        r"\bparenchymal",
        r"門脈相",
        r"腎実質相",
        r"実質相",
    ),
    "excretory": (
        r"\bexcret",
        r"\bexc\b",
        r"\bex\b",
        r"\bdelay",
        r"\burogra",
        r"\bpyelo",
        r"\blate\b",
        r"\bequilibrium",
        r"排泄相",
        r"平衡相",
        r"遅延相",
    ),
}
_COMPILED = {ph: [re.compile(p, re.IGNORECASE) for p in pats] for ph, pats in _PATTERNS.items()}
_SKIP = {"", "-", "none", "ignore", "skip"}


def guess_phase(description: str) -> str | None:
    """The phase a series description names, or None when it names none or is ambiguous.

    Examples
    --------
    >>> guess_phase("ABD 1.0 B30f PORTAL VENOUS")
    'nephrographic'
    >>> guess_phase("Late arterial")
    'corticomedullary'
    """
    best: dict[str, int] = {}
    for phase, patterns in _COMPILED.items():
        for pat in patterns:
            for m in pat.finditer(description or ""):
                best[phase] = max(best.get(phase, 0), len(m.group(0)))
    if not best:
        return None
    top = max(best.values())
    winners = [ph for ph, n in best.items() if n == top]
    return winners[0] if len(winners) == 1 else None


def normalise_phase(name: str) -> str:
    """Canonical phase name (one of :data:`PHASES`) for a name or alias; InputError if none."""
    key = str(name).strip().lower().replace("_", "-")
    if key in PHASES:
        return key
    guessed = guess_phase(key)
    if guessed is None:
        raise InputError(f"unknown phase {name!r} (phases: {', '.join(PHASES)})")
    return guessed


def read_phase_map(path: str | Path) -> dict[str, str]:
    """A map from series UID or description to phase, from a CSV or JSON file.

    CSV: columns ``series`` (a SeriesInstanceUID or a SeriesDescription) and ``phase``.
    JSON: an object ``{"<uid or description>": "<phase>"}``. A phase of ``ignore`` (or empty)
    excludes that series. Phase names may be aliases (``arterial``, ``portal venous``, ...).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: phase map not found")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: unreadable phase map ({exc})") from None
    raw: dict[str, str] = {}
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{p}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise InputError(f"{p}: expected an object of series → phase strings")
        raw = {str(k): v for k, v in data.items()}
    else:
        rows = list(csv.DictReader(text.splitlines()))
        cols = {c.strip().lower(): c for c in (rows[0].keys() if rows else [])}
        key_col = next(
            (
                cols[c]
                for c in (
                    "series",
                    "uid",
                    "description",
                    "series_uid",
                    "seriesinstanceuid",
                    "seriesdescription",
                )
                if c in cols
            ),
            None,
        )
        if key_col is None or "phase" not in cols:
            raise InputError(f"{p}: phase map needs columns 'series' and 'phase'")
        raw = {str(r[key_col]).strip(): str(r[cols["phase"]] or "") for r in rows}
    out: dict[str, str] = {}
    for key, phase in raw.items():
        ph = phase.strip().lower()
        try:
            out[key.strip()] = "ignore" if ph in _SKIP else normalise_phase(ph)
        except InputError as exc:
            raise InputError(f"{p}: {exc}") from None
    return out


def _lookup(header: SeriesHeader, phase_map: Mapping[str, str]) -> str | None:
    if header.uid in phase_map:
        return phase_map[header.uid]
    desc = header.description.strip().lower()
    for key, phase in phase_map.items():
        if key.strip().lower() == desc and desc:
            return phase
    return None


def assign_phases(
    headers: Sequence[SeriesHeader],
    phase_map: Mapping[str, str] | None = None,
    *,
    phases: Sequence[str] = PHASES,
    required: bool = True,
    source: str | Path = "study",
) -> dict[str, SeriesHeader]:
    """Pick one series per phase.

    Parameters
    ----------
    headers : sequence of SeriesHeader
        The study's series (e.g. from :func:`shindan.ct.dicom.scan_dicom`).
    phase_map : mapping, optional
        Series UID or description → phase (see :func:`read_phase_map`); it overrides the
        keyword guess, and ``ignore`` drops a series.
    phases : sequence of str
        Phases wanted.
    required : bool
        Raise when a wanted phase has no series; otherwise leave it out of the result.
    source : str or Path
        Named in error messages.

    Returns
    -------
    dict
        phase → SeriesHeader. When several series share a phase (thin and thick
        reconstructions, coronal reformats), the mapped one wins over a guessed one, then
        axial over other planes, then the most slices, then the lowest series number.
    """
    wanted = [normalise_phase(p) for p in phases]
    phase_map = dict(phase_map or {})
    candidates: dict[str, list[tuple[tuple, SeriesHeader]]] = {}
    seen: list[str] = []
    for h in headers:
        mapped = _lookup(h, phase_map)
        if mapped == "ignore" or (mapped is None and h.is_localizer):
            continue
        phase = mapped or guess_phase(h.description)
        seen.append(f"{h.label()} → {phase or '?'}")
        if phase is None:
            continue
        rank = (
            mapped is None,
            not h.is_axial,
            -h.n_slices,
            h.number if h.number is not None else 1 << 30,
        )
        candidates.setdefault(phase, []).append((rank, h))
    chosen = {ph: min(c, key=lambda t: t[0])[1] for ph, c in candidates.items() if ph in wanted}
    missing = [ph for ph in wanted if ph not in chosen]
    if missing and required:
        found = "; ".join(seen) or "no image series"
        raise InputError(
            f"{source}: no series for phase(s) {', '.join(missing)} "
            f"(found {found}); give a phase map (series UID or description → "
            "phase)"
        )
    return {ph: chosen[ph] for ph in wanted if ph in chosen}
