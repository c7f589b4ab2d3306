import csv
import json

import numpy as np
import pytest
from PIL import Image
from skimage.draw import disk

from shindan.engine import load_predictor
from shindan.errors import InputError
from shindan.io.slide import ImageSlide
from shindan.kidney.pipeline import KidneyModels, ScoreAccumulator, analyze, detect_nuclei
from tests.helpers import smooth_image, tiny_seg_model


def fake_nuclei(image: np.ndarray, mpp: float) -> np.ndarray:
    """Dark blobs as instances: a stand-in for the nuclei model in pipeline plumbing tests."""
    from skimage import measure

    return measure.label(image.mean(axis=2) < 60).astype(np.int32)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    card = tiny_seg_model(
        tmp_path_factory.mktemp("m") / "comp", classes=5, size=64, overlap=16, mpp=2.0
    )
    return KidneyModels(load_predictor(card, "onnx"), None, None)


def test_nuclei_counted_only_in_interstitium(tmp_path):
    image = np.full((200, 200, 3), 230, np.uint8)
    centres = [(50, 50), (150, 50), (50, 150), (150, 150)]
    for r, c in centres:
        image[disk((r, c), 6)] = 30
    slide = ImageSlide.from_array(image, mpp=0.5, name="x.png")
    labels = np.full((100, 100), 3, np.uint8)  # label grid at 1.0 µm/px
    labels[:, :50] = 1  # left half interstitium
    acc = ScoreAccumulator()
    stats = detect_nuclei(
        slide,
        labels,
        1.0,
        fake_nuclei,
        0.5,
        tmp_path / "n.geojson",
        acc,
        block=128,
        margin=16,
        progress=False,
    )
    # Block (x 128..200) has no interstitium: skipped, so its nuclei are not even detected.
    assert stats == {"count": 2, "interstitial_count": 2}
    stats = detect_nuclei(
        slide,
        labels,
        1.0,
        fake_nuclei,
        0.5,
        tmp_path / "n.geojson",
        ScoreAccumulator(),
        block=200,
        margin=16,
        progress=False,
    )
    assert stats == {"count": 4, "interstitial_count": 2}
    area = 2 * disk((0, 0), 6)[0].size * 0.25
    assert acc.interstitial_nuclei_um2 == pytest.approx(area)
    feats = json.loads((tmp_path / "n.geojson").read_text())["features"]
    names = sorted(f["properties"]["classification"]["name"] for f in feats)
    assert names == ["interstitial", "interstitial", "other", "other"]
    xs = sorted(np.mean(np.array(f["geometry"]["coordinates"][0])[:, 0]) for f in feats)
    assert xs[0] == pytest.approx(50.5, abs=1.5) and xs[-1] == pytest.approx(150.5, abs=1.5)


