"""The contract's CLI behaviour: exit codes, one-line errors, JSON of ``info``."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SHINDAN = [str(Path(sys.executable).with_name("shindan"))]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        SHINDAN + list(args), capture_output=True, text=True, cwd=cwd, timeout=600
    )


def assert_one_line_error(p: subprocess.CompletedProcess) -> None:
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stderr


def test_version_and_help():
    p = run("--version")
    assert p.returncode == 0 and p.stdout.startswith("shindan ")
    for cmd in (
        [],
        ["info"],
        ["models"],
        ["demo"],
        ["kidney", "analyze"],
        ["nuclei", "segment"],
        ["classify", "predict"],
        ["explain"],
    ):
        h = run(*cmd, "--help")
        assert h.returncode == 0, (cmd, h.stderr)
        assert "Usage" in h.stdout


def test_bare_group_prints_help_without_an_empty_error():
    # `shindan stats` without a sub-command: its help, and no "error: " line with nothing after it
    for group in ("kidney", "stats", "deid", "annotations", "admin"):
        p = run(group)
        assert "Usage" in p.stdout, (group, p.stdout)
        assert not [ln for ln in p.stderr.splitlines() if ln.strip() == "error:"], (group, p.stderr)


def test_info_json(shared_data):
    p = run("info", str(shared_data / "slides" / "CMU-1-Small-Region.svs"))
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert set(info) == {"format", "width", "height", "levels", "mpp", "vendor", "associated"}
    assert info["levels"] == [[2220, 2967]] and info["vendor"] == "aperio"


def test_info_errors(tmp_path, shared_data):
    assert_one_line_error(run("info", str(tmp_path / "missing.svs")))
    fixtures = shared_data / "slides" / "openslide-fixtures"
    assert_one_line_error(run("info", str(fixtures / "unreadable.svs")))
    assert_one_line_error(run("info", str(fixtures / "unopenable.tiff")))
    (tmp_path / "x.txt").write_text("no")
    assert_one_line_error(run("info", str(tmp_path / "x.txt")))


def test_bad_options_exit_2(tmp_path):
    assert_one_line_error(run("info"))
    assert_one_line_error(
        run("kidney", "analyze", str(tmp_path / "nope.png"), "--out", str(tmp_path / "o"))
    )
    assert not (tmp_path / "o").exists()
    assert_one_line_error(
        run("kidney", "analyze", "--out", str(tmp_path / "o"), "--mpp", "abc", str(tmp_path))
    )
    assert_one_line_error(run("no-such-command"))


@pytest.mark.parametrize("model", ["no-such-model"])
def test_unknown_model(tmp_path, model):
    img = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(img)
    assert_one_line_error(
        run("classify", "predict", model, str(img), "--out", str(tmp_path / "p.csv"))
    )
    assert not (tmp_path / "p.csv").exists()


def test_models_lists_shipped():
    p = run("models")
    assert p.returncode == 0
    for line in p.stdout.splitlines():
        assert len(line.split("\t")) == 5


@pytest.mark.slow
def test_kidney_analyze_with_a_users_models(tmp_path):
    from PIL import Image

    from shindan.kidney.labels import CLASSES
    from tests.helpers import smooth_image, tiny_seg_model

    Image.fromarray(smooth_image(96, 96)).save(tmp_path / "a.png")
    comp = tiny_seg_model(tmp_path / "comp", classes=CLASSES, size=64, mpp=2.0, name="my-comp")
    nuc = tiny_seg_model(tmp_path / "nuc", classes=3, size=64, mpp=1.0, name="my-nuclei")
    args = ["kidney", "analyze", str(tmp_path / "a.png"), "--mpp", "0.5"]
    own = ["--compartments-model", str(comp.directory), "--nuclei-model", str(nuc.directory)]
    p = run(*args, "--out", str(tmp_path / "o"), *own)
    assert p.returncode == 0, p.stderr
    models = json.loads((tmp_path / "o" / "a" / "scores.json").read_text())["model"]
    assert models["my-comp"]["folder"] == str(comp.directory)
    assert models["my-nuclei"]["folder"] == str(nuc.directory)
    for bad in (["--nuclei-model", str(tmp_path / "none")], ["--compartments-model", "nuclei"]):
        assert_one_line_error(run(*args, "--out", str(tmp_path / "o2"), *bad))
        assert not (tmp_path / "o2").exists()


def test_demo_refuses_a_size_too_small_to_score(tmp_path):
    assert_one_line_error(run("demo", "--out", str(tmp_path / "d"), "--size", "500"))
    assert not (tmp_path / "d").exists()


def test_demo_refuses_a_users_folder_where_its_cohort_example_goes(tmp_path):
    mine = tmp_path / "d" / "stats-example" / "mine.csv"
    mine.parent.mkdir(parents=True)
    mine.write_text("case,egfr\nA,50\n")
    assert_one_line_error(run("demo", "--out", str(tmp_path / "d")))
    assert mine.read_text() == "case,egfr\nA,50\n"
    assert sorted(p.name for p in (tmp_path / "d").rglob("*")) == ["mine.csv", "stats-example"]


@pytest.mark.slow
def test_demo_writes_a_synthetic_cohort_for_stats(tmp_path):
    p = run("demo", "--out", str(tmp_path / "d"), "--size", "2000", "-q")
    assert p.returncode == 0, p.stderr
    example = tmp_path / "d" / "stats-example"
    assert (example / "README.txt").read_text().startswith("SYNTHETIC DATA")
    assert {"cohort.csv", "clinical.csv", "visits.csv"} <= {f.name for f in example.iterdir()}
    assert "stats-example" in p.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "message"), [("SIGINT", 130, "aborted"),
                                                     ("SIGTERM", 143, "terminated")])  # fmt: skip
def test_interrupted_runs_fail_and_leave_no_temporaries(tmp_path, sig, code, message):
    import signal
    import time

    out = tmp_path / "d"
    proc = subprocess.Popen(
        [*SHINDAN, "demo", "--out", str(out), "--size", "4000", "-q"],
        stderr=subprocess.PIPE,
        text=True,
        # a shell's background job ignores SIGINT, and the child would inherit that; a user's
        # Ctrl-C reaches a foreground command with the default action
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while not out.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)  # the command has started its work once the folder exists
    time.sleep(1.0)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == f"error: {message}"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
