"""The linkage table: encrypted at rest, merged across exports, refused with the wrong key."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from shindan.deid.linkage import (
    MAGIC,
    LinkageTable,
    check_outside,
    check_table_writable,
    load_key,
    load_table,
    lookup,
    save_table,
)
from shindan.deid.records import Identifiers
from shindan.deid.secret import load_or_create_secret
from shindan.errors import InputError

SECRET = b"s" * 32


def _table(name: str = "Doe^Jane", pid: str = "12345") -> LinkageTable:
    t = LinkageTable()
    t.record(
        "SITE-AAAAAAAAAA", "SITE", Identifiers(pid, {"PatientName": name}), "2026-01-01T00:00:00Z"
    )
    return t


def test_round_trip_is_encrypted(tmp_path):
    path = tmp_path / "link.table"
    save_table(path, _table("Yamada^Taro", "PID-998877"), SECRET)
    raw = path.read_bytes()
    assert raw.startswith(MAGIC)
    for secret_value in (b"Yamada", b"998877", "Yamada".encode("utf-16-le")):
        assert secret_value not in raw  # encrypted at rest
    assert path.stat().st_mode & 0o077 == 0  # owner only
    row = load_table(path, SECRET).rows["SITE-AAAAAAAAAA"]
    assert row.patient_id == "PID-998877"
    assert row.identifiers == {"PatientName": ["Yamada^Taro"]}


def test_wrong_key_is_refused_and_table_untouched(tmp_path):
    path = tmp_path / "link.table"
    save_table(path, _table(), SECRET)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(InputError, match="cannot be decrypted with this key file"):
        load_table(path, b"x" * 32)
    with pytest.raises(InputError, match="cannot be decrypted"):
        save_table(path, _table("Other^Name"), b"x" * 32)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_merge_keeps_earlier_rows_and_values(tmp_path):
    path = tmp_path / "link.table"
    save_table(path, _table("Doe^Jane"), SECRET)
    second = LinkageTable()
    second.record(
        "SITE-BBBBBBBBBB",
        "SITE",
        Identifiers("777777", {"PatientName": "Roe^Rick"}),
        "2026-02-01T00:00:00Z",
    )
    second.record(
        "SITE-AAAAAAAAAA",
        "SITE",
        Identifiers("12345", {"PatientName": "DOE^JANE"}),
        "2026-03-01T00:00:00Z",
    )
    save_table(path, second, SECRET)
    rows = load_table(path, SECRET).rows
    assert set(rows) == {"SITE-AAAAAAAAAA", "SITE-BBBBBBBBBB"}
    a = rows["SITE-AAAAAAAAAA"]
    assert a.identifiers["PatientName"] == ["Doe^Jane", "DOE^JANE"]
    assert (a.first_export, a.last_export) == ("2026-01-01T00:00:00Z", "2026-03-01T00:00:00Z")


def test_a_pseudonym_never_joins_two_patients():
    t = _table(pid="12345")
    with pytest.raises(InputError, match="another patient"):
        t.record("SITE-AAAAAAAAAA", "SITE", Identifiers("54321"), "t")


def test_not_a_table_and_paths(tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("mine")
    with pytest.raises(InputError, match="not a shindan linkage table"):
        load_table(other, SECRET)
    with pytest.raises(InputError, match="not a shindan linkage table; not replaced"):
        check_table_writable(other)
    with pytest.raises(InputError, match="no such folder"):  # was a traceback after the export
        check_table_writable(tmp_path / "nodir" / "link.table")
    with pytest.raises(InputError, match="is a folder"):
        load_table(tmp_path, SECRET)
    with pytest.raises(InputError, match="no such linkage table"):
        load_table(tmp_path / "missing", SECRET, must_exist=True)
    assert load_table(tmp_path / "missing", SECRET).rows == {}
    with pytest.raises(InputError, match="is inside --out"):
        check_outside(tmp_path / "out" / "link.table", tmp_path / "out", "--link-table")
    with pytest.raises(InputError, match="is inside --out"):
        check_outside(tmp_path / "out", tmp_path / "out", "--link-table")
    check_outside(tmp_path / "link.table", tmp_path / "out", "--link-table")


def test_lookup_and_key(tmp_path):
    with pytest.raises(InputError, match="no such key file"):
        load_key(tmp_path / "site.key")
    secret = load_or_create_secret(tmp_path / "site.key")
    assert load_key(tmp_path / "site.key") == secret
    t = _table()
    assert lookup(t, " SITE-AAAAAAAAAA ").patient_id == "12345"
    with pytest.raises(InputError, match="not in this linkage table"):
        lookup(t, "SITE-ZZZZZZZZZZ")


def test_exports_log_survives_merge(tmp_path: Path):
    path = tmp_path / "link.table"
    t = _table()
    t.exports.append({"time": "t1", "out": "/x", "files": 1})
    save_table(path, t, SECRET)
    u = LinkageTable()
    u.exports.append({"time": "t2", "out": "/y", "files": 2})
    save_table(path, u, SECRET)
    assert [e["time"] for e in load_table(path, SECRET).exports] == ["t1", "t2"]


def _save_one(path: str, index: int) -> None:
    table = LinkageTable()
    table.record(
        f"SITE-{index:010d}", "SITE", Identifiers(f"PID-{index}", {}), "2026-01-01T00:00:00Z"
    )
    save_table(path, table, SECRET)


def test_concurrent_exports_keep_every_row(tmp_path):
    # eight processes write the same table at once: the folder lock serialises read-merge-write
    import multiprocessing

    path = tmp_path / "link.table"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_save_one, args=(str(path), i)) for i in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert sorted(load_table(path, SECRET).rows) == [f"SITE-{i:010d}" for i in range(8)]