def test_analyze_writes_contract_outputs(tmp_path, models):
    image = smooth_image(300, 420, seed=2)
    image[disk((100, 100), 5)] = 20
    Image.fromarray(image).save(tmp_path / "case A.png")
    # b.jpg records 1 µm/px (25,400 dpi): --mpp is for files that record none
    Image.fromarray(image[:200]).save(tmp_path / "b.jpg", dpi=(25400, 25400))
    out = tmp_path / "out"
    results = analyze(
        [tmp_path / "case A.png", tmp_path / "b.jpg"], out, mpp=0.5, progress=False, models=models
    )
    assert [r.case for r in results] == ["case A", "b"]
    expected = [((300, 420), 0.5, "given"), ((200, 420), 1.0, "file")]
    for r, (shape, mpp, source) in zip(results, expected, strict=True):
        d = out / r.case
        for f in (
            "scores.json",
            "compartments.png",
            "nuclei.geojson",
            "overlay.png",
            "report.html",
        ):
            assert (d / f).exists(), f
        comp = np.asarray(Image.open(d / "compartments.png"))
        assert comp.shape == shape and comp.dtype == np.uint8 and comp.max() <= 4
        s = json.loads((d / "scores.json").read_text())
        assert (s["mpp"], s["input_mpp_source"]) == (mpp, source)
        assert set(s["areas_um2"]) == {
            "non_tissue",
            "interstitium",
            "glomerulus",
            "tubule",
            "vessel",
        }
        assert sum(s["areas_um2"].values()) == pytest.approx(shape[0] * shape[1] * mpp**2, rel=1e-6)
        assert {"count", "sclerosed"} <= set(s["glomeruli"])
        assert "tiny-seg" in s["model"]
        html = (d / "report.html").read_text()
        assert "Interstitial fibrosis" in html and "data:image/jpeg;base64" in html
        assert "http://" not in html and "https://" not in html  # opens offline
    rows = list(csv.DictReader(open(out / "cohort.csv")))
    assert [r["case"] for r in rows] == ["case A", "b"]
    assert {"interstitial_fibrosis", "inflammation"} <= set(rows[0])
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_bad_input_fails_before_any_output(tmp_path, models):
    Image.fromarray(smooth_image(64, 64)).save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"garbage")
    with pytest.raises(InputError, match="bad.png"):
        analyze(
            [tmp_path / "ok.png", tmp_path / "bad.png"],
            tmp_path / "out",
            mpp=0.5,
            progress=False,
            models=models,
        )
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="--mpp"):
        analyze([tmp_path / "ok.png"], tmp_path / "out", progress=False, models=models)


def test_reruns_keep_users_files_and_earlier_cohort_rows(tmp_path, models):
    img = tmp_path / "in"
    img.mkdir()
    for name in ("a", "b"):
        Image.fromarray(smooth_image(64, 96, seed=len(name))).save(img / f"{name}.png")
    out = tmp_path / "out"
    analyze([img / "a.png"], out, mpp=0.5, progress=False, models=models)
    analyze([img / "b.png"], out, mpp=0.5, progress=False, models=models)
    rows = list(csv.DictReader(open(out / "cohort.csv")))
    assert [r["case"] for r in rows] == ["a", "b"]  # a's row survives b's run
    analyze([img / "a.png"], out, mpp=0.5, progress=False, models=models)  # our own files: ok
    assert [r["case"] for r in csv.DictReader(open(out / "cohort.csv"))] == ["b", "a"]
    (out / "a" / "notes.txt").write_text("pathologist's notes")
    before = (out / "a" / "scores.json").read_text()
    with pytest.raises(InputError, match="notes.txt"):
        analyze([img / "b.png", img / "a.png"], out, mpp=0.5, progress=False, models=models)
    assert (out / "a" / "notes.txt").read_text() == "pathologist's notes"
    assert (out / "a" / "scores.json").read_text() == before
    (tmp_path / "file").write_text("x")
    for bad in (tmp_path / "file", tmp_path / "file" / "sub"):
        with pytest.raises(InputError, match="file"):
            analyze([img / "a.png"], bad, mpp=0.5, progress=False, models=models)


def test_cohort_rows_name_their_input(tmp_path, models):
    for sub in ("x", "y"):  # same file name twice: cases image and image_2
        (tmp_path / sub).mkdir()
        Image.fromarray(smooth_image(64, 96)).save(tmp_path / sub / "image.png")
    out = tmp_path / "out"
    (out / "old").mkdir(parents=True)  # a case from a run before the input column
    (out / "old" / "scores.json").write_text("{}")
    (out / "cohort.csv").write_text(
        "case,interstitial_fibrosis,inflammation,mpp\nold,0.2,0.01,0.5\n"
    )
    files = [tmp_path / "x" / "image.png", tmp_path / "y" / "image.png"]
    analyze(files, out, mpp=0.5, progress=False, models=models)
    rows = list(csv.DictReader(open(out / "cohort.csv")))
    assert [(r["case"], r["input"]) for r in rows] == [
        ("old", ""),
        ("image", str(files[0])),
        ("image_2", str(files[1])),
    ]
    assert rows[0]["interstitial_fibrosis"] == "0.2"  # the earlier row is kept as it was
    (out / "cohort.csv").write_text("my,own,table\n")  # a user's file of that name
    with pytest.raises(InputError, match="not written by shindan"):
        analyze(files[:1], out, mpp=0.5, progress=False, models=models)
    assert (out / "cohort.csv").read_text() == "my,own,table\n"


