"""Password hashes (argon2id) and API tokens (random, stored only as SHA-256 digests).

A token carries 256 random bits, so a fast digest is enough to store it: nobody can guess
a token from its digest, and a digest can be looked up directly. Passwords are chosen by
people and get argon2's slow, salted hash.
"""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

TOKEN_PREFIX = "shd_"
# characters of a token kept in clear (``shd_`` + 8) to tell tokens apart in listings
SHOWN = len(TOKEN_PREFIX) + 8

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` (salted; a new salt each call).

    Examples
    --------
    >>> h = hash_password("correct horse")
    >>> verify_password(h, "correct horse"), verify_password(h, "wrong")
    (True, False)
    """
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    """A new API token: ``shd_`` and 43 URL-safe characters (256 random bits).

    Examples
    --------
    >>> t = new_token()
    >>> t.startswith("shd_"), len(t)
    (True, 47)
    """
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """The SHA-256 hex digest under which a token is stored.

    Examples
    --------
    >>> len(token_digest("shd_x"))
    64
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
