"""What a case's headline says besides its scores: stain and model domains, regions for
review, adequacy, implausible (non-kidney) cases; in scores.json, cohort.csv, report, CLI."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shindan.kidney.adequacy import adequacy, count_arteries
from shindan.kidney.checks import glomerulus_summary
from shindan.kidney.domain import check_domains
from shindan.kidney.plausibility import plausibility_warnings
from shindan.models import load_card

SHINDAN = str(Path(sys.executable).with_name("shindan"))


def shipped_cards():
    return {
        role: load_card(name).data
        for role, name in (
            ("compartments", "kidney-compartments"),
            ("nuclei", "nuclei"),
            ("glomerulosclerosis", "glomerulosclerosis"),
        )
    }


def test_pas_sclerosis_model_on_he_is_outside_its_domain():
    domains, outside = check_domains(shipped_cards(), "H&E", 0.25)
    assert domains["compartments"]["in_domain"] and domains["nuclei"]["in_domain"]
    assert domains["glomerulosclerosis"]["in_domain"] is False
    assert list(outside) == ["glomeruli.sclerosed"]
    assert "PAS" in outside["glomeruli.sclerosed"][0]
    # on PAS the H&E nuclei model is the one outside, and with it the inflammation score
    _, outside = check_domains(shipped_cards(), "PAS", 0.25)
    assert set(outside) == {"inflammation"}
    # a stain not recognised is outside every model's domain
    _, outside = check_domains(shipped_cards(), "other", 0.25)
    assert set(outside) >= {"interstitial_fibrosis", "inflammation", "glomeruli.sclerosed"}


def test_undecided_between_he_and_pas():
    # HE_001, a pale H&E, reads H&E 0.35 / PAS 0.65: "other", but one of the two
    domains, outside = check_domains(shipped_cards(), "other", 0.25, ("PAS", "H&E"))
    assert domains["compartments"]["in_domain"]  # trained on both
    assert set(outside) == {"inflammation", "glomeruli.sclerosed"}
    assert "PAS or H&E (undecided)" in outside["glomeruli.sclerosed"][0]


def test_coarse_input_is_outside_the_scale_of_training():
    _, outside = check_domains(shipped_cards(), "H&E", 4.0)
    assert "4 µm/px" in " ".join(outside["interstitial_fibrosis"])


def test_regions_for_review_are_not_counted():
    items = [
        {"sclerosed": True, "review": None},
        {"sclerosed": False, "review": None},
        {"sclerosed": False, "review": "wider than a glomerulus (669 µm > 400)"},
    ]
    s = glomerulus_summary(items, classified=True, outside=["trained on PAS only"])
    assert (s["count"], s["review"], s["sclerosed"], s["sclerosed_fraction"]) == (2, 1, 1, 0.5)
    assert [g["sclerosed_outside_domain"] for g in s["items"]] == [True, True, True]


def test_cmu1_like_case_is_flagged():
    # CMU-1 (not kidney) as the shipped models segment it: 59% "glomerulus", one region of
    # 669 µm marked for review
    areas = {
        "non_tissue": 990432.85,
        "interstitium": 40399.17,
        "glomerulus": 379625.43,
        "tubule": 165280.64,
        "vessel": 64366.76,
    }
    items = [{"review": None}] * 3 + [{"review": "wider than a glomerulus (669 µm > 400)"}]
    warnings = plausibility_warnings(areas, items, 35.6)
    assert any("669 µm" in w and "not counted" in w for w in warnings)
    assert any("glomeruli cover 58%" in w for w in warnings)
    # kidney-like: 13% glomerulus, tubules 40 µm across
    kidney = {"interstitium": 2e5, "glomerulus": 1e5, "tubule": 4.5e5, "vessel": 0.0}
    assert plausibility_warnings(kidney, [{"review": None}] * 3, 40.0) == []
    assert any("no glomerulus" in w for w in plausibility_warnings(kidney, [], 40.0))
    assert any(
        "tubule regions measure 12 µm" in w for w in plausibility_warnings(kidney, items[:3], 12.0)
    )


def test_banff_adequacy():
    assert adequacy(10, 2)["verdict"] == "adequate"
    assert adequacy(9, 2)["verdict"] == "minimal"
    assert adequacy(7, 1)["verdict"] == "minimal"
    assert adequacy(12, 0)["verdict"] == "unsatisfactory"
    assert "Banff 97" in adequacy(0, 0)["rule"]
    labels = np.zeros((200, 200), np.uint8)
    labels[10:50, 10:50] = 4  # 45 µm across at 1 µm/px: an arteriole
    labels[100:180, 100:180] = 4  # 90 µm: an artery
    assert count_arteries(labels, 1.0) == 1


def _tiny_models(tmp_path):
    from shindan.kidney.labels import CLASSES
    from tests.helpers import tiny_seg_model

    comp = tiny_seg_model(tmp_path / "comp", classes=CLASSES, size=64, mpp=2.0, name="my-comp")
    return comp


def test_analyze_writes_checks_everywhere(tmp_path):
    from tests.helpers import smooth_image

    Image.fromarray(smooth_image(120, 160)).save(tmp_path / "a.png")
    comp = _tiny_models(tmp_path)
    out = tmp_path / "o"
    p = subprocess.run(
        [SHINDAN, "kidney", "analyze", str(tmp_path / "a.png"), "--mpp", "0.5", "--out", str(out),
         "--compartments-model", str(comp.directory), "--quiet"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    s = json.loads((out / "a" / "scores.json").read_text())
    # the contract's keys stay
    assert {
        "interstitial_fibrosis",
        "inflammation",
        "areas_um2",
        "glomeruli",
        "mpp",
        "model",
    } <= set(s)
    assert {"count", "sclerosed", "review", "sclerosed_fraction"} <= set(s["glomeruli"])
    assert s["stain"]["stain"] in ("H&E", "PAS", "other")
    assert s["adequacy"]["verdict"] == "unsatisfactory" and "Banff" in s["adequacy"]["rule"]
    # a user's model without a stated domain is said to be unchecked, in the headline
    assert any("states no domain" in w for w in s["warnings"])
    assert s["warnings"] and all(f"warning: {w}" in p.stderr for w in s["warnings"])
    assert "adequacy unsatisfactory" in p.stderr
    row = next(csv.DictReader(open(out / "cohort.csv")))
    for col in ("arteries", "adequacy", "glomeruli_review", "glomeruli_sclerosed_fraction",
                "stain", "outside_domain", "warnings"):  # fmt: skip
        assert col in row
    html = (out / "a" / "report.html").read_text()
    assert 'id="warnings"' in html and "Adequacy (Banff)" in html
    assert "Stain recognised" in html


@pytest.mark.slow
def test_he_tile_sclerosis_calls_are_marked(shared_data, tmp_path):
    from shindan.kidney.pipeline import analyze

    # HE_001 (H&E): the PAS-trained glomerulosclerosis model called its normal glomerulus
    # sclerosed at p = 0.90 without a word
    (r,) = analyze(
        [shared_data / "kidney/tiles-aapi-he/HE_001/image.jpg"], tmp_path, mpp=0.25,
        progress=False,
    )  # fmt: skip
    s = r.scores
    assert s["stain"]["stain"] != "PAS"
    assert "glomeruli.sclerosed" in s["outside_domain"]
    assert s["glomeruli"]["items"]
    assert all(g["sclerosed_outside_domain"] for g in s["glomeruli"]["items"])
    assert any(w.startswith("glomeruli.sclerosed outside") for w in s["warnings"])
    html = (tmp_path / r.case / "report.html").read_text()
    assert "outside domain" in html


@pytest.mark.slow
def test_non_kidney_slide_is_flagged_in_the_headline(shared_data, tmp_path):
    from shindan.kidney.pipeline import analyze

    (r,) = analyze([shared_data / "slides/CMU-1-Small-Region.svs"], tmp_path, progress=False)
    s = r.scores
    assert s["plausibility"]["kidney_like"] is False
    assert s["glomeruli"]["count"] == sum(not g["review"] for g in s["glomeruli"]["items"])
    assert all(g["diameter_um"] <= 400 for g in s["glomeruli"]["items"] if not g["review"])
    if any(g["review"] for g in s["glomeruli"]["items"]):  # oversized regions are not counted
        assert any("not counted" in w for w in s["warnings"])
    html = (tmp_path / r.case / "report.html").read_text()
    assert html.index('id="warnings"') < html.index("<h2>Scores</h2>")


def test_demo_says_includes_synthetic_data_and_upper_bound():
    from shindan.kidney.demo import demo_notes
    from shindan.kidney.pipeline import KidneyModels

    models = KidneyModels.load()
    # the compartment model was trained with shindan.slide_phantom biopsies: not "false" any more
    assert models.versions()["kidney-compartments"]["synthetic_training_data"] is True
    (note,) = demo_notes(models)
    assert "includes synthetic data" in note and "upper bound" in note
