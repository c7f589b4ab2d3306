"""Keyed pseudonyms: the same input and site secret always give the same output.

Patient pseudonyms, study labels, DICOM UIDs (``2.25.`` form, PS3.5 B.2) and a per-patient date
shift (so intervals between a patient's dates survive) all derive from the site secret with
HMAC-SHA256; without the secret they can be neither recomputed nor reversed.
"""

from __future__ import annotations

import base64
import datetime as dt
import re

from shindan.deid.secret import derive

# Dates move back by 1..3650 days, the same number for every date of one patient.
MAX_SHIFT_DAYS = 3650
_SITE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")


def check_site(site: str) -> str:
    """Return ``site`` if it is a usable site code (letters, digits, ``-``, ``_``; ≤ 32)."""
    from shindan.errors import InputError

    if not _SITE.match(site):
        raise InputError(f"--site {site!r}: use 1-32 letters, digits, '-' or '_'")
    return site


class Pseudonymiser:
    """Pseudonyms, UIDs and date shifts of one site, keyed by its secret.

    Parameters
    ----------
    secret : bytes
        The site secret (:func:`shindan.deid.secret.load_or_create_secret`).
    site : str
        The site code, the prefix of every pseudonym.

    Examples
    --------
    >>> p = Pseudonymiser(b"s" * 32, "KYOTO")
    >>> p.patient("12345") == p.patient("12345"), p.patient("12345").startswith("KYOTO-")
    (True, True)
    >>> p.uid("1.2.3").startswith("2.25."), p.uid("1.2.3") == p.uid("1.2.3")
    (True, True)
    >>> p.shift_date("20200131", "12345") < "20200131"
    True
    """

    def __init__(self, secret: bytes, site: str) -> None:
        self._secret = secret
        self.site = check_site(site)

    def _code(self, purpose: str, value: str, length: int) -> str:
        digest = derive(self._secret, purpose, f"{self.site}\x00{value}")
        return base64.b32encode(digest).decode().rstrip("=")[:length]

    def patient(self, patient_id: str) -> str:
        """The patient's pseudonym, ``SITE-`` and 10 base-32 characters (50 bits)."""
        return f"{self.site}-{self._code('patient', patient_id.strip(), 10)}"

    def study(self, patient_id: str, study_key: str) -> str:
        """A study label, unique within the patient: ``S`` and 8 base-32 characters."""
        return "S" + self._code("study", f"{patient_id.strip()}\x00{study_key}", 8)

    def uid(self, uid: str) -> str:
        """A remapped UID, ``2.25.`` and a 128-bit integer; the same UID maps the same way in
        every file and every export, so references between objects stay valid."""
        digest = derive(self._secret, "uid", uid.strip().rstrip("\x00"))
        return f"2.25.{int.from_bytes(digest[:16], 'big')}"

    def shift_days(self, patient_id: str) -> int:
        """Days every date of this patient moves back (1 to :data:`MAX_SHIFT_DAYS`)."""
        digest = derive(self._secret, "date-shift", f"{self.site}\x00{patient_id.strip()}")
        return 1 + int.from_bytes(digest[:4], "big") % MAX_SHIFT_DAYS

    def shift_date(self, value: str, patient_id: str) -> str:
        """A DICOM date (``YYYYMMDD``) or the date part of a datetime, moved back by
        :meth:`shift_days`; the rest of a datetime (time, offset) is kept."""
        day = dt.datetime.strptime(value[:8], "%Y%m%d").date()
        moved = day - dt.timedelta(days=self.shift_days(patient_id))
        return moved.strftime("%Y%m%d") + value[8:]
