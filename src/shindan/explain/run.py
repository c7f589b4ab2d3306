"""``shindan explain``: heatmap overlays, the attention index per image, and its summary."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from shindan.classify.data import IMAGE_SUFFIXES, list_images, read_mask, read_rgb
from shindan.classify.preprocess import model_box, prepare
from shindan.errors import InputError
from shindan.explain.cam import cam_in_mask, make_explainer, overlay, upsample
from shindan.explain.outputs import ATTENTION_COLUMNS, check_out


def find_masks(folder: str | Path) -> dict[str, Path]:
    """Mask files under ``folder`` (recursively) by file stem."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"--masks {root}: no such folder")
    out: dict[str, Path] = {}
    for f in sorted(root.rglob("*")):
        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
            out.setdefault(f.stem, f)
    return out


def output_names(paths: Sequence[Path]) -> list[str]:
    """File stems, made unique by prefixing parent folders where two images share a stem."""
    counts = Counter(p.stem for p in paths)
    return [p.stem if counts[p.stem] == 1 else f"{p.parent.name}__{p.stem}" for p in paths]


def true_label(path: Path, classes: Sequence[str]) -> str | None:
    """The class named by the image's parent folder (folder-per-class input), if any."""
    return path.parent.name if path.parent.name in classes else None


def summarise(rows: list[dict[str, Any]], classes: Sequence[str]) -> list[dict[str, Any]]:
    """Compare ``cam_in_mask`` between correct and wrong predictions, per true class and overall.

    Mann–Whitney U (two-sided) when both groups hold at least one value.
    """
    from scipy.stats import mannwhitneyu

    out = []
    for cls in [*classes, "all"]:
        sel = [
            r
            for r in rows
            if r["true"] is not None
            and r["cam_in_mask"] is not None
            and not np.isnan(r["cam_in_mask"])
            and (cls == "all" or r["true"] == cls)
        ]
        if not sel:
            continue
        right = np.asarray([r["cam_in_mask"] for r in sel if r["correct"]])
        wrong = np.asarray([r["cam_in_mask"] for r in sel if not r["correct"]])
        p = (
            float(mannwhitneyu(right, wrong, alternative="two-sided").pvalue)
            if len(right) and len(wrong)
            else None
        )

        def stats(a: np.ndarray) -> tuple[Any, Any, Any]:
            if not len(a):
                return None, None, None
            return (
                round(float(a.mean()), 4),
                round(float(np.median(a)), 4),
                round(float(a.std(ddof=1)), 4) if len(a) > 1 else None,
            )

        mr, medr, sdr = stats(right)
        mw, medw, sdw = stats(wrong)
        out.append(
            {
                "class": cls,
                "n_correct": len(right),
                "mean_correct": mr,
                "median_correct": medr,
                "sd_correct": sdr,
                "n_wrong": len(wrong),
                "mean_wrong": mw,
                "median_wrong": medw,
                "sd_wrong": sdw,
                "difference": None if mr is None or mw is None else round(mr - mw, 4),
                "mannwhitney_p": p,
            }
        )
    return out


def _write_csv(path: Path, header: list[str], rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(
                {
                    k: (
                        ""
                        if r.get(k) is None or (isinstance(r.get(k), float) and np.isnan(r[k]))
                        else r[k]
                    )
                    for k in header
                }
            )


def explain(
    model: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    masks: str | Path | None = None,
    method: str = "gradcam",
    layer: str | None = None,
    batch_size: int = 16,
    alpha: float = 0.45,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Write ``out/<image>_cam.png`` for every image and ``out/attention.csv``.

    Parameters
    ----------
    model : str or Path
        Classification model name or folder.
    inputs : list
        Image files and/or folders. Images inside a folder named like one of the model's
        classes count as that true class (folder-per-class input).
    masks : path, optional
        Folder of object masks matched by file stem; any non-zero pixel is inside. Gives the
        ``cam_in_mask`` column: the fraction of the heatmap's mass inside the mask.
    method : str
        gradcam, gradcam++, scorecam, eigencam or ablationcam.
    layer : str, optional
        Target layer (default: deepest stage with a map of at least 7x7).
    alpha : float
        Heatmap opacity in the overlay PNGs.

    Returns
    -------
    list of dict
        One row per image: ``image``, ``label``, ``cam_in_mask``, ``mask_area_fraction`` (the
        score a uniform heatmap would get), ``probability``, ``true``, ``correct``. When true
        labels and masks are both known, ``attention_summary.csv`` compares the index between
        correct and wrong predictions per class.
    """
    from shindan.util.atomic import staged_files
    from shindan.util.progress import progress_bar

    out = Path(out)
    check_out(out)  # before any work: out can be a folder, and its CSVs (if any) are shindan's
    paths = list_images(inputs)
    mask_files = find_masks(masks) if masks is not None else {}
    explainer = make_explainer(model, method, layer, batch_size)
    classes = explainer.classes
    spec = explainer.card.data["input"]
    names = output_names(paths)
    rows: list[dict[str, Any]] = []
    with staged_files(out) as tmp:
        with progress_bar(f"explaining ({method})", len(paths), enabled=progress) as advance:
            for i in range(0, len(paths), batch_size):
                chunk = paths[i : i + batch_size]
                images = [read_rgb(p) for p in chunk]
                cams, probs = explainer(np.stack([prepare(im, spec) for im in images]))
                for j, (p, image) in enumerate(zip(chunk, images, strict=True)):
                    name = names[i + j]
                    cam = np.zeros(image.shape[:2], np.float32)
                    r0, r1, c0, c1 = model_box(image, spec)  # the part the model saw
                    seen = upsample(cams[j], (r1 - r0, c1 - c0))
                    # a cell-centred view may reach past the image: paste what lies inside
                    a0, a1 = max(r0, 0), min(r1, image.shape[0])
                    b0, b1 = max(c0, 0), min(c1, image.shape[1])
                    cam[a0:a1, b0:b1] = seen[a0 - r0 : a1 - r0, b0 - c0 : b1 - c0]
                    Image.fromarray(overlay(image, cam, alpha)).save(tmp / f"{name}_cam.png")
                    k = int(explainer.decision.labels(probs[j : j + 1])[0])
                    index = area = None
                    if p.stem in mask_files:
                        m = read_mask(mask_files[p.stem])
                        if m.shape != image.shape[:2]:
                            m = upsample(m.astype(np.float32), image.shape[:2]) >= 0.5
                        index = cam_in_mask(cam, m)
                        area = float(m.mean())  # what a uniform heatmap would score
                    truth = true_label(p, classes)
                    rows.append(
                        {
                            "image": str(p),
                            "label": classes[k],
                            "cam_in_mask": None if index is None else round(index, 4),
                            "mask_area_fraction": None if area is None else round(area, 4),
                            "probability": round(float(probs[j, k]), 4),
                            "true": truth,
                            "correct": None if truth is None else truth == classes[k],
                        }
                    )
                advance(len(chunk))
        _write_csv(tmp / "attention.csv", list(ATTENTION_COLUMNS), rows)
        summary = summarise(rows, classes)
        if summary:
            _write_csv(tmp / "attention_summary.csv", list(summary[0]), summary)
    return rows
