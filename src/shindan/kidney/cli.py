"""``shindan kidney ...`` and ``shindan demo``: thin wrappers over the kidney pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shindan.util.progress import set_quiet

app = typer.Typer(help="Kidney biopsy quantification.", no_args_is_help=True)

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Backend = Annotated[str, typer.Option(help="auto, onnx, torch or torch-bf16.")]


def _timings(s: dict) -> str:
    """One line of seconds per stage and per mm² of tissue (shown unless --quiet)."""
    stages = "  ".join(f"{k} {v:.1f}" for k, v in (s.get("timings_s") or {}).items())
    per = s.get("seconds_per_mm2")
    rate = f", {per:.1f} s/mm² of {s['tissue_mm2']:.2f} mm² tissue" if per is not None else ""
    return f"  seconds: {stages} (total {s['seconds']:.1f}{rate})"


def _fmt(score: float | None, digits: int) -> str:
    # a case with no tubule or interstitium has no score (None), which is not an error
    return "n/a (no tubule or interstitium)" if score is None else f"{score:.{digits}f}"


def _glomeruli(s: dict) -> str:
    """The glomerulus count, regions for review apart, and the Banff adequacy verdict."""
    g, a = s["glomeruli"], s.get("adequacy")
    review = f" (+{g['review']} for review, not counted)" if g.get("review") else ""
    verdict = f"  arteries {a['arteries']}  adequacy {a['verdict']}" if a else ""
    return f"{g['count']}{review}{verdict}"


def _warnings(s: dict) -> str:
    """The case's warnings, one per line under its summary (shown even with --quiet)."""
    return "".join(f"\n  warning: {w}" for w in s.get("warnings", ()))


@app.command()
def analyze(
    inputs: Annotated[list[Path], typer.Argument(help="Slides, images or folders of them.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder.")],
    mpp: Annotated[float | None, typer.Option(help="µm/px when the file has none.")] = None,
    compartments_model: Annotated[
        str, typer.Option(help="Compartment model: shipped name or a folder from kidney train.")
    ] = "kidney-compartments",
    nuclei_model: Annotated[
        str, typer.Option(help="Nucleus model: shipped name or a folder from nuclei train.")
    ] = "nuclei",
    glomerulosclerosis_model: Annotated[
        str, typer.Option(help="Glomerulus classifier: shipped name or a model folder.")
    ] = "glomerulosclerosis",
    backend: Backend = "auto",
    quiet: Quiet = False,
) -> None:
    """Compartments, interstitial nuclei, fibrosis and inflammation scores, glomeruli, report."""
    from shindan.kidney.pipeline import KidneyModels, check_analysis
    from shindan.kidney.pipeline import analyze as run

    set_quiet(quiet)
    check_analysis(inputs, out, mpp=mpp)  # inputs and --out before loading the models
    models = KidneyModels.load(
        compartments_model, nuclei_model, glomerulosclerosis_model, backend=backend
    )
    results = run(inputs, out, mpp=mpp, backend=backend, models=models)
    for r in results:
        s = r.scores
        scale = ""
        if mpp is not None and s["input_mpp_source"] == "file" and s["input_mpp"] != mpp:
            scale = f"  (its own {s['input_mpp']:g} µm/px, not --mpp)"
        typer.echo(
            f"{r.case}: fibrosis {_fmt(s['interstitial_fibrosis'], 3)}  inflammation "
            f"{_fmt(s['inflammation'], 4)}  glomeruli {_glomeruli(s)}{scale}{_warnings(s)}",
            err=True,
        )
        if not quiet:
            typer.echo(_timings(s), err=True)
    typer.echo(f"wrote {Path(out) / 'cohort.csv'}", err=True)


def register_demo(root: typer.Typer) -> None:
    """Add the top-level ``demo`` command."""

    @root.command()
    def demo(
        out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("demo-output"),
        size: Annotated[
            int, typer.Option(help="Phantom width in pixels at 0.5 µm/px (height 0.6 × width).")
        ] = 4000,
        seed: Annotated[int, typer.Option(help="Phantom random seed.")] = 0,
        backend: Backend = "auto",
        quiet: Quiet = False,
    ) -> None:
        """Make a synthetic kidney slide with known truth and run the full kidney pipeline;
        also write a synthetic clinical cohort (OUT/stats-example) for ``shindan stats``."""
        from shindan.kidney.demo import run_demo
        from shindan.stats.example import check_example_folder, write_example

        set_quiet(quiet)
        check_example_folder(out / "stats-example")  # before any work
        result, truth = run_demo(out, size=size, seed=seed, backend=backend)
        write_example(out / "stats-example")
        s = result.scores
        typer.echo(
            f"fibrosis {_fmt(s['interstitial_fibrosis'], 3)} "
            f"(truth {_fmt(truth['interstitial_fibrosis'], 3)})"
            f"  inflammation {_fmt(s['inflammation'], 4)} (truth {_fmt(truth['inflammation'], 4)})"
            f"  glomeruli {_glomeruli(s)} (truth {truth['glomeruli']['count']}){_warnings(s)}",
            err=True,
        )
        if not quiet:
            typer.echo(_timings(s), err=True)
        typer.echo(f"report: {result.out_dir / 'report.html'}", err=True)
        typer.echo(f"synthetic cohort for shindan stats: {out / 'stats-example'}", err=True)


def _register_train() -> None:
    # training.cli imports no torch at module level: `kidney train` is listed on every install
    # and says which extra it needs when run without it
    from shindan.kidney.training.cli import register

    register(app)


_register_train()
