"""Labelled image collections: a folder-per-class tree or a CSV of ``image,label[,group]``.

An :class:`ImageTable` is just the list of files, their labels and groups (patient/slide); the
torch :class:`ImageDataset` decodes and transforms them on demand.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from shindan.errors import InputError

if TYPE_CHECKING:  # torch is the train extra; listing and reading images need none of it
    import torch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")


def is_image(path: Path) -> bool:
    """Whether ``path`` has a plain-image file suffix."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def read_rgb(path: str | Path) -> np.ndarray:
    """Read a plain image as (rows, cols, 3) uint8 RGB; raise :class:`InputError` if unreadable."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    try:
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{p}: not a readable image ({exc.__class__.__name__})") from None


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask image as a boolean (rows, cols) array: any non-zero pixel is inside."""
    p = Path(path)
    try:
        with Image.open(p) as im:
            a = np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{p}: not a readable mask ({exc.__class__.__name__})") from None
    return a.any(axis=2) if a.ndim == 3 else a != 0


def list_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders (recursively, sorted, hidden files skipped) into image files."""
    from shindan.io.inputs import expand_inputs

    return expand_inputs(inputs, IMAGE_SUFFIXES)


@dataclass(frozen=True)
class ImageTable:
    """Image paths with integer labels into ``classes`` and a group id per image."""

    paths: tuple[Path, ...]
    labels: np.ndarray
    groups: np.ndarray
    classes: tuple[str, ...]
    root: Path | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageTable:
        """The rows ``indices`` (same classes)."""
        idx = np.asarray(indices, dtype=np.int64)
        return ImageTable(
            tuple(self.paths[i] for i in idx),
            self.labels[idx].copy(),
            self.groups[idx].copy(),
            self.classes,
            self.root,
        )

    def counts(self) -> dict[str, int]:
        """Images per class."""
        n = np.bincount(self.labels, minlength=len(self.classes))
        return {c: int(k) for c, k in zip(self.classes, n, strict=True)}

    def relative(self, path: Path) -> str:
        """A path as written in outputs: relative to the table's root when possible."""
        if self.root is not None:
            try:
                return path.relative_to(self.root).as_posix()
            except ValueError:
                pass
        return str(path)


def _groups_from_pattern(paths: Sequence[Path], pattern: str | None) -> np.ndarray:
    """Group ids from the file stem: the first match of ``pattern`` (or the whole stem)."""
    if pattern is None:
        return np.asarray([p.as_posix() for p in paths], dtype=object)  # one group per image
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise InputError(f"bad --group-pattern {pattern!r}: {exc}") from None
    out = []
    for p in paths:
        m = rx.search(p.stem)
        out.append(m.group(0) if m else p.stem)
    return np.asarray(out, dtype=object)


def scan_folder(
    root: str | Path, classes: Sequence[str] | None = None, group_pattern: str | None = None
) -> ImageTable:
    """A folder-per-class tree: ``root/<class>/*.jpg``. ``classes`` picks and orders folders.

    Without ``classes`` every sub-folder holding images is a class (sorted by name).
    ``group_pattern`` is a regular expression whose first match in the file stem names the group
    (patient, slide), e.g. ``^[^-]+`` for the part before the first '-'.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    if classes is None:
        classes = sorted(
            d.name for d in root.iterdir() if d.is_dir() and any(is_image(f) for f in d.iterdir())
        )
    classes = list(classes)
    if len(classes) < 2:
        raise InputError(f"{root}: need at least two class folders, found {classes}")
    paths: list[Path] = []
    labels: list[int] = []
    for k, name in enumerate(classes):
        d = root / name
        if not d.is_dir():
            raise InputError(f"{d}: class folder missing")
        files = sorted(f for f in d.rglob("*") if f.is_file() and is_image(f))
        if not files:
            raise InputError(f"{d}: class folder holds no images")
        paths += files
        labels += [k] * len(files)
    return ImageTable(
        tuple(paths),
        np.asarray(labels, np.int64),
        _groups_from_pattern(paths, group_pattern),
        tuple(classes),
        root,
    )


def read_table_csv(
    path: str | Path, classes: Sequence[str] | None = None, group_pattern: str | None = None
) -> ImageTable:
    """A CSV with columns ``image,label[,group]``; image paths relative to the CSV's folder."""
    path = Path(path)
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: unreadable CSV ({exc})") from None
    if not rows or not {"image", "label"} <= set(rows[0]):
        raise InputError(f"{path}: CSV needs a header with columns image,label[,group]")
    names = sorted({r["label"] for r in rows}) if classes is None else list(classes)
    index = {c: i for i, c in enumerate(names)}
    paths, labels, groups = [], [], []
    for r in rows:
        if r["label"] not in index:
            if classes is None:
                raise InputError(f"{path}: unknown label {r['label']!r}")
            continue  # rows of classes not asked for
        p = Path(r["image"])
        p = p if p.is_absolute() else path.parent / p
        if not p.is_file():
            raise InputError(f"{p}: no such file (listed in {path.name})")
        paths.append(p)
        labels.append(index[r["label"]])
        groups.append(r.get("group") or None)
    if len(set(labels)) < 2:
        raise InputError(f"{path}: need at least two classes with images")
    g = _groups_from_pattern(paths, group_pattern)
    if "group" in rows[0]:
        g = np.asarray([gr if gr else gp for gr, gp in zip(groups, g, strict=True)], dtype=object)
    return ImageTable(tuple(paths), np.asarray(labels, np.int64), g, tuple(names), path.parent)


def load_table(
    source: str | Path, classes: Sequence[str] | None = None, group_pattern: str | None = None
) -> ImageTable:
    """A folder-per-class tree or a CSV file (by what ``source`` is)."""
    p = Path(source)
    if p.is_dir():
        return scan_folder(p, classes, group_pattern)
    if p.is_file():
        if p.suffix.lower() != ".csv":
            raise InputError(f"{p}: expected a folder of class folders or a .csv file")
        return read_table_csv(p, classes, group_pattern)
    raise InputError(f"{p}: no such file or folder")


def normalise(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (H, W, C) → float32 tensor (C, H, W) scaled to [0, 1], minus mean, over std."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    m = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return (x - m) / s


class ImageDataset:
    """Decodes ``table``'s images, applies ``transform`` (uint8 HWC → uint8 HWC), normalises.

    A map-style torch dataset (``len`` and indexing, all a ``DataLoader`` needs), defined
    without torch's base class so that this module imports without the train extra.

    ``transform`` receives ``(image, rng)`` where ``rng`` is a numpy Generator seeded from
    torch's stream, so augmentation is reproducible under :func:`torch.manual_seed`.
    """

    def __init__(
        self,
        table: ImageTable,
        transform: Callable[[np.ndarray, np.random.Generator], np.ndarray],
        mean: Sequence[float],
        std: Sequence[float],
    ):
        self.table = table
        self.transform = transform
        self.mean = tuple(mean)
        self.std = tuple(std)

    @property
    def labels(self) -> np.ndarray:
        return self.table.labels

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        import torch

        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,))))
        image = self.transform(read_rgb(self.table.paths[i]), rng)
        return normalise(image, self.mean, self.std), int(self.table.labels[i])
