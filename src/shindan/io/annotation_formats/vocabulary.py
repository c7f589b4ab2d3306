"""Class vocabularies: one canonical name per class, the names formats use for it, its
label-mask value, display colour and DICOM code.

A vocabulary file is JSON or CSV. JSON::

    {"strict": false,
     "classes": [{"name": "glomerulus", "aliases": ["glomeruli", "glom"], "value": 2,
                  "colour": [0, 120, 255],
                  "code": {"value": "glomerulus", "scheme": "99SHINDAN", "meaning": "Glomerulus"},
                  "formats": {"asap": "glom"}}]}

CSV: a header row with ``name`` and any of ``aliases`` (``;``-separated), ``value``,
``colour`` (``r;g;b``), ``code_value``, ``code_scheme``, ``code_meaning`` and
``name_<format>`` (the class's name when writing that format).

Names match case-insensitively, aliases and per-format names included. A strict vocabulary
refuses names it does not list; otherwise they pass through unchanged.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shindan.errors import AnnotationError

DEFAULT_FILE = Path(__file__).with_name("kidney_vocabulary.json")
LOCAL_SCHEME = "99SHINDAN"  # DICOM: coding schemes starting with 99 are local


@dataclass(frozen=True)
class VocabularyClass:
    """One class of a vocabulary."""

    name: str
    aliases: tuple[str, ...] = ()
    value: int | None = None
    colour: tuple[int, int, int] | None = None
    code: tuple[str, str, str] | None = None  # (value, scheme designator, meaning)
    formats: Mapping[str, str] = field(default_factory=dict)


def _key(name: str) -> str:
    return " ".join(str(name).strip().lower().split())


class Vocabulary:
    """Class names across formats.

    Parameters
    ----------
    classes : sequence of VocabularyClass
    strict : bool
        Refuse class names the vocabulary does not list.

    Examples
    --------
    >>> v = default_vocabulary()
    >>> v.canonical("Glomeruli"), v.canonical("Tumour"), v.value_of("tubule")
    ('glomerulus', 'Tumour', 3)
    >>> v.output_name("ignore", "geojson")
    'Ignore*'
    """

    def __init__(self, classes: Sequence[VocabularyClass], *, strict: bool = False, source=""):
        self.classes = tuple(classes)
        self.strict = strict
        self.source = str(source) or "vocabulary"
        self._by_name: dict[str, VocabularyClass] = {}
        self._by_value: dict[int, VocabularyClass] = {}
        self._by_code: dict[tuple[str, str], VocabularyClass] = {}
        for c in self.classes:
            for n in (c.name, *c.aliases, *c.formats.values()):
                other = self._by_name.setdefault(_key(n), c)
                if other is not c:
                    raise AnnotationError(
                        f"{self.source}: name {n!r} is given to both {other.name!r} and {c.name!r}"
                    )
            if c.value is not None:
                other = self._by_value.setdefault(c.value, c)
                if other is not c:
                    raise AnnotationError(
                        f"{self.source}: value {c.value} is given to both {other.name!r} "
                        f"and {c.name!r}"
                    )
            if c.code is not None:
                self._by_code.setdefault((c.code[1], c.code[0]), c)

    def with_strict(self, strict: bool) -> Vocabulary:
        """The same vocabulary, strict or not."""
        return Vocabulary(self.classes, strict=strict, source=self.source)

    def lookup(self, name: str) -> VocabularyClass | None:
        """The class a name (or alias) stands for, or None."""
        return self._by_name.get(_key(name))

    def canonical(self, name: str) -> str:
        """The canonical name of ``name``; unlisted names unchanged (an error when strict).

        '' (an object without a class) stays ''.
        """
        if not name:
            return name
        c = self.lookup(name)
        if c is not None:
            return c.name
        if self.strict:
            raise AnnotationError(
                f"class {name!r} is not in {self.source} (strict); add it or drop --strict"
            )
        return name

    def output_name(self, name: str, fmt: str) -> str:
        """The name to write for class ``name`` in format ``fmt``."""
        c = self.lookup(name)
        return c.formats.get(fmt, c.name) if c is not None else name

    def value_of(self, name: str) -> int | None:
        """The label-mask value of a class, or None when the vocabulary gives none."""
        c = self.lookup(name)
        return c.value if c is not None else None

    def name_of_value(self, value: int) -> str:
        """The class name of a label-mask value (the value as text when unlisted)."""
        c = self._by_value.get(int(value))
        if c is not None:
            return c.name
        if self.strict:
            raise AnnotationError(f"mask value {value} is not in {self.source} (strict)")
        return str(int(value))

    def colour_of(self, name: str) -> tuple[int, int, int] | None:
        c = self.lookup(name)
        return c.colour if c is not None else None

    def code_of(self, name: str) -> tuple[str, str, str]:
        """(value, scheme, meaning) of a class; a local 99SHINDAN code for unlisted names."""
        c = self.lookup(name)
        if c is not None and c.code is not None:
            return c.code
        label = c.name if c is not None else (name or "object")
        return (label[:16], LOCAL_SCHEME, label[:64])  # DICOM code values are at most 16 chars

    def name_of_code(self, value: str, scheme: str, meaning: str, label: str = "") -> str:
        """The class name of a DICOM code; when the vocabulary does not list the code, the
        group or segment ``label`` for a local code (its value may be cut short), else the
        code's meaning."""
        c = self._by_code.get((scheme, value))
        if c is not None:
            return c.name
        name = (label or value) if scheme == LOCAL_SCHEME else meaning
        return self.canonical(name)

    def to_json(self) -> dict[str, Any]:
        """The vocabulary as the JSON a vocabulary file holds."""
        out = []
        for c in self.classes:
            d: dict[str, Any] = {"name": c.name, "aliases": list(c.aliases), "value": c.value}
            if c.colour is not None:
                d["colour"] = list(c.colour)
            if c.code is not None:
                d["code"] = dict(zip(("value", "scheme", "meaning"), c.code, strict=True))
            if c.formats:
                d["formats"] = dict(c.formats)
            out.append(d)
        return {"strict": self.strict, "classes": out}


