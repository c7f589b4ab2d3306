"""Nuclei training data: targets from polygons and from masks, sampler, segment_nuclei."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shindan.io.annotations import IGNORE
from shindan.io.inputs import IMAGE_SUFFIXES, pair_annotations
from shindan.nuclei.data import (
    MERGED,
    instance_targets,
    label_sets,
    load_sample,
    make_sampler,
    mask_instances,
)


def test_instance_targets_rim_and_unknown() -> None:
    inst = np.zeros((20, 20), np.int32)
    inst[2:8, 2:8] = 1
    inst[2:8, 8:14] = 2  # touching neighbour
    t = instance_targets(inst, unknown=np.pad(np.ones((2, 2), bool), ((18, 0), (18, 0))))
    assert t[4, 4] == 1 and t[2, 4] == 2 and t[0, 0] == 0 and t[19, 19] == IGNORE
    assert t[4, 7] == 2 and t[4, 8] == 2  # the touching line is boundary on both sides


def test_instance_targets_thick_rim() -> None:
    inst = np.zeros((20, 20), np.int32)
    inst[2:12, 2:8] = 1
    inst[2:12, 8:14] = 2  # touching neighbour
    t = instance_targets(inst, boundary_px=2)
    assert t[6, 3] == 2 and t[6, 4] == 1  # two pixels in from the background...
    assert t[6, 6] == 2 and t[6, 5] == 1  # ...and from the neighbour
    assert t[6, 8] == 2 and t[6, 9] == 2 and t[6, 10] == 1
    assert (t[inst == 0] == 0).all()
    thin = instance_targets(inst)
    assert (t == 2).sum() > (thin == 2).sum()


def test_instance_targets_core_one_centre_per_nucleus() -> None:
    from scipy import ndimage

    inst = np.zeros((24, 40), np.int32)
    inst[2:22, 2:20] = 1
    inst[2:22, 20:38] = 2  # touching neighbour
    t = instance_targets(inst, boundary_px=2, core=0.5)
    cores, n = ndimage.label(t == 3)
    assert n == 2 and set(np.unique(inst[t == 3])) == {1, 2}
    # the two centres are kept apart by rims and interiors, not just a 1-px line
    assert not (t[:, 16:24] == 3).any()
    assert ((t == 1) | (t == 3)).sum() == (instance_targets(inst, boundary_px=2) == 1).sum()
    assert (instance_targets(inst, boundary_px=2, core=0.9) == 3).sum() < (t == 3).sum()
    assert label_sets(core=True) == {MERGED: [1, 2, 3]} and label_sets() == {MERGED: [1, 2]}


def test_mask_instances_marks_merged_blobs_unknown() -> None:
    yy, xx = np.mgrid[:60, :100]
    m = ((yy - 20) ** 2 + (xx - 15) ** 2 < 64) | ((yy - 20) ** 2 + (xx - 30) ** 2 < 64)
    for cx in (50, 70, 90):  # single nuclei of the same size
        m |= (yy - 45) ** 2 + (xx - cx) ** 2 < 64
    m |= (yy - 45) ** 2 + (xx - 20) ** 2 < 81
    lab, unknown = mask_instances(m)
    assert lab.max() == 5
    assert unknown[20, 22] and unknown[20, 15]  # the touching pair, whole
    assert not unknown[45, 50] and not unknown[45, 20]


def test_mask_sample_merged_blob_is_partial_nucleus(tmp_path: Path) -> None:
    """A merged blob of a binary mask: exact background around it, exact boundary on its rim
    against the background, "interior or boundary" inside; single nuclei stay exact."""
    import torch
    from PIL import Image

    from shindan.engine.train_segmenter import dice_ce_loss

    yy, xx = np.mgrid[:80, :120]
    m = ((yy - 25) ** 2 + (xx - 20) ** 2 < 100) | ((yy - 25) ** 2 + (xx - 38) ** 2 < 100)
    for cx in (60, 85, 108):
        m |= (yy - 60) ** 2 + (xx - cx) ** 2 < 100
    m |= (yy - 60) ** 2 + (xx - 25) ** 2 < 121
    Image.fromarray(np.full((80, 120, 3), 200, np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(m.astype(np.uint8) * 255).save(tmp_path / "a_mask.png")
    s = load_sample(tmp_path / "a.png", tmp_path / "a_mask.png", 0.25, 0.25, boundary_px=2)
    t = s.target
    assert t[25, 29] == MERGED and t[25, 20] == MERGED  # the neck and a centre of the pair
    assert t[25, 11] == 2 and t[25, 47] == 2  # its rim against background is exact
    assert t[60, 60] == 1 and t[60, 51] == 2  # a single nucleus: exact interior and rim
    assert t[5, 5] == 0 and not (t == IGNORE).any()
    assert set(np.unique(t[~m])) == {0}
    # with a core class: single nuclei get a centre, the merged blob none (its centres are
    # not known either)
    c = load_sample(tmp_path / "a.png", tmp_path / "a_mask.png", 0.25, 0.25, 2, core=0.5).target
    assert c[60, 60] == 3 and c[60, 51] == 2 and c[25, 20] == MERGED
    assert not (c[:45] == 3).any() and ((c == 3) | (c == 1)).sum() == (t == 1).sum()
    # the loss lets a merged pixel be interior or boundary, but not background
    logits = torch.zeros(1, 3, 1, 2)
    logits[0, 0, 0, 1] = 5.0  # second pixel: confidently background
    for cls in (1, 2):
        logits[0, cls, 0, 0] = 5.0  # first pixel: confidently interior or boundary
        good = dice_ce_loss(logits[..., :1], torch.tensor([[[MERGED]]]), label_sets=label_sets())
        assert float(good) < 0.02
        logits[0, cls, 0, 0] = 0.0
    bad = dice_ce_loss(logits[..., 1:], torch.tensor([[[MERGED]]]), label_sets=label_sets())
    assert float(bad) > 4.0


def test_real_monuseg_pairs_and_sampler(shared_data: Path) -> None:
    base = shared_data / "nuclei/monuseg-train"
    pairs = pair_annotations(
        [base / "images"], [base / "annotations", base / "masks"], suffixes=IMAGE_SUFFIXES
    )
    assert len(pairs) == 30
    kinds = {a.suffix for _, a in pairs}
    assert kinds == {".geojson", ".xml", ".png"}
    by = dict((p.stem, a) for p, a in pairs)
    s = load_sample(
        base / "images/TCGA-B0-5698-01Z-00-DX1.jpg", by["TCGA-B0-5698-01Z-00-DX1"], 0.2527, 0.5
    )
    assert s.image.shape == (505, 505, 3) and s.instances is not None
    assert set(np.unique(s.target)) == {0, 1, 2}
    assert s.instances.max() > 300
    m = load_sample(
        base / "images/TCGA-18-5592-01Z-00-DX1.jpg", by["TCGA-18-5592-01Z-00-DX1"], 0.2527, 0.5
    )
    assert m.instances is None and MERGED in m.target and IGNORE not in m.target
    sampler = make_sampler([s, m], 64)
    rng = np.random.default_rng(0)
    for _ in range(4):
        img, tgt = sampler(rng)
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and tgt.shape == (64, 64)
        assert set(np.unique(tgt)) <= {0, 1, 2, MERGED}


def test_segment_nuclei_grid_and_errors() -> None:
    from shindan.errors import InputError
    from shindan.models import ZOO_DIR
    from shindan.nuclei.segment import segment_nuclei

    if not (ZOO_DIR / "nuclei" / "card.json").exists():
        pytest.skip("nuclei model not shipped")
    img = np.full((90, 130, 3), 220, np.uint8)
    img[40:50, 60:70] = (80, 50, 140)
    before = img.copy()
    lab = segment_nuclei(img, 0.5)
    assert lab.shape == (90, 130) and lab.dtype == np.int32
    assert np.array_equal(img, before)  # input not modified
    with pytest.raises(InputError):
        segment_nuclei(img[..., 0], 0.5)
    with pytest.raises(InputError):
        segment_nuclei(img, 0)


@pytest.mark.slow
def test_chunked_slide_segmentation_matches_whole() -> None:
    """Chunks with margins give the same nuclei as one pass: none cut or doubled at borders."""
    from shindan.engine import load_predictor
    from shindan.io.slide import ImageSlide
    from shindan.models import ZOO_DIR
    from shindan.nuclei.segment import segment_nuclei, segment_nuclei_slide

    if not (ZOO_DIR / "nuclei" / "card.json").exists():
        pytest.skip("nuclei model not shipped")
    rng = np.random.default_rng(0)
    img = np.full((200, 260, 3), (235, 175, 205), np.uint8)
    yy, xx = np.mgrid[:200, :260]
    for cy, cx in zip(rng.integers(8, 192, 40), rng.integers(8, 252, 40), strict=True):
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 36] = (80, 50, 140)
    pred = load_predictor("nuclei", "onnx")
    whole = segment_nuclei(img, 0.5, predictor=pred)
    chunked = segment_nuclei_slide(
        ImageSlide.from_array(img, mpp=0.5), predictor=pred, chunk=96, margin=32
    )
    ids = np.unique(chunked)
    assert list(ids) == list(range(len(ids)))
    assert abs(int(chunked.max()) - int(whole.max())) <= max(2, 0.1 * whole.max())
    fg_w, fg_c = whole > 0, chunked > 0
    assert 2 * (fg_w & fg_c).sum() / (fg_w.sum() + fg_c.sum()) > 0.9


def test_train_refuses_overlapping_val_and_holdout(tmp_path: Path) -> None:
    from PIL import Image

    from shindan.errors import InputError
    from shindan.nuclei.train import train_nuclei

    (tmp_path / "img").mkdir()
    (tmp_path / "msk").mkdir()
    for name in ("a", "b"):
        Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(tmp_path / f"img/{name}.png")
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / f"msk/{name}.png")
    with pytest.raises(InputError, match="both held out and validation"):
        train_nuclei(
            tmp_path / "img",
            [tmp_path / "msk"],
            tmp_path / "out",
            mpp=0.25,
            holdout=["a"],
            val=["a"],
            progress=False,
        )
    with pytest.raises(InputError, match="--val names no annotated image"):
        train_nuclei(
            tmp_path / "img",
            [tmp_path / "msk"],
            tmp_path / "out",
            mpp=0.25,
            val=["zzz"],
            progress=False,
        )


@pytest.mark.slow
def test_train_cli_small_run_writes_tta_tuned_watershed_and_scores(tmp_path: Path) -> None:
    """A tiny end-to-end `shindan nuclei train`: merged blobs of a mask image train as
    partial labels, --tta goes into the card, the watershed is tuned on the validation image
    and the held-out image is scored, all recorded in the card."""
    import json

    from PIL import Image
    from typer.testing import CliRunner

    from shindan.io.annotations import instances_to_polygons, write_geojson
    from shindan.models import load_card
    from shindan.nuclei.cli import app
    from shindan.nuclei.postprocess import DEFAULTS

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :96]
    for d in ("img", "ann"):
        (tmp_path / d).mkdir()
    for name in ("a", "b", "c"):
        img = np.full((96, 96, 3), (235, 175, 205), np.uint8)
        inst = np.zeros((96, 96), np.int32)
        for i, (cy, cx) in enumerate(rng.integers(10, 86, (8, 2)), start=1):
            disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < 36) & (inst == 0)
            inst[disc] = i
            img[disc] = (80, 50, 140)
        Image.fromarray(img).save(tmp_path / f"img/{name}.png")
        if name == "a":  # binary mask only
            Image.fromarray((inst > 0).astype(np.uint8) * 255).save(tmp_path / "ann/a.png")
        else:
            write_geojson(instances_to_polygons(inst), tmp_path / f"ann/{name}.geojson")
    out = tmp_path / "model"
    args = [
        "train", str(tmp_path / "img"), "-a", str(tmp_path / "ann"), "--out", str(out),
        "--mpp", "0.5", "--target-mpp", "0.5", "--val", "b", "--holdout", "c",
        "--steps", "2", "--batch-size", "2", "--tile", "64", "--eval-every", "1",
        "--density", "0.6,1.2",
        "--tta", "hflip,vflip", "--decoder-channels", "32,16,16,8,8", "--quiet",
    ]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    card = load_card(out)
    assert card.tta == ("hflip", "vflip")
    assert "--tta hflip,vflip" in card.data["training"]["command"]
    assert "--decoder-channels 32,16,16,8,8" in card.data["training"]["command"]
    assert "--density 0.6,1.2" in card.data["training"]["command"]
    assert card.data["architecture"]["kwargs"]["decoder_channels"] == [32, 16, 16, 8, 8]
    assert set(card.data["postprocess"]["watershed"]) == set(DEFAULTS)
    m = card.data["metrics"]
    assert 0 <= m["val_watershed_aji"] <= 1 and m["heldout_images"] == ["c"]
    assert card.data["headline"].endswith("on 1 held-out images")
    log = json.loads((out / "training_log.json").read_text())
    assert log["train"]["config"]["label_sets"] == {str(MERGED): [1, 2]}
    assert log["watershed_tuning"]["images"] == ["b"]
    bad = CliRunner().invoke(app, [*args[:-5], "--tta", "spin", "--quiet"])
    assert bad.exit_code != 0 and "unknown test-time view" in str(bad.exception)
    for opt, value, msg in (
        ("--encoder", "no-such-net", "unknown U-Net encoder"),
        ("--decoder-channels", "32,16", "5 positive integers"),
        ("--density", "1.2,0.6", "0 < LOW <= HIGH"),
        ("--density", "pale", "LOW,HIGH (two numbers)"),
    ):
        bad = CliRunner().invoke(app, [*args[:-1], opt, value, "--quiet"])
        assert bad.exit_code != 0 and msg in str(bad.exception)
    bad = CliRunner().invoke(app, [*args[:-1], "--core", "1.5", "--quiet"])
    assert bad.exit_code != 0 and "--core must be in [0, 1)" in str(bad.exception)
    # fine-tuning with a core class: the 3-class head grows a fourth output
    core_out = tmp_path / "core"
    tune = ["--init", str(out), "--core", "0.5", "--quiet"]
    r = CliRunner().invoke(app, [*args[:-1], *tune, "--out", str(core_out)])
    assert r.exit_code == 0, r.output
    core_card = load_card(core_out)
    assert core_card.classes == ["background", "interior", "boundary", "core"]
    assert "--core 0.5" in core_card.data["training"]["command"]
    log = json.loads((core_out / "training_log.json").read_text())
    assert log["train"]["config"]["label_sets"] == {str(MERGED): [1, 2, 3]}
    assert log["train"]["config"]["dice_classes"] == [1, 2, 3]
    from shindan.nuclei.segment import segment_nuclei

    lab = segment_nuclei(np.full((64, 64, 3), 200, np.uint8), 0.5, model=str(core_out))
    assert lab.shape == (64, 64)
    again = CliRunner().invoke(app, [*args[:-1], "--init", str(core_out), "--quiet"])
    assert again.exit_code != 0 and "has a core class" in str(again.exception)


@pytest.mark.slow
def test_core_head_starts_as_the_trained_network() -> None:
    import torch

    from shindan.models import build_network
    from shindan.nuclei.train import nuclei_card, with_core_class

    card = nuclei_card(0.5, decoder_channels=(32, 16, 16, 8, 8))
    net = build_network(card).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        before = net(x)
        after = with_core_class(net).eval()(x)
    assert after.shape[1] == 4
    assert torch.allclose(after[:, :3], before) and torch.allclose(after[:, 3], before[:, 1])
