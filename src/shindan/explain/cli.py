"""``shindan explain``: class-activation heatmaps and the attention index (thin typer wiring)."""

from __future__ import annotations

import functools
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated

import typer

from shindan.errors import InputError


def explain(
    model: Annotated[str, typer.Argument(help="Classification model name or model folder.")],
    inputs: Annotated[
        list[Path],
        typer.Argument(help="Image files and/or folders (class-named folders give true labels)."),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Folder for <image>_cam.png and attention.csv.")
    ],
    masks: Annotated[
        Path | None,
        typer.Option(
            help="Folder of object masks with the same file stems: adds cam_in_mask, the share "
            "of the heatmap inside the mask."
        ),
    ] = None,
    method: Annotated[
        str, typer.Option(help="gradcam, gradcam++, scorecam, eigencam or ablationcam.")
    ] = "gradcam",
    layer: Annotated[str | None, typer.Option(help="Target layer (dotted module name).")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 16,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Class-activation heatmaps (Grad-CAM, Grad-CAM++, Score-CAM, ...) and attention index."""
    from shindan.explain.outputs import check_out

    check_out(out)  # before importing torch and loading the model
    from shindan.explain.run import explain as run

    if batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    with _no_tqdm() if quiet else nullcontext():
        rows = run(
            model,
            inputs,
            out,
            masks=masks,
            method=method,
            layer=layer,
            batch_size=batch_size,
            progress=not quiet,
        )
    print(f"wrote {len(rows)} heatmaps and attention.csv to {out}", file=sys.stderr)


@contextmanager
def _no_tqdm() -> Iterator[None]:
    """Silence the tqdm bars Score-CAM and Ablation-CAM (pytorch-grad-cam) draw of their own."""
    try:
        import tqdm
        from pytorch_grad_cam import ablation_cam, score_cam
    except ImportError:  # no train extra: the command says so itself
        yield
        return
    quiet = types.SimpleNamespace(tqdm=functools.partial(tqdm.tqdm, disable=True))
    saved = [(m, m.tqdm) for m in (ablation_cam, score_cam)]
    for m, _ in saved:
        m.tqdm = quiet  # only their name for tqdm: other users of tqdm are untouched
    try:
        yield
    finally:
        for m, bar in saved:
            m.tqdm = bar


def register(app: typer.Typer) -> None:
    """Add the top-level ``explain`` command to the ``shindan`` app."""
    app.command("explain")(explain)
