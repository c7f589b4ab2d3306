"""Output paths: checked before any work, written under a temporary name, renamed when complete.

The rules every command follows (see docs/design.md, "Outputs"):

- ``--out`` is checked before any work (:func:`check_output_folder`,
  :func:`check_output_file`): a file where a folder is expected, a path under a file, a
  folder that cannot be created, or a user's file in the way is an :class:`InputError`.
- Only files shindan wrote are replaced: a folder's entries must be names the command writes,
  and a CSV must start with the exact header row shindan writes (``--force`` replaces any
  file where a command offers it).
- Everything is written to a temporary name beside its target (in the nearest existing
  folder) and renamed when complete; missing parent folders are created only then, so a
  failed run leaves nothing behind.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from shindan.errors import InputError

# What a folder may hold to be replaced: names, or a test on each name.
Owned = Collection[str] | Callable[[str], bool]
# What a file's first CSV row must be for shindan to replace it: the row, or a test on it.
Header = Sequence[str] | Callable[[list[str]], bool]


def _existing_ancestor(target: Path) -> Path:
    """The nearest existing folder above ``target`` (``.`` for a bare relative name)."""
    for parent in target.parents:
        if parent.exists():
            return parent
    return Path(".")


def _check_creatable(target: Path) -> None:
    """:class:`InputError` unless ``target`` (missing) can be created: no parent is a file,
    and the nearest existing parent accepts new entries (tried, then removed)."""
    parent = _existing_ancestor(target)
    if not parent.is_dir():
        raise InputError(f"{parent}: is a file, so {target} cannot be created")
    try:
        Path(tempfile.mkdtemp(prefix=".shindan-probe-", dir=parent)).rmdir()
    except OSError as exc:
        raise InputError(f"{target}: cannot be created ({parent}: {exc.strerror or exc})") from None


def check_can_be_folder(target: str | Path) -> None:
    """:class:`InputError` if ``target`` is a file, or cannot be created (a parent is a file,
    or the nearest existing parent is not writable).

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> (d / "afile").write_text("x")
    1
    >>> check_can_be_folder(d / "new" / "out")  # missing: fine, nothing is created
    >>> check_can_be_folder(d / "afile" / "sub")
    Traceback (most recent call last):
    ...
    shindan.errors.InputError: ...afile: is a file, so .../afile/sub cannot be created
    """
    target = Path(target)
    if target.exists():
        if not target.is_dir():
            raise InputError(f"{target}: exists and is not a folder")
        return
    _check_creatable(target)


def _is_owned(name: str, owned: Owned) -> bool:
    return owned(name) if callable(owned) else name in owned


def check_replaceable(target: str | Path, owned: Owned = ()) -> None:
    """Raise :class:`InputError` unless an output folder may be written at ``target``.

    It may when ``target`` does not exist and can be created, or is a folder holding only
    entries named in ``owned`` (what the command writes there; a set of names or a test on a
    name): a user's other files are never replaced.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> (d / "scores.json").write_text("{}")
    2
    >>> check_replaceable(d, {"scores.json", "report.html"})  # only our own output: fine
    >>> (d / "notes.txt").write_text("mine")
    4
    >>> check_replaceable(d, {"scores.json"})
    Traceback (most recent call last):
    ...
    shindan.errors.InputError: ... holds files shindan did not write (notes.txt); ...
    """
    target = Path(target)
    check_can_be_folder(target)
    if not target.exists():
        return
    extra = sorted(p.name for p in target.iterdir() if not _is_owned(p.name, owned))
    if extra:
        listed = ", ".join(extra[:3]) + (", …" if len(extra) > 3 else "")
        raise InputError(
            f"{target}: holds files shindan did not write ({listed}); choose another output "
            "folder or move them"
        )


# The name the rules of this module go by in the commands.
check_output_folder = check_replaceable


def first_csv_row(path: str | Path) -> list[str] | None:
    """The first row of a CSV file, or None when it is empty, binary or unreadable."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return next(csv.reader([fh.readline()]), None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


