"""Every command that writes checks its ``--out`` before any work (docs/design.md, "Outputs").

A file where a folder is expected (or a folder where a file is), a path under a file, a
folder that cannot be created, and a user's file in the way are one-line errors (exit 2),
with nothing written and the user's files untouched.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shindan import cli

# Each command writing files, with {out} for its --out; {root} is the scratch folder. Inputs are
# real files, but the models and data need not be valid: the --out check comes first, so the
# error must name the --out path (a model or data error instead means the check came late).
FOLDER_COMMANDS = {
    "kidney analyze": "kidney analyze {root}/img.png --mpp 0.5 --out {out}",
    "nuclei segment": "nuclei segment {root}/img.png --mpp 0.5 --out {out}",
    "demo": "demo --size 2000 --out {out}",
    "classify evaluate": "classify evaluate wbc {root}/data --n-boot 0 --out {out}",
    "classify train": "classify train {root}/data --epochs 1 --folds 0 --out {out}",
    "explain": "explain wbc {root}/img.png --out {out}",
    "ct phantom": "ct phantom --cases 2 --out {out}",
    "ct train": "ct train {root}/cases.csv --epochs 1 --out {out}",
    "ct evaluate": "ct evaluate {root}/no-model {root}/cases.csv --out {out}",
    "kidney train": "kidney train {root}/img.png -a {root}/ann --mpp 0.5 --out {out}",
    "nuclei train": "nuclei train {root}/img.png -a {root}/ann --mpp 0.5 --out {out}",
    "stats correlate": "stats correlate {root}/cases.csv --x a --y b --out {out}",
    "stats prognosis": "stats prognosis {root}/cases.csv --visits {root}/cases.csv --scores a "
    "--out {out}",
    "stats logistic": "stats logistic {root}/cases.csv --outcome a --predictors b --out {out}",
    "stats example": "stats example --out {out}",
    "deid": "deid {root}/img.png --site S --link-table {root}/link.table --key-file {root}/k "
    "--out {out}",
}
FILE_COMMANDS = {
    "classify predict": "classify predict wbc {root}/img.png --out {out}",
    "ct predict": "ct predict {root}/no-model {root}/cases.csv --out {out}",
    "annotations convert": "annotations convert {root}/img.png {out} --to geojson",
}
# Bad --out forms: (path relative to the scratch folder, words the error must hold)
FOLDER_FORMS = {
    "a file": ("afile", "afile"),
    "under a file": ("afile/sub", "afile"),
    # a folder holding a user's files, some named like shindan's outputs
    "users files": ("used", "used"),
    "cannot be created": ("/proc/shindan-test/out", "/proc/shindan-test/out"),
}
FILE_FORMS = {
    "a folder": ("adir.csv", "adir.csv"),
    "under a file": ("afile/p.csv", "afile"),
    "a user's file": ("mine.csv", "mine.csv"),
    "cannot be created": ("/proc/shindan-test/p.csv", "/proc/shindan-test/p.csv"),
}
# Adding to a folder (one file per input) keeps a user's other files; replacing one does not.
MERGING = {"nuclei segment"}

CASES = [
    (cmd, form)
    for commands, forms in ((FOLDER_COMMANDS, FOLDER_FORMS), (FILE_COMMANDS, FILE_FORMS))
    for cmd in commands
    for form in forms
    if not (cmd in MERGING and form == "users files")
]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("outputs")
    image = (np.random.default_rng(0).random((96, 96, 3)) * 255).astype(np.uint8)
    Image.fromarray(image).save(root / "img.png")
    for cls in ("basophil", "eosinophil"):  # classes of the shipped wbc model
        (root / "data" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(image).save(root / "data" / cls / f"{cls}_{i}.png")
    (root / "cases.csv").write_text("case,study\n")
    (root / "ann").mkdir()
    (root / "afile").write_text("mine\n")
    (root / "mine.csv").write_text("id,notes\n1,keep me\n")
    (root / "adir.csv").mkdir()
    (root / "used").mkdir()
    for name in ("notes.txt", "cohort.csv", "attention.csv"):
        (root / "used" / name).write_text("my,own\n1,2\n")
    return root


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
        for p in sorted(root.rglob("*"))  # hidden temporaries included
    }


def run_cli(argv: list[str], capsys, monkeypatch) -> tuple[int, str]:
    """Run ``shindan argv...`` in this process (as the console script does): exit code, stderr."""
    if not cli.app.registered_groups:
        cli._register_tasks()
    monkeypatch.setattr(cli, "_register_tasks", lambda: None)  # once per process, as in use
    old = sys.argv
    sys.argv = ["shindan", *argv]
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("command", "form"), CASES, ids=[f"{c}-{f}" for c, f in CASES])
def test_bad_out_is_refused_before_any_work(command, form, scratch, capsys, monkeypatch):
    commands, forms = (
        (FOLDER_COMMANDS, FOLDER_FORMS)
        if command in FOLDER_COMMANDS
        else (FILE_COMMANDS, FILE_FORMS)
    )
    rel, expect = forms[form]
    if rel.startswith("/proc") and not Path("/proc").is_dir():
        pytest.skip("no /proc to stand for a folder that cannot be created")
    monkeypatch.chdir(scratch)  # demo and friends must not write beside the tests either
    out = rel if rel.startswith("/") else str(scratch / rel)
    argv = commands[command].format(root=scratch, out=out).split()
    before = _snapshot(scratch)
    t0 = time.process_time()  # CPU seconds: a busy machine does not make it fail
    code, err = run_cli(argv, capsys, monkeypatch)
    seconds = time.process_time() - t0
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert expect in lines[0], f"the error is not about --out (checked too late?): {lines[0]}"
    assert _snapshot(scratch) == before  # nothing written, nothing left, user's files intact
    assert not os.path.exists("/proc/shindan-test")
    assert seconds < 10, f"refused only after {seconds:.0f} s of work"


def test_own_csv_is_replaced_and_force_replaces_a_users(scratch, tmp_path, capsys, monkeypatch):
    out = tmp_path / "p.csv"
    args = ["classify", "predict", "wbc", str(scratch / "img.png"), "--quiet", "--out"]
    for _ in range(2):  # the rerun replaces the CSV shindan wrote
        code, err = run_cli([*args, str(out)], capsys, monkeypatch)
        assert code == 0, err
    assert out.read_text().startswith("image,label,p_basophil,")
    mine = tmp_path / "mine.csv"
    mine.write_text("id,notes\n")
    code, err = run_cli([*args, str(mine)], capsys, monkeypatch)
    assert code == 2 and "--force" in err and mine.read_text() == "id,notes\n"
    code, err = run_cli([*args, str(mine), "--force"], capsys, monkeypatch)
    assert code == 0, err
    assert mine.read_text() == out.read_text()


def test_a_failed_run_leaves_no_folder(scratch, tmp_path, capsys, monkeypatch):
    data = (scratch / "img.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 3])
    monkeypatch.chdir(tmp_path)
    argv = ["explain", "wbc", str(scratch / "img.png"), "truncated.png", "--out", "o/e", "--quiet"]
    code, err = run_cli(argv, capsys, monkeypatch)
    assert code == 2 and err.startswith("error: ") and "truncated.png" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["truncated.png"]  # no o/, no temps


@pytest.mark.slow  # imports torch and Grad-CAM: about 20 s on a busy machine
def test_explain_quiet_prints_only_its_summary(scratch, tmp_path, capsys, monkeypatch):
    # Score-CAM's own (pytorch-grad-cam) tqdm bar is silenced too
    # a shallow layer of wbc's EfficientNet-Lite0 keeps Score-CAM's masked passes few
    img = str(scratch / "img.png")
    argv = ["explain", "wbc", img, "--method", "scorecam", "--layer", "blocks.1"]
    code, err = run_cli([*argv, "--out", str(tmp_path / "e"), "--quiet"], capsys, monkeypatch)
    assert code == 0, err
    assert err.splitlines() == [f"wrote 1 heatmaps and attention.csv to {tmp_path / 'e'}"]
