"""TIAToolbox's SemanticSegmentor vs shindan: same slide, same network, end-to-end wall clock.

Usage (main venv; ``bench/run.py`` calls it and embeds the printed markdown)::

    python bench/tiatoolbox_compare.py SLIDE MODEL [--workers N] [--batch N]

1. shindan: tissue detection + :func:`shindan.engine.tiled.segment_slide` with the default
   backend (as ``bench_pipeline`` in bench/run.py), and again with the torch fp32 backend so
   the table shows how much of the gap is the runtime and how much the pipeline.
2. TIAToolbox 2.x in ``bench/.venv-tia`` (a fresh process, see bench/setup_tiatoolbox.sh):
   the card's network with its shipped weights (``load_network``) wrapped as a ``ModelABC``
   with the card's normalisation; tile size, stride (size - overlap) and µm/px from the card;
   the slide read by TIAToolbox's own reader; its default tissue mask (Otsu on a 1.25x
   thumbnail); CPU; batch 8; DataLoader workers ``--workers``. Timed around
   ``SemanticSegmentor.run(..., patch_mode=False, output_type="zarr")``: masking, reading,
   inference, stitching and writing the label map.

In both, model loading and a one-batch warm-up happen before the clock starts. The printed
table gives seconds, tiles run, TIAToolbox seconds ÷ each shindan run's seconds, and the
fraction of equal pixels of the two label maps on their common grid (to show it is the same
work).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TIA_VENV = ROOT / "bench" / ".venv-tia"
TIA_PYTHON = TIA_VENV / "bin" / "python"


# --------------------------------------------------------------------------- TIAToolbox side
def _tia_child(slide: str, model: str, out_dir: str, result: str, batch: int, workers: int) -> None:
    """Runs inside bench/.venv-tia: time SemanticSegmentor on ``slide``; JSON to ``result``."""
    import logging

    import torch
    from tiatoolbox.models.architecture.utils import argmax_last_axis
    from tiatoolbox.models.engine.io_config import IOSegmentorConfig
    from tiatoolbox.models.engine.semantic_segmentor import SemanticSegmentor
    from tiatoolbox.models.models_abc import ModelABC
    from tiatoolbox.wsicore.wsireader import OpenSlideWSIReader, VirtualWSIReader, WSIReader

    from shindan.models import load_card, load_network

    logging.getLogger().setLevel(logging.WARNING)  # TIAToolbox logs INFO to stdout
    torch.set_num_threads(os.cpu_count() or 1)  # as shindan does
    card = load_card(model)

    class CardNet(ModelABC):
        """The card's network behind TIAToolbox's model interface (uint8 NHWC in)."""

        def __init__(self) -> None:
            super().__init__()
            self.net = load_network(card)
            c = card.channels
            # The card's normalisation, on 0..255 input as TIAToolbox's loader yields it.
            self.register_buffer("mean", 255 * torch.tensor(card.mean).view(1, c, 1, 1))
            self.register_buffer("std", 255 * torch.tensor(card.std).view(1, c, 1, 1))
            self.class_dict = dict(enumerate(card.classes))
            self.patches = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net((x - self.mean) / self.std)

        @staticmethod
        def infer_batch(model: CardNet, batch_data: torch.Tensor, *, device: str) -> np.ndarray:
            model.eval()
            x = batch_data.to(device=device, dtype=torch.float32).permute(0, 3, 1, 2)
            with torch.inference_mode():
                probs = torch.softmax(model(x), dim=1)
            model.patches += len(x)
            return probs.permute(0, 2, 3, 1).cpu().numpy()  # NHWC, as TIAToolbox's UNet

        @staticmethod
        def postproc(image: np.ndarray) -> np.ndarray:
            return argmax_last_axis(image)  # stitched probabilities → labels, as its UNet

    net = CardNet().eval()
    size, stride = card.size, card.size - card.overlap
    res = [{"units": "mpp", "resolution": card.mpp}]
    ioconfig = IOSegmentorConfig(
        input_resolutions=res,
        output_resolutions=res,
        patch_input_shape=(size, size),
        patch_output_shape=(size, size),
        stride_shape=(stride, stride),
        save_resolution=res[0],
    )
    seg = SemanticSegmentor(
        model=net, batch_size=batch, num_workers=workers, device="cpu", verbose=False
    )
    CardNet.infer_batch(net, torch.zeros(batch, size, size, card.channels), device="cpu")
    net.patches = 0
    t = time.perf_counter()
    reader = WSIReader.open(slide)
    if isinstance(reader, VirtualWSIReader):
        # TIAToolbox's tifffile reader takes only SVS, OME, BigTIFF or single-page tiled
        # TIFFs and otherwise decodes the whole image into memory, without its µm/px; its
        # OpenSlide reader reads such pyramidal TIFFs (and their µm/px) tile by tile.
        reader = OpenSlideWSIReader(slide)
    if reader.info.mpp is None or reader.info.mpp[0] is None:
        raise SystemExit(f"TIAToolbox finds no µm/px in {slide}")
    out = seg.run(
        [reader],
        patch_mode=False,
        ioconfig=ioconfig,
        save_dir=Path(out_dir),
        output_type="zarr",
        overwrite=True,
        auto_get_mask=True,
    )
    secs = time.perf_counter() - t
    path = next(iter(out.values()))
    Path(result).write_text(
        json.dumps(
            {
                "seconds": secs,
                "patches": net.patches,
                "reader": type(reader).__name__,
                "zarr": str(path),
            }
        )
    )


def _tia_labels(path: str) -> np.ndarray:
    """The label map TIAToolbox wrote (its ``predictions`` array, at the model's µm/px)."""
    import zarr

    group = zarr.open_group(path, mode="r")
    return np.asarray(group["predictions"])


def run_tiatoolbox(slide: Path, model: str, out_dir: Path, batch: int, workers: int) -> dict:
    """Run :func:`_tia_child` in the TIAToolbox venv; its timing, patch count and labels."""
    result = out_dir / "tia.json"
    cmd = [
        str(TIA_PYTHON),
        __file__,
        "--tia-child",
        str(slide),
        model,
        str(out_dir / "tia"),
        str(result),
        str(batch),
        str(workers),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not result.exists():
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        sys.exit(f"error: TIAToolbox run failed: {tail[0]}")
    res = json.loads(result.read_text())
    res["labels"] = _tia_labels(res.pop("zarr"))
    return res


# ------------------------------------------------------------------------------ shindan side
def run_shindan(slide: Path, model: str, backend: str, out: Path, batch: int) -> dict:
    """End-to-end shindan time (tissue detection + segment_slide), as bench/run.py does."""
    from shindan.engine import load_predictor
    from shindan.engine.tiled import segment_slide
    from shindan.io import open_slide
    from shindan.tiling import detect_tissue

    p = load_predictor(model, backend)
    card = p.card
    with open_slide(slide) as s:
        p.predict(np.zeros((batch, card.size, card.size, card.channels), np.uint8))  # warm-up
        t = time.perf_counter()
        seg = segment_slide(s, p, out, tissue=detect_tissue(s), batch_size=batch, progress=False)
        secs = time.perf_counter() - t
    return {
        "backend": p.backend,
        "seconds": secs,
        "tiles": seg.tiles_run,
        "labels": np.asarray(seg.labels()[:]),
    }


def agreement(a: np.ndarray, b: np.ndarray, fill_class: int = 0) -> tuple[float, float, tuple]:
    """Equal-label fraction on the common (top-left aligned) grid: all pixels, and pixels
    where at least one map says something other than ``fill_class``."""
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    a, b = a[:h, :w], b[:h, :w]
    eq = a == b
    fg = (a != fill_class) | (b != fill_class)
    return float(eq.mean()), float(eq[fg].mean()) if fg.any() else float("nan"), (w, h)


def grid_shift_agreement(
    slide: Path, model: str, labels: np.ndarray, side: int = 2048, batch: int = 8
) -> tuple[float, float]:
    """shindan against itself with its tile grid moved by half the overlap, as TIAToolbox's
    grid is (its tiles start at 0, shindan's at -overlap/2): the agreement to expect from
    tile placement alone. On a ``side``² window around the median tissue pixel."""
    from shindan.engine import load_predictor
    from shindan.engine.tiled import predict_array
    from shindan.io import open_slide
    from shindan.tiling import read_at_mpp

    p = load_predictor(model)
    shift = p.card.overlap // 2
    ys, xs = np.nonzero(labels)
    h, w = labels.shape
    cy, cx = (int(np.median(ys)), int(np.median(xs))) if len(ys) else (h // 2, w // 2)
    y0, x0 = max(0, min(cy - side // 2, h - side)), max(0, min(cx - side // 2, w - side))
    with open_slide(slide) as s:
        img = read_at_mpp(s, (x0, y0), (min(side, w), min(side, h)), p.card.mpp)
    a = predict_array(p, img, batch_size=batch).argmax(0)[shift:, shift:]
    b = predict_array(p, img[shift:, shift:], batch_size=batch).argmax(0)
    all_px, fg_px, _ = agreement(a, b)
    return all_px, fg_px


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f}"


def main() -> None:
    if sys.argv[1:2] == ["--tia-child"]:  # inside bench/.venv-tia, called by run_tiatoolbox
        slide, model, out, result, batch, workers = sys.argv[2:]
        _tia_child(slide, model, out, result, int(batch), int(workers))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("slide", type=Path)
    ap.add_argument("model", help="shipped model name or model folder")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="TIAToolbox DataLoader workers (its docs: cpu_count for full use)",
    )
    ap.add_argument(
        "--plain",
        type=Path,
        help="also time this model folder (bench/run.py passes the network exported without "
        "pad folding, the graph session 8 measured)",
    )
    args = ap.parse_args()
    if not (TIA_VENV / ".installed").exists():
        sys.exit(
            f"error: TIAToolbox venv missing or incomplete ({TIA_VENV}): "
            "run bench/setup_tiatoolbox.sh"
        )
    if not args.slide.exists():
        sys.exit(f"error: slide not found: {args.slide}")
    from shindan.models import load_card

    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="tia-compare-") as tmp:
        tmp = Path(tmp)
        # One snapshot of the model for every run, even if the zoo is rewritten meanwhile.
        model = str(tmp / "model")
        shutil.copytree(load_card(args.model).directory, model)
        card = load_card(model)
        print("shindan (default backend)…", file=sys.stderr)
        fast = run_shindan(args.slide, model, "auto", tmp / "auto.zarr", args.batch)
        plain = None
        if args.plain is not None:
            print("shindan (default backend, unfolded export)…", file=sys.stderr)
            plain = run_shindan(args.slide, str(args.plain), "auto", tmp / "plain.zarr", args.batch)
        print("shindan (torch)…", file=sys.stderr)
        torch_run = run_shindan(args.slide, model, "torch", tmp / "torch.zarr", args.batch)
        print("TIAToolbox…", file=sys.stderr)
        tia = run_tiatoolbox(args.slide, model, tmp, args.batch, args.workers)
        load_after = _load()
        print("grid-shift reference…", file=sys.stderr)
        ref_all, ref_fg = grid_shift_agreement(args.slide, model, fast["labels"], batch=args.batch)
    rows = [
        (f"shindan segment_slide ({fast['backend']} fp32, default)", fast),
        *(
            [(f"shindan segment_slide ({plain['backend']} fp32, unfolded export)", plain)]
            if plain
            else []
        ),
        (f"shindan segment_slide ({torch_run['backend']} fp32)", torch_run),
        (
            f"TIAToolbox SemanticSegmentor (torch fp32, {tia['reader']}, "
            f"{args.workers} loader workers)",
            tia,
        ),
    ]
    lines = [
        "| tool | seconds | tiles or patches | ratio (TIAToolbox s ÷ this s) |",
        "|---|---|---|---|",
    ]
    for name, r in rows:
        n = r.get("tiles", r.get("patches"))
        lines.append(f"| {name} | {r['seconds']:.1f} | {n} | {tia['seconds'] / r['seconds']:.2f} |")
    all_px, fg_px, (w, h) = agreement(fast["labels"], tia["labels"])
    all_t, fg_t, _ = agreement(torch_run["labels"], tia["labels"])
    fill = card.classes[0]
    print("\n".join(lines))
    print()
    print(
        f"Same work: `{card.name}` {card.version} ({card.size}² px tiles, overlap "
        f"{card.overlap}, {card.mpp} µm/px, batch {args.batch}, CPU) on "
        f"`{args.slide.name}`. The label maps agree on {all_px:.1%} of the {w}×{h} common "
        f"grid, {fg_px:.1%} of the pixels either calls other than `{fill}` (torch run: "
        f"{all_t:.1%}, {fg_t:.1%}). For reference, tile placement alone: "
        f"shindan against itself with its grid moved by {card.overlap // 2} px, as "
        f"TIAToolbox's is, agrees on {ref_all:.1%} ({ref_fg:.1%} not `{fill}`) of a "
        f"2048² window; TIAToolbox also averages overlaps uniformly where shindan ramps, "
        f"and masks with its own Otsu tissue mask. shindan's ONNX graph is the export with "
        f"its run-time 'same' pads folded into the convolutions (identical logits); "
        f"'unfolded export' is the plain export of the same weights. Timed after model "
        f"loading and a "
        f"one-batch warm-up, one run each; load average (1/5/15 min) {load_before} before, "
        f"{load_after} after, on {os.cpu_count()} cores shared with other jobs."
    )


if __name__ == "__main__":
    main()
