"""The site's secret: one key file, created with a new random secret when missing.

Every keyed value of an export (pseudonyms, remapped UIDs, date shifts, the encryption of the
linkage table) derives from this one secret, so repeated exports of the same patient agree and
nobody without the file can recompute or reverse them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from shindan.errors import InputError

_HEADER = "shindan-deid-key v1"
_SECRET_BYTES = 32


def load_or_create_secret(path: str | Path) -> bytes:
    """Read the site secret from ``path``, creating the file with a new secret when missing.

    The file is created readable by its owner only (mode 0600) and never overwritten.

    Parameters
    ----------
    path : str or Path
        The key file.

    Returns
    -------
    secret : bytes
        32 random bytes.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> key = pathlib.Path(tempfile.mkdtemp()) / "site.key"
    >>> load_or_create_secret(key) == load_or_create_secret(key)
    True
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a key file")
    if not path.exists():
        if not path.parent.is_dir():
            raise InputError(f"{path.parent}: no such folder for the key file")
        value = secrets.token_bytes(_SECRET_BYTES)
        text = f"{_HEADER}\n{base64.b64encode(value).decode()}\n"
        # O_EXCL: never replace a key another process created meanwhile
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        return value
    lines = path.read_text(errors="replace").split()
    try:
        if lines[0:2] != _HEADER.split():
            raise ValueError
        value = base64.b64decode(lines[2], validate=True)
    except (IndexError, ValueError):
        raise InputError(f"{path}: not a shindan key file") from None
    if len(value) != _SECRET_BYTES:
        raise InputError(f"{path}: not a shindan key file (wrong secret length)")
    return value


def derive(secret: bytes, purpose: str, value: str = "") -> bytes:
    """HMAC-SHA256 of ``value`` under a key derived for ``purpose`` (domain separation).

    Examples
    --------
    >>> a = derive(b"k" * 32, "patient", "12345")
    >>> a == derive(b"k" * 32, "patient", "12345"), a == derive(b"k" * 32, "uid", "12345")
    (True, False)
    """
    subkey = hmac.new(secret, purpose.encode(), hashlib.sha256).digest()
    return hmac.new(subkey, value.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
