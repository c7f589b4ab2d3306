"""``shindan demo``: a phantom slide with known truth through the whole kidney pipeline."""

from __future__ import annotations

from pathlib import Path

from shindan.errors import InputError
from shindan.kidney.pipeline import (
    CASE_FILES,
    CaseResult,
    KidneyModels,
    analyze,
    copy_truth,
    is_cohort_header,
)
from shindan.util.atomic import check_output_file, check_replaceable

# Below this width (at 0.5 µm/px, 1 mm) a phantom holds too little tissue to score.
MIN_SIZE = 2000
# Default width (2 x 1.2 mm at 0.5 µm/px): scores within 0.035 of truth for seeds 0 and 1 in
# about a quarter of the time of 6000 px (docs/design.md, analysis speed).
DEFAULT_SIZE = 4000


def demo_notes(models: KidneyModels) -> list[str]:
    """The demo's headline warning: a phantom of the family a model was trained on scores
    better than real slides would, so its scores are an upper bound."""
    trained_on = [
        p.card.name
        for p in (models.compartments, models.nuclei, models.glomerulosclerosis)
        if p is not None
        and (
            p.card.data["training"].get("includes_synthetic")
            or p.card.data["training"].get("synthetic")
        )
    ]
    if not trained_on:
        return []
    return [
        f"demo: the training data of {', '.join(trained_on)} includes synthetic data, "
        "shindan.slide_phantom biopsies of this very family: the scores on this phantom are an "
        "upper bound of what the models do on real slides"
    ]


def run_demo(
    out: str | Path,
    *,
    size: int = DEFAULT_SIZE,
    seed: int = 0,
    backend: str = "auto",
    progress: bool = True,
) -> tuple[CaseResult, dict]:
    """Write ``out/phantom.tiff``, analyse it into ``out/phantom/`` and write ``truth.json``.

    The truth is computed on the same grid as ``compartments.png`` so the two compare pixel
    for pixel.
    """
    from shindan.slide_phantom import truth, write_phantom

    if size < MIN_SIZE:
        raise InputError(f"--size must be at least {MIN_SIZE} px (a biopsy-sized phantom)")
    out = Path(out)
    check_replaceable(out / "phantom", CASE_FILES)  # before any work, as kidney analyze
    check_output_file(out / "cohort.csv", is_cohort_header, force_option=False)
    out.mkdir(parents=True, exist_ok=True)
    slide_path = out / "phantom.tiff"
    scene = write_phantom(slide_path, size, int(size * 0.6), mpp=0.5, seed=seed, progress=progress)
    models = KidneyModels.load(backend=backend)
    (result,) = analyze(
        [slide_path],
        out,
        backend=backend,
        progress=progress,
        models=models,
        notes=demo_notes(models),
    )
    true = truth(scene, mpp=result.scores["mpp"])
    copy_truth(true, out / "truth.json")
    copy_truth(true, out / result.case / "truth.json")
    return result, true
