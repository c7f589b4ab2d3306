"""Write outputs under a temporary name and rename when complete: nothing half-written."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

from shindan.errors import InputError


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; it replaces ``target`` only on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o644)  # mkstemp is private; outputs are for sharing
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def check_can_be_folder(target: str | Path) -> None:
    """:class:`InputError` if ``target`` is a file, or cannot be created because a parent
    is one."""
    target = Path(target)
    if target.exists():
        if not target.is_dir():
            raise InputError(f"{target}: exists and is not a folder")
        return
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{parent}: is a file, so {target} cannot be created")
            return


def check_replaceable(target: str | Path, owned: Collection[str] = ()) -> None:
    """Raise :class:`InputError` unless an output folder may be written at ``target``.

    It may when ``target`` does not exist (and no parent is a file), or is a folder holding
    only entries named in ``owned`` (what the command writes there): a user's other files are
    never replaced.

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
    extra = sorted(p.name for p in target.iterdir() if p.name not in set(owned))
    if extra:
        listed = ", ".join(extra[:3]) + (", …" if len(extra) > 3 else "")
        raise InputError(
            f"{target}: holds files shindan did not write ({listed}); choose another output "
            "folder or move them"
        )


@contextmanager
def atomic_dir(target: str | Path, owned: Collection[str] = ()) -> Iterator[Path]:
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
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp is private; outputs are for sharing
    try:
        yield tmp
        if target.exists():
            check_replaceable(target, {*owned, *(p.name for p in tmp.iterdir())})
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
