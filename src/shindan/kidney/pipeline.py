"""``kidney analyze``: slide or image → compartments, interstitial nuclei, scores, report.

Steps for one case: tissue mask → compartment segmentation at the model's µm/px (streamed to
disk) → label map on the output grid (the input's own grid unless that is too large) →
nuclei, block by block, only where there is interstitium → glomerulus table → outputs.
Each case is written to a temporary folder and renamed when complete.
"""

from __future__ import annotations

import csv
import inspect
import json
import math
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from shindan import __version__
from shindan.engine import Predictor, load_predictor
from shindan.engine.tiled import segment_slide
from shindan.errors import ModelError
from shindan.io.inputs import SLIDE_SUFFIXES, expand_inputs, unique_names
from shindan.io.slide import Slide, open_slide
from shindan.kidney.cleanup import clear_black, min_region_areas, remove_small_regions
from shindan.kidney.glomeruli import Glomerulus, classify_glomeruli, find_glomeruli
from shindan.kidney.labels import CLASSES
from shindan.kidney.scores import INTERSTITIUM, ScoreAccumulator
from shindan.tiling import detect_tissue, read_at_mpp, require_colour, require_mpp
from shindan.util.atomic import (
    atomic_dir,
    atomic_path,
    check_can_be_folder,
    check_output_file,
    check_replaceable,
)
from shindan.util.progress import progress_bar
from shindan.util.timing import StageTimer

# f(rgb, mpp[, where]) -> instance labels; ``where`` (bool, rgb's grid) marks the pixels whose
# nuclei count (interstitium): a function taking it may skip work far from them.
NucleiFn = Callable[..., np.ndarray]
# A case folder's files: a rerun replaces them, and refuses a folder that holds anything else.
CASE_FILES = (
    "scores.json",
    "compartments.png",
    "nuclei.geojson",
    "overlay.png",
    "report.html",
    "truth.json",  # shindan demo
)

# compartments.png is on the input's own grid up to this many pixels, coarser beyond.
MAX_OUTPUT_PIXELS = 64_000_000
NUCLEUS_COLOURS = {"interstitial": (230, 40, 40), "other": (60, 60, 200)}


@dataclass
class KidneyModels:
    """The models a kidney analysis runs, loaded once for a whole cohort."""

    compartments: Predictor
    nuclei: Predictor | None
    glomerulosclerosis: Predictor | None

    @classmethod
    def load(
        cls,
        compartments: str = "kidney-compartments",
        nuclei: str | None = "nuclei",
        glomerulosclerosis: str | None = "glomerulosclerosis",
        backend: str = "auto",
        nuclei_views: bool = False,
    ) -> KidneyModels:
        """Load by shipped name or model folder. The shipped nuclei and glomerulosclerosis
        models are skipped when not installed; a model asked for by another name or folder
        must load.

        The nuclei model runs without its card's test-time views unless ``nuclei_views``:
        they cost 4x the time for no measured gain in the scores (docs/design.md)."""

        def optional(name: str | None, shipped: str) -> Predictor | None:
            if name is None:
                return None
            try:
                return load_predictor(name, backend)
            except ModelError:
                if name != shipped:
                    raise
                return None

        comp = load_predictor(compartments, backend)
        if list(comp.classes) != CLASSES:  # the label map's codes are the classes' order
            raise ModelError(
                f"{compartments}: expected the compartment classes {', '.join(CLASSES)}, "
                f"got {', '.join(comp.classes)}"
            )
        nuc = optional(nuclei, "nuclei")
        if nuc is not None and not nuclei_views:
            nuc.tta = ()
        return cls(comp, nuc, optional(glomerulosclerosis, "glomerulosclerosis"))

    def versions(self) -> dict[str, dict[str, object]]:
        out = {}
        for p in (self.compartments, self.nuclei, self.glomerulosclerosis):
            if p is not None:
                out[p.card.name] = {
                    "version": p.card.version,
                    "folder": str(p.card.directory),
                    "backend": p.backend,
                    "test_time_views": list(p.tta),
                    # any synthetic data at all: the demo's phantoms are in the compartments'
                    "synthetic_training_data": bool(
                        p.card.data["training"].get("synthetic")
                        or p.card.data["training"].get("includes_synthetic")
                    ),
                    "synthetic_training_data_only": bool(p.card.data["training"].get("synthetic")),
                    "training_data": p.card.data["training"]["data"],
                }
        return out