def test_inputs_with_one_name_get_distinct_case_folders(tmp_path, models):
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        Image.fromarray(smooth_image(64, 64, seed=1)).save(tmp_path / sub / "slide.png")
    Image.fromarray(smooth_image(64, 64, seed=2)).save(tmp_path / "slide_2.png")
    files = [tmp_path / "x" / "slide.png", tmp_path / "y" / "slide.png", tmp_path / "slide_2.png"]
    results = analyze(files, tmp_path / "out", mpp=0.5, progress=False, models=models)
    assert [r.case for r in results] == ["slide", "slide_3", "slide_2"]
    for r, f in zip(results, files, strict=True):
        assert json.loads((r.out_dir / "scores.json").read_text())["input"]["path"] == str(f)


def test_cli_line_for_a_case_without_scores():
    from shindan.kidney.cli import _fmt

    assert _fmt(None, 3).startswith("n/a") and _fmt(0.12345, 3) == "0.123"


def test_a_nucleus_on_a_block_edge_counts_once(tmp_path):
    """Two blocks that segment one nucleus differently (centroids on either side of their
    edge) must not both keep it."""
    from skimage import measure

    image = np.full((128, 256, 3), 230, np.uint8)
    image[disk((64, 126), 9)] = 30  # straddles the block edge at x = 128
    slide = ImageSlide.from_array(image, mpp=0.5, name="x.png")
    labels = np.ones((128, 256), np.uint8)  # all interstitium, same grid

    def blinkered(rgb: np.ndarray, mpp: float) -> np.ndarray:
        # sees nothing in the first 22 columns of its padded block, so the block right of
        # the edge finds only the nucleus's right part, with its centroid in that block
        out = measure.label(rgb.mean(axis=2) < 60).astype(np.int32)
        out[:, :22] = 0
        return measure.label(out > 0).astype(np.int32)

    stats = detect_nuclei(
        slide, labels, 0.5, blinkered, 0.5, tmp_path / "n.geojson", ScoreAccumulator(),
        block=128, margin=24, progress=False,
    )  # fmt: skip
    assert stats["count"] == 1
    assert len(json.loads((tmp_path / "n.geojson").read_text())["features"]) == 1


def test_nucleus_outlines_stay_inside_the_slide(tmp_path):
    from skimage import measure, morphology

    image = np.full((100, 100, 3), 230, np.uint8)
    image[disk((50, 97), 6, shape=image.shape[:2])] = 30  # cut by the right edge
    slide = ImageSlide.from_array(image, mpp=0.5, name="x.png")

    def bloated(rgb: np.ndarray, mpp: float) -> np.ndarray:  # outlines a little too wide
        dark = morphology.binary_dilation(rgb.mean(axis=2) < 60, morphology.disk(3))
        return measure.label(dark).astype(np.int32)

    detect_nuclei(
        slide, np.ones((100, 100), np.uint8), 0.5, bloated, 0.5, tmp_path / "n.geojson",
        ScoreAccumulator(), block=100, margin=16, progress=False,
    )  # fmt: skip
    (feat,) = json.loads((tmp_path / "n.geojson").read_text())["features"]
    xy = np.array(feat["geometry"]["coordinates"][0])
    assert xy.max() <= 100 and xy.min() >= 0 and xy[:, 0].max() == 100


def test_greyscale_images_are_refused_before_any_output(tmp_path, models):
    Image.fromarray(smooth_image(64, 64)).convert("L").save(tmp_path / "grey.png")
    with pytest.raises(InputError, match="greyscale"):
        analyze([tmp_path / "grey.png"], tmp_path / "out", mpp=0.5, progress=False, models=models)
    assert not (tmp_path / "out").exists()