def _int(value: Any, what: str, source: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise AnnotationError(f"{source}: {what} {value!r} is not a whole number") from None


def _class_from_dict(d: Mapping[str, Any], source: str) -> VocabularyClass:
    if not isinstance(d, Mapping) or not str(d.get("name") or "").strip():
        raise AnnotationError(f"{source}: every class needs a 'name'")
    name = str(d["name"]).strip()
    aliases = d.get("aliases") or []
    if isinstance(aliases, str):
        aliases = [a for a in aliases.split(";") if a.strip()]
    colour = d.get("colour", d.get("color"))
    if isinstance(colour, str):
        colour = [c for c in colour.split(";") if c.strip()]
    if colour is not None and colour != []:
        try:
            colour = tuple(int(c) for c in colour)
        except (TypeError, ValueError):
            colour = ()
        if len(colour) != 3:
            raise AnnotationError(f"{source}: colour of {name!r} is not three integers r, g, b")
    else:
        colour = None
    code = d.get("code")
    if isinstance(code, Mapping) and code.get("value") and code.get("scheme"):
        code = (str(code["value"]), str(code["scheme"]), str(code.get("meaning") or name))
    elif code:
        raise AnnotationError(f"{source}: code of {name!r} needs 'value' and 'scheme'")
    else:
        code = None
    formats = d.get("formats") or {}
    value = _int(d.get("value"), f"value of {name!r}", source)
    return VocabularyClass(
        name, tuple(str(a).strip() for a in aliases), value, colour, code, dict(formats)
    )


def load_vocabulary(path: str | Path, *, strict: bool | None = None) -> Vocabulary:
    """Read a vocabulary file (JSON or CSV, see the module docstring).

    ``strict`` overrides the file's own ``strict`` setting when given.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise AnnotationError(f"{p}: no such vocabulary file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{p}: cannot read the vocabulary ({exc})") from None
    if p.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        if not rows or "name" not in rows[0]:
            raise AnnotationError(f"{p}: a vocabulary CSV needs a header row with 'name'")
        dicts = []
        for r in rows:
            d: dict[str, Any] = {k: (v or "").strip() for k, v in r.items() if k}
            if d.get("code_value"):
                d["code"] = {
                    "value": d["code_value"],
                    "scheme": d.get("code_scheme") or LOCAL_SCHEME,
                    "meaning": d.get("code_meaning") or d["name"],
                }
            d["formats"] = {
                k[5:]: v for k, v in d.items() if k.startswith("name_") and v and len(k) > 5
            }
            dicts.append(d)
        file_strict = False
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AnnotationError(f"{p}: not valid JSON ({exc})") from None
        if isinstance(data, list):
            data = {"classes": data}
        if not isinstance(data, Mapping) or not isinstance(data.get("classes"), list):
            raise AnnotationError(f"{p}: a vocabulary needs a 'classes' list")
        dicts, file_strict = data["classes"], bool(data.get("strict", False))
    classes = [_class_from_dict(d, str(p)) for d in dicts]
    return Vocabulary(classes, strict=file_strict if strict is None else strict, source=p)


def default_vocabulary(*, strict: bool = False) -> Vocabulary:
    """shindan's built-in vocabulary (kidney compartments, nucleus, ignore)."""
    v = load_vocabulary(DEFAULT_FILE, strict=strict)
    v.source = "the built-in vocabulary"
    return v
