"""``shindan deid`` from the command line: the three forms, exit codes, one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from shindan import cli


def run(argv: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    """``shindan argv...`` in this process: exit code, stdout, stderr."""
    if not cli.app.registered_groups:
        cli._register_tasks()
    monkeypatch.setattr(cli, "_register_tasks", lambda: None)
    monkeypatch.setattr(sys, "argv", ["shindan", *argv])
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_explains_all_three_forms(capsys, monkeypatch):
    code, out, _ = run(["deid", "--help"], capsys, monkeypatch)
    assert code == 0
    text = " ".join(out.split())
    for form in (
        "shindan deid INPUT... --out DIR --site SITE --link-table FILE --key-file KEY",
        "shindan deid check DIR [--link-table FILE --key-file KEY]",
        "shindan deid lookup PSEUDONYM --link-table FILE --key-file KEY",
    ):
        assert form in text
    code, out, _ = run(["deid", "export", "--help"], capsys, monkeypatch)
    assert code == 0 and "--retain-dates" in out and "--keep-private" in out
    # arguments are named as in the README, in usage lines and in errors
    assert "INPUT" in out.split("\n", 3)[1], out
    for argv, name in ((["export"], "INPUT"), (["check"], "DIR"), (["lookup"], "PSEUDONYM")):
        code, _, err = run(["deid", *argv], capsys, monkeypatch)
        assert code == 2 and f"Missing argument '{name}'" in err, err


def test_export_check_lookup(tmp_path, capsys, monkeypatch):
    ct = get_testdata_file("CT_small.dcm")
    out, table, key = tmp_path / "exp", tmp_path / "link.table", tmp_path / "site.key"
    args = ["--link-table", str(table), "--key-file", str(key)]
    code, _, err = run(
        ["deid", ct, "--out", str(out), "--site", "KYOTO", *args], capsys, monkeypatch
    )
    assert code == 0, err
    assert key.exists() and table.exists() and (out / "manifest.json").exists()
    case = json.loads((out / "manifest.json").read_text())["files"][0]["case"]
    assert case.startswith("KYOTO-")

    assert "of 1 patient written" in err and "replaced" not in err

    code, stdout, _ = run(["deid", "check", str(out), *args], capsys, monkeypatch)
    assert (code, stdout) == (0, "")

    # a second export to the same --out replaces the first: the user is told so
    code, _, err = run(
        ["deid", ct, "--out", str(out), "--site", "KYOTO", *args], capsys, monkeypatch
    )
    assert code == 0 and "the previous export in" in err and "was replaced" in err, err

    code, stdout, _ = run(["deid", "lookup", case, *args], capsys, monkeypatch)
    assert code == 0
    row = json.loads(stdout)
    assert row["patient_id"] == "1CT1" and row["pseudonym"] == case

    (out / case / "Yamada_Taro.txt").write_text("氏名: 山田太郎 tel 03-1234-5678")
    code, stdout, err = run(["deid", "check", str(out)], capsys, monkeypatch)
    assert code == 1
    lines = stdout.strip().splitlines()
    assert len(lines) >= 3 and all(line.startswith(f"{case}/Yamada_Taro.txt: ") for line in lines)
    assert "findings" in err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["deid", "{ct}", "--out", "{t}/o", "--site", "KYOTO"], "--link-table"),
        (["deid", "{t}/missing.dcm", "--out", "{t}/o", "--site", "S", "--link-table", "{t}/l",
          "--key-file", "{t}/k"], "missing.dcm: no such file"),
        (["deid", "{ct}", "--out", "{t}/o", "--site", "no spaces", "--link-table", "{t}/l",
          "--key-file", "{t}/k"], "--site"),
        (["deid", "{ct}", "--out", "{t}/o", "--site", "S", "--link-table", "{t}/o/l",
          "--key-file", "{t}/k"], "is inside --out"),
        (["deid", "{ct}", "--out", "{t}/o", "--site", "S", "--link-table", "{t}/l",
          "--key-file", "{t}/k", "--patient-map", "{t}/nomap.csv"], "no such patient map"),
        (["deid", "check", "{t}/nothing"], "no such folder"),
        (["deid", "check", "{t}", "--link-table", "{t}/l"], "go together"),
        (["deid", "lookup", "S-AAAAAAAAAA", "--link-table", "{t}/l", "--key-file", "{t}/k"],
         "no such key file"),
        (["deid", "lookup", "S-AAAAAAAAAA"], "--link-table"),
        (["deid", "{ct}", "--out", "{t}/o", "--bogus"], "--bogus"),
    ],
)  # fmt: skip
def test_bad_arguments_are_one_line_errors(argv, words, tmp_path, capsys, monkeypatch):
    ct = get_testdata_file("CT_small.dcm")
    argv = [a.format(t=tmp_path, ct=ct) for a in argv]
    code, _, err = run(argv, capsys, monkeypatch)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


def test_lookup_refuses_the_wrong_key(tmp_path, capsys, monkeypatch):
    ct = get_testdata_file("CT_small.dcm")
    args = ["--link-table", str(tmp_path / "t"), "--key-file", str(tmp_path / "k")]
    assert (
        run(["deid", ct, "--out", str(tmp_path / "o"), "--site", "S", *args], capsys, monkeypatch)[
            0
        ]
        == 0
    )
    from shindan.deid.secret import load_or_create_secret

    load_or_create_secret(tmp_path / "other.key")
    wrong = ["--link-table", str(tmp_path / "t"), "--key-file", str(tmp_path / "other.key")]
    code, stdout, err = run(["deid", "lookup", "S-AAAAAAAAAA", *wrong], capsys, monkeypatch)
    assert code == 2 and stdout == "" and "cannot be decrypted" in err
    code, stdout, err = run(["deid", "check", str(tmp_path / "o"), *wrong], capsys, monkeypatch)
    assert code == 2 and "cannot be decrypted" in err
    code, _, err = run(["deid", "lookup", "S-AAAAAAAAAA", *args], capsys, monkeypatch)
    assert code == 2 and "not in this linkage table" in err
    assert Path(tmp_path / "t").exists()


def test_nothing_exportable_is_an_error_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    # a broken file alone: one error line, exit 2, no export folder, no key, no table
    (tmp_path / "broken.dcm").write_bytes(b"garbage")
    argv = ["deid", str(tmp_path / "broken.dcm"), "--out", str(tmp_path / "exp"), "--site", "S"]
    argv += ["--link-table", str(tmp_path / "lt"), "--key-file", str(tmp_path / "k")]
    code, _, err = run(argv, capsys, monkeypatch)
    assert code == 2
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == [
        ln for ln in err.splitlines() if "error" in ln
    ]
    assert "nothing to export" in err and "broken.dcm" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.dcm"]
