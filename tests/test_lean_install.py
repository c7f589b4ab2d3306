"""The base install needs no torch: analysis runs on ONNX Runtime, training names its extra.

Each command runs in a subprocess whose import system refuses the train extra's packages
(torch, timm, smp, grad-cam, ...) as if they were not installed, so a torch import that
creeps into an analysis path fails here, not on a user's lean install.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shindan.util.extras import TRAIN_MODULES

# Runs `shindan ARGS...` with the train extra's packages blocked.
BLOCKED_CLI = f"""
import importlib.abc, sys

BLOCKED = set({sorted(TRAIN_MODULES)!r})


class NoTrainExtra(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, NoTrainExtra())
sys.argv = ["shindan", *sys.argv[1:]]
from shindan.cli import main

main()
"""

# Modules `shindan --version` / `--help` must not load: each costs 0.1-3 s at every start.
HEAVY = (
    "torch",
    "onnxruntime",
    "numpy",
    "scipy",
    "skimage",
    "sklearn",
    "pandas",
    "matplotlib",
    "cv2",
    "PIL",
    "pydicom",
    "jsonschema",
    "rich",
    "zarr",
    "tifffile",
    "openslide",
)


def run_without_train(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCKED_CLI, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=900,
    )


def assert_needs_train(p: subprocess.CompletedProcess, command: str) -> None:
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert lines == [f"error: {command} needs the train extra: pip install 'shindan[train]'"]


def test_the_blocker_blocks_torch():
    # the guard itself must bite, else every test below passes for nothing
    p = subprocess.run(
        [sys.executable, "-c", BLOCKED_CLI.replace("main()", "import torch")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode != 0 and "No module named 'torch'" in p.stderr


def test_start_up_imports_no_heavy_module():
    code = (
        "import sys\n"
        "from shindan.cli import _register_tasks\n"
        "_register_tasks()\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    loaded = set(p.stdout.split())
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_version_help_models_info_without_torch(tmp_path):
    assert run_without_train("--version").stdout.startswith("shindan ")
    for cmd in (["--help"], ["kidney", "train", "--help"], ["classify", "train", "--help"]):
        h = run_without_train(*cmd)
        assert h.returncode == 0 and "Usage" in h.stdout, (cmd, h.stderr)
    m = run_without_train("models")
    assert m.returncode == 0, m.stderr
    assert {line.split("\t")[0] for line in m.stdout.splitlines()} >= {"wbc", "nuclei"}
    Image.new("RGB", (40, 30), "white").save(tmp_path / "a.png")
    i = run_without_train("info", tmp_path / "a.png")
    assert i.returncode == 0, i.stderr
    assert json.loads(i.stdout)["width"] == 40


def test_classify_predict_without_torch(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(tmp_path / "c.png")
    p = run_without_train("classify", "predict", "wbc", tmp_path / "c.png", "--out", "p.csv",
                          cwd=tmp_path)  # fmt: skip
    assert p.returncode == 0, p.stderr
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0].startswith("image,label,p_") and len(rows) == 2


@pytest.mark.slow
def test_kidney_analyze_and_nuclei_segment_without_torch(tmp_path):
    from shindan.slide_phantom import make_scene, render_rgb

    scene = make_scene(384, 384, mpp=0.5, seed=3)
    Image.fromarray(render_rgb(scene, (0, 0, 384, 384))).save(tmp_path / "k.png")
    a = run_without_train("kidney", "analyze", tmp_path / "k.png", "--mpp", "0.5",
                          "--out", tmp_path / "ka", "--quiet")  # fmt: skip
    assert a.returncode == 0, a.stderr
    scores = json.loads((tmp_path / "ka" / "k" / "scores.json").read_text())
    assert 0.0 <= scores["interstitial_fibrosis"] <= 1.0
    n = run_without_train("nuclei", "segment", tmp_path / "k.png", "--mpp", "0.5",
                          "--out", tmp_path / "nu", "--quiet")  # fmt: skip
    assert n.returncode == 0, n.stderr
    assert any((tmp_path / "nu").iterdir())


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["classify", "train", "{d}", "--out", "{d}/m"], "shindan classify train"),
        (["explain", "wbc", "{d}/c.png", "--out", "{d}/e"], "shindan explain"),
        (["kidney", "train", "{d}/c.png", "-a", "{d}/c.png", "--out", "{d}/k"],
         "shindan kidney train"),
        (["nuclei", "train", "{d}/c.png", "-a", "{d}/c.png", "--out", "{d}/n"],
         "shindan nuclei train"),
        (["ct", "train", "{d}/cases.csv", "--out", "{d}/ct"], "shindan ct train"),
    ],
)  # fmt: skip
def test_training_commands_name_the_extra(tmp_path, args, command):
    Image.new("RGB", (32, 32)).save(tmp_path / "c.png")
    (tmp_path / "cases.csv").write_text("case,study,label\n")
    p = run_without_train(*(a.format(d=tmp_path) for a in args))
    assert_needs_train(p, command)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["c.png", "cases.csv"]  # no output


def test_torch_backend_names_the_extra(tmp_path):
    Image.new("RGB", (32, 32)).save(tmp_path / "c.png")
    p = run_without_train("classify", "predict", "wbc", tmp_path / "c.png",
                          "--backend", "torch", "--out", tmp_path / "p.csv")  # fmt: skip
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().endswith("needs the train extra: pip install 'shindan[train]'")
    assert not (tmp_path / "p.csv").exists()
