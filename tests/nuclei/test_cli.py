"""``shindan nuclei segment``: outputs on the input's pixel grid, exit 2 on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shindan.models import ZOO_DIR

pytestmark = pytest.mark.skipif(
    not (ZOO_DIR / "nuclei" / "card.json").exists(), reason="nuclei model not shipped"
)


def _shindan(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from shindan.cli import main; sys.argv[0] = 'shindan'; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300
    )


def _fake_he(path: Path, shape=(160, 200), seed=0) -> None:
    rng = np.random.default_rng(seed)
    img = np.empty((*shape, 3), np.uint8)
    img[:] = (235, 170, 205)  # eosin pink
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for _ in range(25):  # dark purple "nuclei", ~7 µm at 0.5 µm/px
        cy, cx = rng.integers(10, shape[0] - 10), rng.integers(10, shape[1] - 10)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 49] = (90, 60, 150)
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path)


@pytest.mark.slow
def test_segment_writes_label_map_and_geojson(tmp_path: Path) -> None:
    import tifffile

    _fake_he(tmp_path / "tissue.png")
    out = tmp_path / "out"
    r = _shindan(
        "nuclei",
        "segment",
        str(tmp_path / "tissue.png"),
        "--out",
        str(out),
        "--mpp",
        "0.5",
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    lab = tifffile.imread(out / "tissue_nuclei.tif")
    assert lab.shape == (160, 200) and np.issubdtype(lab.dtype, np.integer)
    ids = np.unique(lab)
    assert ids[0] == 0 and list(ids[1:]) == list(range(1, len(ids)))  # 1..N, no gaps
    gj = json.loads((out / "tissue_nuclei.geojson").read_text())
    assert gj["type"] == "FeatureCollection"
    assert len(gj["features"]) == lab.max()
    if gj["features"]:
        props = gj["features"][0]["properties"]
        assert props["objectType"] == "detection" and props["classification"]["name"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "case", ["missing", "not-an-image", "no-mpp", "bad-mpp", "huge-mpp", "tiny-mpp", "out-is-file"]
)
def test_segment_bad_input_exit_2(tmp_path: Path, case: str) -> None:
    out = tmp_path / "out"
    good = tmp_path / "ok.png"
    _fake_he(good)
    args = {
        "missing": [str(tmp_path / "nope.png"), "--mpp", "0.5"],
        "not-an-image": [str(tmp_path / "junk.png"), "--mpp", "0.5"],
        "no-mpp": [str(good)],
        "bad-mpp": [str(good), "--mpp", "-1"],
        "huge-mpp": [str(good), "--mpp", "50"],  # resampled to 200² times more pixels
        "tiny-mpp": [str(good), "--mpp", "0.0001"],
        "out-is-file": [str(good), "--mpp", "0.5"],
    }[case]
    (tmp_path / "junk.png").write_bytes(b"definitely not a png")
    if case == "out-is-file":
        out = tmp_path / "a-file"
        out.write_text("mine")
    r = _shindan("nuclei", "segment", *args, "--out", str(out))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    if case == "out-is-file":
        assert out.read_text() == "mine"
    else:
        assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
def test_same_named_inputs_get_their_own_outputs(tmp_path: Path) -> None:
    for sub, seed in (("a", 0), ("b", 1)):
        (tmp_path / sub).mkdir()
        _fake_he(tmp_path / sub / "img.png", seed=seed)
    out = tmp_path / "out"
    r = _shindan(
        "nuclei", "segment", str(tmp_path / "a" / "img.png"), str(tmp_path / "b" / "img.png"),
        "--out", str(out), "--mpp", "0.5", "-q",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "img_2_nuclei.geojson",
        "img_2_nuclei.tif",
        "img_nuclei.geojson",
        "img_nuclei.tif",
    ]