@dataclass
class CaseResult:
    """What one analysed case produced."""

    case: str
    scores: dict[str, object]
    glomeruli: list[Glomerulus] = field(default_factory=list)
    out_dir: Path | None = None


def output_grid(slide: Slide, max_pixels: int = MAX_OUTPUT_PIXELS) -> tuple[float, int, int]:
    """(mpp, width, height) of compartments.png: the input grid, or coarser when too large."""
    s_mpp = require_mpp(slide)
    w0, h0 = slide.dimensions
    f = max(1.0, math.sqrt(w0 * h0 / max_pixels))
    return s_mpp * f, max(1, int(round(w0 / f))), max(1, int(round(h0 / f)))


def resample_labels(labels, src_mpp: float, mpp: float, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour label map on a (width, height) grid at ``mpp`` from an array (or zarr)
    at ``src_mpp``, read in row strips so a large source never sits in memory whole."""
    sh, sw = labels.shape
    rows = np.minimum(((np.arange(height) + 0.5) * mpp / src_mpp).astype(np.int64), sh - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * mpp / src_mpp).astype(np.int64), sw - 1)
    out = np.empty((height, width), np.uint8)
    step = 1024
    for i in range(0, height, step):
        r = rows[i : i + step]
        block = np.asarray(labels[int(r[0]) : int(r[-1]) + 1])
        out[i : i + step] = block[r - r[0]][:, cols]
    return out


def _blocks(width: int, height: int, block: int) -> Iterator[tuple[int, int, int, int]]:
    for y in range(0, height, block):
        for x in range(0, width, block):
            yield x, y, min(block, width - x), min(block, height - y)


class _EdgeNuclei:
    """Nuclei kept near block edges (global top-left corner and mask), by block, so that a
    block's candidates are checked against its already processed neighbours only."""

    def __init__(self, block: int) -> None:
        self.block = block
        self.kept: dict[tuple[int, int], list[tuple[tuple[int, int], np.ndarray]]] = {}
        self._boxes: dict[tuple[int, int], np.ndarray] = {}  # finished blocks' (r0, c0, r1, c1)

    def start_block(self, x: int, y: int) -> None:
        # blocks run row by row: those two rows up can no longer meet a new block
        self.kept = {k: v for k, v in self.kept.items() if k[1] >= y - self.block}
        self._boxes = {k: v for k, v in self._boxes.items() if k in self.kept}
        self.here = (x, y)
        self.kept[self.here] = []

    def boxes(self, key: tuple[int, int]) -> np.ndarray:
        """(n, 4) boxes of a finished block's kept nuclei, built once."""
        if key not in self._boxes:
            self._boxes[key] = np.array(
                [(r, c, r + m.shape[0], c + m.shape[1]) for (r, c), m in self.kept.get(key, ())],
                np.int64,
            ).reshape(-1, 4)
        return self._boxes[key]

    def add(self, top_left: tuple[int, int], mask: np.ndarray) -> None:
        self.kept[self.here].append((top_left, mask))

    def overlaps(self, top_left: tuple[int, int], mask: np.ndarray, share: float = 0.3) -> bool:
        """Whether ``mask`` at ``top_left`` covers ``share`` of itself or of a kept nucleus."""
        r0, c0 = top_left
        r1, c1 = r0 + mask.shape[0], c0 + mask.shape[1]
        x, y, b = *self.here, self.block
        for key in ((x - b, y), (x - b, y - b), (x, y - b), (x + b, y - b)):
            bx = self.boxes(key)
            near = (bx[:, 0] < r1) & (bx[:, 2] > r0) & (bx[:, 1] < c1) & (bx[:, 3] > c0)
            for j in np.flatnonzero(near):  # only the kept nuclei whose boxes meet this one
                (s0, t0), other = self.kept[key][j]
                a0, a1 = max(r0, s0), min(r1, s0 + other.shape[0])
                b0, b1 = max(c0, t0), min(c1, t0 + other.shape[1])
                if a0 >= a1 or b0 >= b1:
                    continue
                both = (
                    mask[a0 - r0 : a1 - r0, b0 - c0 : b1 - c0]
                    & other[a0 - s0 : a1 - s0, b0 - t0 : b1 - t0]
                ).sum()
                if both > share * min(mask.sum(), other.sum()):
                    return True
        return False


def nuclei_block(size: int, overlap: int, margin: int = 48, tiles: int = 4) -> int:
    """Block side (px) whose padded block (block + 2 ``margin``) is exactly ``tiles`` model
    tiles of ``size`` px overlapping by ``overlap``: no tile is spent on a sliver.

    Examples
    --------
    >>> nuclei_block(512, 64)  # 4 x 448 = 1792 = 1696 + 2 x 48
    1696
    """
    return max(tiles * (size - overlap) - 2 * margin, 2 * margin)


def nucleus_stats(
    labels: np.ndarray, inside: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ids, centroids (row, col), pixel counts and pixels within ``inside`` of every nucleus
    of an instance map (0 background), from one pass of counts each.

    Examples
    --------
    >>> lab = np.array([[1, 1, 0], [0, 0, 3]])
    >>> ids, cents, n, n_in = nucleus_stats(lab, lab > 0)
    >>> ids.tolist(), cents.tolist(), n.tolist(), n_in.tolist()
    ([1, 3], [[0.0, 0.5], [1.0, 2.0]], [2, 1], [2, 1])
    """
    at = np.flatnonzero(labels)  # nucleus pixels only: most of a block is background
    lab = labels.ravel()[at]
    n = np.bincount(lab, minlength=1)
    ids = np.flatnonzero(n)
    ids = ids[ids != 0]
    rows, cols = np.divmod(at, labels.shape[1])
    n_in = np.bincount(lab, inside.ravel()[at], n.size)
    rows = np.bincount(lab, rows, n.size)
    cols = np.bincount(lab, cols, n.size)
    cents = np.stack([rows[ids] / n[ids], cols[ids] / n[ids]], axis=1)
    return ids, cents, n[ids], n_in[ids].astype(np.int64)


def detect_nuclei(
    slide: Slide,
    labels: np.ndarray,
    labels_mpp: float,
    nuclei_fn: NucleiFn,
    mpp: float,
    geojson: Path,
    acc: ScoreAccumulator,
    *,
    block: int = 1024,
    margin: int = 48,
    progress: bool = True,
) -> dict[str, int]:
    """Segment nuclei block by block where there is interstitium; write all nuclei to GeoJSON
    (level-0 pixel coordinates, QuPath detections classified ``interstitial`` or ``other``) and
    add the nucleus pixels lying in interstitium to ``acc``.

    Blocks without interstitium are not read; within a block, ``nuclei_fn`` gets the
    interstitium mask and may skip work far from it, so nuclei away from interstitium may be
    missing from the GeoJSON (they add nothing to the scores).

    A nucleus belongs to the block holding its centroid (``margin`` must exceed a nucleus
    diameter in pixels), so block edges do not split one. Two blocks can still segment a
    nucleus on their common edge differently, with centroids on either side: a nucleus that
    overlaps one already kept from a neighbouring block (by 30% of either's area) is dropped.
    """
    from shindan.io.annotations import Annotation, instances_to_polygons, to_geojson

    s_mpp = require_mpp(slide)
    w0, h0 = slide.dimensions
    width, height = int(round(w0 * s_mpp / mpp)), int(round(h0 * s_mpp / mpp))
    scale = mpp / labels_mpp  # label-map px per nucleus-grid px
    takes_where = len(inspect.signature(nuclei_fn).parameters) >= 3
    total = interstitial = 0
    blocks = list(_blocks(width, height, block))
    with (
        atomic_path(geojson) as tmp,
        open(tmp, "w") as fh,
        progress_bar(f"nuclei {slide.path.name}", len(blocks), enabled=progress) as advance,
    ):
        fh.write('{"type": "FeatureCollection", "features": [\n')
        first = True
        edge = _EdgeNuclei(block)
        for x, y, w, h in blocks:
            advance(1)
            edge.start_block(x, y)
            lr0, lr1 = int(y * scale), int(math.ceil((y + h) * scale))
            lc0, lc1 = int(x * scale), int(math.ceil((x + w) * scale))
            if not (labels[lr0:lr1, lc0:lc1] == INTERSTITIUM).any():
                continue
            rgb = read_at_mpp(
                slide, (x - margin, y - margin), (w + 2 * margin, h + 2 * margin), mpp
            )
            # Compartment under every pixel of the padded block (nearest label-map pixel).
            rr = np.clip(
                ((np.arange(y - margin, y + h + margin) + 0.5) * scale).astype(int),
                0,
                labels.shape[0] - 1,
            )
            cc = np.clip(
                ((np.arange(x - margin, x + w + margin) + 0.5) * scale).astype(int),
                0,
                labels.shape[1] - 1,
            )
            comp = labels[rr][:, cc]
            inst = nuclei_fn(rgb, mpp, comp == INTERSTITIUM) if takes_where else nuclei_fn(rgb, mpp)
            ids, cents, n_px, n_int = nucleus_stats(inst, comp == INTERSTITIUM)
            if ids.size == 0:
                continue
            keep, is_int = [], {}
            boxes = ndi.find_objects(inst)
            for i, (cy, cx), npx, nint in zip(ids, cents, n_px, n_int, strict=True):
                if not (margin <= cy < margin + h and margin <= cx < margin + w):
                    continue
                rs, cs = boxes[i - 1]
                crop = inst[rs, cs] == i
                top_left = (y - margin + rs.start, x - margin + cs.start)
                # near the block's edge: a neighbour may have segmented it too
                if min(rs.start, cs.start) < 2 * margin or rs.stop > h or cs.stop > w:
                    if edge.overlaps(top_left, crop):
                        continue
                    edge.add(top_left, crop)
                keep.append(int(i))
                is_int[int(i)] = nint * 2 > npx  # a nucleus is interstitial by majority
                acc.add_interstitial_nuclei(int(nint), mpp)
            total += len(keep)
            interstitial += int(sum(is_int.values()))
            f = mpp / s_mpp  # level-0 px per nucleus-grid px
            origin = ((x - margin) * f, (y - margin) * f)
            for name, ids_ in (
                ("interstitial", [i for i in keep if is_int[i]]),
                ("other", [i for i in keep if not is_int[i]]),
            ):
                chosen = np.zeros(int(ids[-1]) + 1, bool)
                chosen[ids_] = True
                sub = np.where(chosen[inst], inst, 0)
                polys = [
                    # a nucleus cut by the slide's edge is outlined up to the edge, not beyond
                    Annotation(np.clip(a.polygon, 0, (w0, h0)), a.label)
                    for a in instances_to_polygons(sub, offset=origin, scale=f, label=name)
                ]
                for feat in to_geojson(polys, colours=NUCLEUS_COLOURS)["features"]:
                    fh.write(("" if first else ",\n") + json.dumps(feat))
                    first = False
        fh.write("\n]}\n")
    return {"count": total, "interstitial_count": interstitial}


def run_timings(
    timer: StageTimer, seconds: float, areas_um2: dict[str, float]
) -> dict[str, object]:
    """``scores.json``'s speed keys: seconds per stage (``timings_s``, stages that add up to
    the whole run but for the report page), total ``seconds``, ``tissue_mm2`` (every
    compartment but non-tissue) and ``seconds_per_mm2`` of that tissue (None without tissue).

    Examples
    --------
    >>> t = StageTimer()
    >>> t.add("nuclei_net", 3.0)
    >>> run_timings(t, 4.0, {"non_tissue": 5e5, "tubule": 2e6})["seconds_per_mm2"]
    2.0
    """
    tissue = sum(v for k, v in areas_um2.items() if k != "non_tissue") / 1e6
    return {
        "timings_s": timer.rounded(),
        "seconds": round(seconds, 2),
        "tissue_mm2": round(tissue, 4),
        "seconds_per_mm2": round(seconds / tissue, 2) if tissue > 0 else None,
    }


def analyze_case(
    path: str | Path,
    out: str | Path,
    models: KidneyModels,
    *,
    mpp: float | None = None,
    case: str | None = None,
    progress: bool = True,
    nuclei_fn: NucleiFn | None = None,
    notes: Sequence[str] = (),
) -> CaseResult:
    """Analyse one slide or image; writes ``out/<case>/`` (see the contract).

    Parameters
    ----------
    path : slide or image file
    out : output folder (the case folder is created inside it)
    models : KidneyModels
    mpp : float, optional
        µm/px of the input when the file records none (a file's own µm/px is kept).
    notes : warnings to head ``scores.json`` ``warnings`` and the report (the demo's)
    nuclei_fn : callable, optional
        ``f(rgb, mpp) -> instance labels``, or ``f(rgb, mpp, where)`` to be given the
        interstitium mask; defaults to the ``nuclei`` model of ``models``.
    """
    from shindan.kidney.checks import case_checks, model_cards
    from shindan.report.kidney import write_kidney_report
    from shindan.report.overlay import overlay_image

    t0 = time.time()
    timer = StageTimer()
    path = Path(path)
    case = case or path.name.split(".")[0]
    slide = open_slide(path, mpp=mpp)
    require_mpp(slide)
    if nuclei_fn is None and models.nuclei is not None:
        from shindan.nuclei.segment import segment_nuclei

        def nuclei_fn(image: np.ndarray, m: float, where: np.ndarray) -> np.ndarray:
            return segment_nuclei(image, m, predictor=models.nuclei, timer=timer, where=where)

    with (
        slide,
        atomic_dir(Path(out) / case, owned=CASE_FILES) as tmp,
        tempfile.TemporaryDirectory() as scratch,
    ):
        with timer("tissue"):
            tissue = detect_tissue(slide)
        with timer("compartments"):
            seg = segment_slide(
                slide,
                models.compartments,
                Path(scratch) / "compartments.zarr",
                tissue=tissue,
                progress=progress,
            )
        with timer("label_map"):
            o_mpp, o_w, o_h = output_grid(slide)
            labels = resample_labels(seg.labels(), seg.mpp, o_mpp, o_w, o_h)
            labels = remove_small_regions(labels, o_mpp, min_region_areas(models.compartments.card))
            labels = clear_black(labels, slide, o_mpp)  # blacked-out areas are not tissue
            # zlib level 1: a third of level 6's time (overlay.png 2.8 s -> 1.0 s under load),
            # files 7% (overlay) to 75% (label map, still ~1/100 of raw) larger
            Image.fromarray(labels).save(tmp / "compartments.png", compress_level=1)
            acc = ScoreAccumulator()
            acc.add_labels(labels, o_mpp)
        nuclei_stats: dict[str, int] | None = None
        t_nuclei = time.perf_counter()
        if nuclei_fn is not None:
            n_mpp = models.nuclei.card.mpp if models.nuclei else slide.mpp
            nuclei_stats = detect_nuclei(
                slide,
                labels,
                o_mpp,
                nuclei_fn,
                n_mpp or slide.mpp,
                tmp / "nuclei.geojson",
                acc,
                block=(
                    nuclei_block(models.nuclei.card.size, models.nuclei.card.overlap)
                    if models.nuclei
                    else 1024
                ),
                progress=progress,
            )
        else:
            (tmp / "nuclei.geojson").write_text('{"type": "FeatureCollection", "features": []}\n')
        # reading, resampling and outlines: the nuclei stage less the net and the watershed
        timer.add(
            "nuclei_other",
            time.perf_counter()
            - t_nuclei
            - timer.seconds.get("nuclei_net", 0.0)
            - timer.seconds.get("nuclei_watershed", 0.0),
        )
        with timer("glomeruli"):
            glomeruli = find_glomeruli(labels, o_mpp, slide.mpp)
            if models.glomerulosclerosis is not None and glomeruli:
                glomeruli = classify_glomeruli(slide, glomeruli, models.glomerulosclerosis)
        scores = {
            **acc.scores(),
            "areas_um2": {k: round(v, 2) for k, v in acc.areas_um2.items()},
            "interstitial_nuclei_um2": round(acc.interstitial_nuclei_um2, 2),
            "nuclei": nuclei_stats,
            # glomeruli (review regions not counted), stain, domains, adequacy, warnings
            **case_checks(
                slide,
                labels,
                o_mpp,
                [g.as_dict() for g in glomeruli],
                model_cards(models),
                acc.areas_um2,
                notes,
            ),
            "mpp": o_mpp,
            "input_mpp": slide.mpp,
            "input_mpp_source": slide.mpp_source,
            "analysis_mpp": {
                "compartments": seg.mpp,
                "nuclei": models.nuclei.card.mpp if models.nuclei else None,
            },
            "model": models.versions(),
            "input": {"path": str(path), **slide.info()},
            "shindan_version": __version__,
            "seconds": round(time.time() - t0, 2),
        }
        with timer("report"):
            thumb = slide.thumbnail(2048)
            overlay = overlay_image(
                thumb, labels, tmp / "nuclei.geojson", scale=thumb.shape[1] / slide.dimensions[0]
            )
            Image.fromarray(overlay).save(tmp / "overlay.png", compress_level=1)
        scores.update(run_timings(timer, time.time() - t0, acc.areas_um2))
        (tmp / "scores.json").write_text(json.dumps(scores, indent=2) + "\n")
        write_kidney_report(tmp / "report.html", case, scores, overlay, thumb)
    return CaseResult(case, scores, glomeruli, Path(out) / case)


def cohort_row(result: CaseResult) -> dict[str, object]:
    """One ``cohort.csv`` row: the scores as columns."""
    from shindan.kidney.checks import checks_columns

    s = result.scores
    row: dict[str, object] = {
        "case": result.case,
        "interstitial_fibrosis": s["interstitial_fibrosis"],
        "inflammation": s["inflammation"],
    }
    row.update({f"area_{k}_um2": v for k, v in s["areas_um2"].items()})
    row["glomeruli"] = s["glomeruli"]["count"]
    row["glomeruli_sclerosed"] = s["glomeruli"]["sclerosed"]
    row.update(checks_columns(s))
    row["interstitial_nuclei"] = (s["nuclei"] or {}).get("interstitial_count")
    row["mpp"] = s["mpp"]
    row["input"] = s["input"]["path"]  # traces image_2 back to its file
    return row


def is_cohort_header(row: list[str]) -> bool:
    """Whether a CSV header row is one :func:`write_cohort` writes."""
    return row[:3] == ["case", "interstitial_fibrosis", "inflammation"]


def check_analysis(
    inputs: list[Path], out: str | Path, *, mpp: float | None = None
) -> tuple[list[Path], list[str]]:
    """The input files and their case names, once every input opens with a scale and colour,
    and ``out`` may be written: a folder whose ``cohort.csv`` and case folders (if any) are
    shindan's. :class:`~shindan.errors.InputError` otherwise, before any work.
    """
    files = expand_inputs(inputs, SLIDE_SUFFIXES)
    cases = unique_names([f.name.split(".")[0] for f in files])
    out = Path(out)
    check_can_be_folder(out)
    check_output_file(out / "cohort.csv", is_cohort_header, force_option=False)
    for f, case in zip(files, cases, strict=True):
        with open_slide(f, mpp=mpp) as s:
            require_mpp(s)
            require_colour(s)
        check_replaceable(out / case, CASE_FILES)
    return files, cases


def analyze(
    inputs: list[Path],
    out: str | Path,
    *,
    mpp: float | None = None,
    backend: str = "auto",
    progress: bool = True,
    models: KidneyModels | None = None,
    notes: Sequence[str] = (),
) -> list[CaseResult]:
    """Analyse every input into ``out/<case>/`` and write ``out/cohort.csv``.

    Inputs and output folders are checked first (every input must open and have a scale, and
    no case folder may hold files shindan did not write), so a bad file fails before any work
    is done. ``cohort.csv`` keeps the rows of earlier runs into ``out`` whose case folders
    are still there, and replaces those of the cases analysed again.
    """
    files, cases = check_analysis(inputs, out, mpp=mpp)  # fail fast, before any work
    out = Path(out)
    models = models or KidneyModels.load(backend=backend)
    out.mkdir(parents=True, exist_ok=True)
    results = [
        analyze_case(f, out, models, mpp=mpp, case=c, progress=progress, notes=notes)
        for f, c in zip(files, cases, strict=True)
    ]
    write_cohort(out, [cohort_row(r) for r in results])
    return results


def write_cohort(out: Path, rows: list[dict[str, object]]) -> None:
    """``out/cohort.csv``: earlier rows whose case folder still exists and is not in ``rows``,
    then ``rows`` (columns: the union, in order of first appearance)."""
    path = out / "cohort.csv"
    new = {str(r["case"]) for r in rows}
    kept: list[dict[str, object]] = []
    if path.is_file():
        with open(path, newline="") as fh:
            kept = [
                r
                for r in csv.DictReader(fh)
                if r.get("case") not in new and (out / str(r.get("case")) / "scores.json").exists()
            ]
    fields = list(dict.fromkeys(k for r in [*kept, *rows] for k in r))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows([*kept, *rows])


def copy_truth(truth: dict, out: Path) -> None:
    """Write ``truth.json`` atomically (used by the demo)."""
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(truth, indent=2) + "\n")
