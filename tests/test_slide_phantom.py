"""The synthetic kidney phantom: seamless tiles, exact truth, readable pyramidal TIFFs."""

from __future__ import annotations

import numpy as np
import pytest

from shindan.errors import InputError
from shindan.slide_phantom import (
    make_scene,
    render_labels,
    render_nuclei,
    render_rgb,
    truth,
    truth_maps,
    write_phantom,
)


@pytest.fixture(scope="module")
def scene():
    return make_scene(1024, 1024, mpp=0.5, seed=1)


@pytest.mark.parametrize("ds", [1, 2])
def test_tile_equals_crop_of_bigger_render(scene, ds):
    big_rgb = render_rgb(scene, (0, 0, 1024, 1024), ds)
    big_lab = render_labels(scene, (0, 0, 1024, 1024), ds)
    big_nuc = render_nuclei(scene, (0, 0, 1024, 1024), ds)
    assert big_rgb.shape == (1024 // ds, 1024 // ds, 3)
    for x, y, w, h in [(256, 320, 256, 256), (512, 256, 300, 200), (96, 600, 512, 302)]:
        sl = np.s_[y // ds : y // ds + -(-h // ds), x // ds : x // ds + -(-w // ds)]
        np.testing.assert_array_equal(render_rgb(scene, (x, y, w, h), ds), big_rgb[sl])
        np.testing.assert_array_equal(render_labels(scene, (x, y, w, h), ds), big_lab[sl])
        np.testing.assert_array_equal(render_nuclei(scene, (x, y, w, h), ds), big_nuc[sl])


def test_output_size_rounds_up(scene):
    assert render_rgb(scene, (10, 20, 101, 51), 2).shape == (26, 51, 3)
    assert render_labels(scene, (10, 20, 101, 51), 4).shape == (13, 26)


def test_labels_codes_and_content(scene):
    labels, nuclei = truth_maps(scene)
    assert labels.shape == (1024, 1024) and labels.dtype == np.uint8
    assert nuclei.dtype == np.int32
    assert set(np.unique(labels)) <= {0, 1, 2, 3, 4}
    # Tissue, tubules, interstitium and at least one glomerulus are all present.
    for code in (0, 1, 2, 3):
        assert (labels == code).mean() > 0.01, code
    assert (nuclei[labels == 0] == 0).all()  # no nucleus on glass


def test_truth_arithmetic_matches_maps(scene):
    t = truth(scene)
    labels, nuclei = truth_maps(scene)
    px = scene.mpp**2
    for code, name in enumerate(["non_tissue", "interstitium", "glomerulus", "tubule", "vessel"]):
        assert t["areas_um2"][name] == pytest.approx((labels == code).sum() * px)
    ti = (labels == 1).sum() + (labels == 3).sum()
    assert t["interstitial_fibrosis"] == pytest.approx((labels == 1).sum() / ti)
    assert t["inflammation"] == pytest.approx(((nuclei > 0) & (labels == 1)).sum() / ti)
    ids = np.unique(nuclei[nuclei > 0])
    assert t["nuclei"]["count"] == len(ids)
    assert t["nuclei"]["interstitial_count"] == len(np.unique(nuclei[(nuclei > 0) & (labels == 1)]))
    assert t["glomeruli"]["count"] >= 1
    assert t["mpp"] == scene.mpp and t["seed"] == 1
    assert 0 < t["inflammation"] < 0.1
    # A coarser analysis grid gives about the same fractions.
    t2 = truth(scene, mpp=1.0)
    assert t2["mpp"] == 1.0
    assert t2["interstitial_fibrosis"] == pytest.approx(t["interstitial_fibrosis"], abs=0.02)


def test_nuclei_ids_are_instances(scene):
    nuclei = render_nuclei(scene, (0, 0, 1024, 1024))
    ids, area = np.unique(nuclei[nuclei > 0], return_counts=True)
    assert len(ids) > 200
    # Nuclei are a few µm across: 3-10 µm diameter at 0.5 µm/px.
    assert 20 < np.median(area) < 350


@pytest.mark.parametrize("target", [0.15, 0.3, 0.5])
def test_fibrosis_close_to_target(target):
    t = truth(make_scene(1536, 1024, 0.5, fibrosis=target, seed=2), mpp=1.0)
    assert abs(t["interstitial_fibrosis"] - target) < 0.05
    if target >= 0.3:  # enough interstitium to hold the default inflammation
        assert abs(t["inflammation"] - 0.03) < 0.005


def test_fibrosis_parameter_is_monotonic():
    values = [
        truth(make_scene(768, 768, 0.5, fibrosis=f, seed=4), mpp=1.0)["interstitial_fibrosis"]
        for f in (0.1, 0.3, 0.6)
    ]
    assert values[0] < values[1] < values[2]


def test_inflammation_parameter_scales_interstitial_nuclei():
    low = truth(make_scene(768, 768, 0.5, inflammation=0.01, seed=5))
    high = truth(make_scene(768, 768, 0.5, inflammation=0.08, seed=5))
    assert high["inflammation"] > 2 * low["inflammation"]
    assert high["nuclei"]["interstitial_count"] > low["nuclei"]["interstitial_count"]


def test_deterministic_by_seed():
    a = render_rgb(make_scene(512, 512, seed=7), (0, 0, 512, 512))
    b = render_rgb(make_scene(512, 512, seed=7), (0, 0, 512, 512))
    c = render_rgb(make_scene(512, 512, seed=8), (0, 0, 512, 512))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 5


def test_stains_differ():
    pas = render_rgb(make_scene(512, 512, seed=3, stain="pas"), (0, 0, 512, 512))
    he = render_rgb(make_scene(512, 512, seed=3, stain="he"), (0, 0, 512, 512))
    lab = render_labels(make_scene(512, 512, seed=3, stain="he"), (0, 0, 512, 512))
    tissue = lab > 0
    assert np.abs(pas[tissue].astype(int) - he[tissue].astype(int)).mean() > 10


def test_artifacts_are_not_tissue():
    box = (0, 0, 2048, 2048)
    clean = make_scene(2048, 2048, 0.5, seed=11)
    dirty = make_scene(2048, 2048, 0.5, seed=11, artifacts=True)
    assert len(dirty.dust["x"]) > 0 and len(dirty.pen["x"]) > 0
    a = render_rgb(clean, box, 4).astype(int)
    b = render_rgb(dirty, box, 4).astype(int)
    changed = np.abs(a - b).sum(-1) > 30
    assert changed.sum() > 200  # the pen stroke and dust are visible
    labels = render_labels(dirty, box, 4)
    np.testing.assert_array_equal(labels, render_labels(clean, box, 4))
    assert (labels[changed] == 0).all()


def test_write_phantom_opens_with_levels_and_mpp(tmp_path):
    from shindan.io import open_slide

    out = tmp_path / "phantom.tif"
    scene = write_phantom(out, 2500, 1200, mpp=0.25, tile=256, progress=False, seed=2)
    assert [p.name for p in tmp_path.iterdir()] == ["phantom.tif"]
    with open_slide(out) as slide:
        assert slide.format == "generic-tiff"
        assert slide.mpp == pytest.approx(0.25)
        assert slide.level_dimensions == [(2500, 1200), (1250, 600), (625, 300)]
        region = slide.read_region((512, 256), 0, (256, 256)).astype(int)
        low = slide.read_region((0, 0), 1, (1250, 600)).astype(int)
    expected = render_rgb(scene, (512, 256, 256, 256)).astype(int)
    assert np.abs(region - expected).mean() < 4  # JPEG q90
    expected_low = render_rgb(scene, (0, 0, 2500, 1200), 2).astype(int)
    assert np.abs(low - expected_low).mean() < 4


def test_write_phantom_leaves_nothing_on_failure(tmp_path, monkeypatch):
    import shindan.slide_phantom.writer as writer

    calls = {"n": 0}
    real = writer.render

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(writer, "render", flaky)
    with pytest.raises(RuntimeError):
        write_phantom(tmp_path / "x.tif", 1024, 1024, tile=256, progress=False)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError):
        write_phantom(tmp_path / "missing" / "x.tif", 512, 512, progress=False)


def test_write_phantom_unwritable_folder():
    with pytest.raises(InputError):
        write_phantom("/proc/phantom.tif", 256, 256, progress=False)


def test_bad_parameters():
    with pytest.raises(InputError):
        make_scene(1024, 1024, fibrosis=1.5)
    with pytest.raises(InputError):
        make_scene(1024, 1024, stain="trichrome")
    with pytest.raises(InputError):
        make_scene(10, 10)