def check_output_file(
    target: str | Path,
    owned_header: Header | None = None,
    *,
    force: bool = False,
    force_option: bool = True,
) -> None:
    """Raise :class:`InputError` unless an output file may be written at ``target``.

    It may when ``target`` does not exist and can be created, or is a file shindan wrote:
    its first CSV row is ``owned_header`` (the exact header row the command writes, or a
    test on the row). ``force`` allows replacing any file (never a folder).

    Parameters
    ----------
    target : path
        The file to write.
    owned_header : sequence of str or callable, optional
        The header row that marks a file as shindan's; None: no existing file is replaced.
    force : bool
        Replace an existing file whatever it holds (the command's ``--force``).
    force_option : bool
        Whether the command offers ``--force`` (named in the message).

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> (d / "p.csv").write_text("image,label,p_a,p_b\\nx.png,a,0.9,0.1\\n")
    36
    >>> check_output_file(d / "p.csv", ["image", "label", "p_a", "p_b"])  # ours: fine
    >>> (d / "mine.csv").write_text("id,notes\\n")
    9
    >>> check_output_file(d / "mine.csv", ["image", "label", "p_a", "p_b"])
    Traceback (most recent call last):
    ...
    shindan.errors.InputError: ...mine.csv: exists and was not written by shindan; ...
    """
    target = Path(target)
    if target.is_dir():
        raise InputError(f"{target}: is a folder; give a file name")
    if not target.exists():
        if target.is_symlink():  # a dangling link: writing would go elsewhere
            raise InputError(f"{target}: is a broken link; give another file name")
        _check_creatable(target)
        return
    if not target.is_file():
        raise InputError(f"{target}: exists and is not a regular file")
    if force:
        return
    row = first_csv_row(target) if owned_header is not None else None
    ours = row is not None and (
        owned_header(row) if callable(owned_header) else row == list(owned_header)
    )
    if not ours:
        hint = (
            "choose another name or add --force to replace it"
            if force_option
            else ("move it or choose another output")
        )
        raise InputError(f"{target}: exists and was not written by shindan; {hint}")


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; it replaces ``target`` only on success.

    The temporary file is made in the nearest existing folder; missing parent folders of
    ``target`` are created only when it is complete.
    """
    target = Path(target)
    if target.is_dir():
        raise InputError(f"{target}: is a folder; give a file name")
    stage = target.parent if target.parent.is_dir() else _existing_ancestor(target)
    if not stage.is_dir():
        raise InputError(f"{stage}: is a file, so {target} cannot be created")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix, dir=stage)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o644)  # mkstemp is private; outputs are for sharing
    try:
        yield tmp_path
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _stage_folder(target: Path) -> Path:
    """A new private-named temporary folder in the nearest existing folder of ``target``."""
    stage = target.parent if target.parent.is_dir() else _existing_ancestor(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=stage))
    tmp.chmod(0o755)  # mkdtemp is private; outputs are for sharing
    return tmp


@contextmanager
def atomic_dir(target: str | Path, owned: Owned = ()) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; it becomes ``target`` only on success.

    An existing ``target`` is replaced only after the new one is complete, and only when it
    holds nothing but names in ``owned`` or in the new output (see
    :func:`check_replaceable`); else :class:`InputError`, and ``target`` is left as it was.
    """
    target = Path(target)
    if owned:
        check_replaceable(target, owned)
    else:
        check_can_be_folder(target)
    tmp = _stage_folder(target)
    try:
        yield tmp
        new = {p.name for p in tmp.iterdir()}
        if target.exists():
            check_replaceable(target, lambda n: n in new or _is_owned(n, owned))
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def staged_files(target: str | Path) -> Iterator[Path]:
    """Yield a temporary folder; on success its files move into the folder ``target``.

    For commands that add files to an output folder (one per input) rather than replace it:
    ``target`` is created only when every file is complete, files of the same name are
    replaced (check them first with :func:`check_output_file`), and others are kept. On
    failure nothing is left, not even an empty ``target``.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> with staged_files(d / "out") as tmp:
    ...     _ = (tmp / "a_cam.png").write_bytes(b"png")
    >>> sorted(p.name for p in (d / "out").iterdir())
    ['a_cam.png']
    """
    target = Path(target)
    check_can_be_folder(target)
    tmp = _stage_folder(target)
    try:
        yield tmp
        target.mkdir(parents=True, exist_ok=True)
        for f in sorted(tmp.iterdir()):
            os.replace(f, target / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
