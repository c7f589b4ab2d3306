"""``shindan deid`` throughput: DICOM files per second and seconds per whole-slide image.

Each figure is one whole export as a user runs it (walk, de-identify, manifest, the
self-check of every written file, the encrypted linkage table), timed end to end:

- DICOM: pydicom's CT_small and MR_small copied as ``--copies`` patients (new patient IDs,
  names and UIDs each, so every file is a new patient and study), plus the real
  ``../shared/data/dicom/gsps-liver-mr`` study with its DICOMDIR when it is here;
- slides: every TIFF-family slide in ``../shared/data/slides`` (one export each) and a
  synthetic 8192² JPEG-tiled pyramidal TIFF.

Prints a markdown section on stdout (``bench/run.py`` adds it to BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def _dicom_copies(folder: Path, copies: int) -> int:
    """``copies`` patients, each with a CT and an MR of pydicom's test data."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    sources = [pydicom.dcmread(get_testdata_file(n)) for n in ("CT_small.dcm", "MR_small.dcm")]
    n = 0
    for i in range(copies):
        study = generate_uid()
        for j, ds in enumerate(sources):
            ds = ds.copy()
            ds.PatientID = f"BENCH{i:06d}"
            ds.PatientName = f"Bench^Patient{i:06d}"
            ds.StudyInstanceUID = study
            ds.SeriesInstanceUID = generate_uid()
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.save_as(folder / f"p{i:05d}_{j}.dcm")
            n += 1
    return n


def _export(inputs: list[Path], work: Path, name: str):
    from shindan.deid.export import export

    t, c = time.perf_counter(), time.process_time()
    r = export(
        inputs,
        work / f"out-{name}",
        "BENCH",
        work / "link.table",
        work / "site.key",
        progress=False,
        ocr=False,
    )
    return r, time.perf_counter() - t, time.process_time() - c


def bench_dicom(work: Path, copies: int) -> list[dict]:
    rows = []
    folder = work / "dicom-in"
    folder.mkdir()
    n = _dicom_copies(folder, copies)
    size = sum(f.stat().st_size for f in folder.iterdir()) / 1e6
    r, secs, cpu = _export([folder], work, "dicom")
    rows.append(
        {
            "input": f"pydicom CT_small + MR_small as {copies} patients",
            "files": n,
            "exported": r.files,
            "MB": size,
            "seconds": secs,
            "files_per_s": n / secs,
            "cpu_s": cpu,
            "files_per_cpu_s": n / cpu,
        }
    )
    gsps = SHARED / "dicom" / "gsps-liver-mr"
    if gsps.is_dir():
        files = [f for f in gsps.rglob("*") if f.is_file()]
        r, secs, cpu = _export([gsps], work, "gsps")
        rows.append(
            {
                "input": "gsps-liver-mr (MR, presentation states, DICOMDIR)",
                "files": len(files),
                "exported": r.files,
                "MB": sum(f.stat().st_size for f in files) / 1e6,
                "seconds": secs,
                "files_per_s": len(files) / secs,
                "cpu_s": cpu,
                "files_per_cpu_s": len(files) / cpu,
            }
        )
    return rows


def _synthetic_slide(path: Path, side: int = 8192) -> Path:
    import tifffile

    rng = np.random.default_rng(0)
    tile = (rng.random((256, 256, 3)) * 40 + 180).astype(np.uint8)
    level = np.tile(tile, (side // 256, side // 256, 1))
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(level, tile=(256, 256), compression="jpeg", subifds=2, metadata=None)
        for k in (2, 4):
            tw.write(level[::k, ::k], tile=(256, 256), compression="jpeg", subfiletype=1)
    return path


def bench_slides(work: Path) -> list[dict]:
    folder = SHARED / "slides"
    slides = sorted(
        p
        for p in folder.glob("*")
        if p.is_file() and p.suffix.lower() in (".svs", ".ndpi", ".tif", ".tiff")
    )
    slides.append(_synthetic_slide(work / "synthetic-8192.tiff"))  # a larger pyramid too
    rows = []
    for i, slide in enumerate(slides):
        r, secs, cpu = _export([slide], work, f"slide{i}")
        rows.append(
            {
                "slide": slide.name,
                "MB": slide.stat().st_size / 1e6,
                "exported": r.files,
                "s_per_slide": secs,
                "cpu_s_per_slide": cpu,
            }
        )
    return rows


def _md_table(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        cells = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in r.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=100, help="synthetic DICOM patients")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="shindan-bench-deid-") as tmp:
        work = Path(tmp)
        print("deid: DICOM…", file=sys.stderr)
        dicom = bench_dicom(work, args.copies)
        print("deid: slides…", file=sys.stderr)
        slides = bench_slides(work)
    load = os.getloadavg()[0]
    print(
        "DICOM (end-to-end export incl. self-check and linkage table; wall-clock and this "
        f"process's CPU seconds, {os.cpu_count()} cores, load average {load:.1f}):\n\n"
        f"{_md_table(dicom)}\n\n"
        f"Whole-slide images (one export each):\n\n{_md_table(slides)}"
    )


if __name__ == "__main__":
    main()
