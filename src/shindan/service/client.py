"""Sending a ``shindan deid`` export to a service (``shindan upload``): manifest, the files
the service still needs in chunks (resuming where it stopped), then completion."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

from shindan.errors import InputError, ServiceError

CHUNK = 8 * 2**20


class Refused(ServiceError):
    """The service's check refused the export (the reason is the message)."""


def _call(
    method: str, url: str, token: str, body: bytes | None = None, content_type: str | None = None
) -> tuple[int, dict, dict]:
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=600) as answer:
            return answer.status, json.loads(answer.read() or b"null"), dict(answer.headers)
    except urllib.error.HTTPError as error:
        try:
            payload = json.loads(error.read() or b"null")
        except ValueError:
            payload = {"detail": error.reason}
        return error.code, payload, dict(error.headers)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServiceError(f"cannot reach {url.split('/api/')[0]} ({reason})") from None


def _detail(status: int, payload: object) -> str:
    detail = payload.get("detail") if isinstance(payload, dict) else None
    return f"{status} {detail if isinstance(detail, str) else json.dumps(detail)}"


def upload_export(
    export: str | Path,
    url: str,
    token: str,
    chunk: int = CHUNK,
    progress: bool = True,
) -> dict:
    """Send the export folder ``export`` to the service at ``url``; the stored upload.

    Parameters
    ----------
    export : path
        A ``shindan deid --out`` folder (with its ``manifest.json``).
    url : str
        The service's address, e.g. ``http://127.0.0.1:8000``.
    token : str
        An uploader's API token.
    chunk : int
        Bytes per request.
    progress : bool
        Report files on stderr.

    Returns
    -------
    dict
        The upload as the service describes it (``id``, ``state``, ``files`` ...).

    Raises
    ------
    Refused
        The service's ``deid check`` found identifiers: nothing was stored.
    """
    export = Path(export)
    manifest_path = export / "manifest.json"
    if not manifest_path.is_file():
        raise InputError(f"{export}: no manifest.json (not a shindan deid export)")
    manifest = manifest_path.read_bytes()
    base = url.rstrip("/")
    status, upload, _ = _call("POST", f"{base}/api/uploads", token, manifest, "application/json")
    if status not in (200, 201):
        raise ServiceError(f"the service refused the manifest: {_detail(status, upload)}")
    if upload["state"] != "open":
        return upload
    needed = [f for f in upload["files"] if f["status"] in ("needed", "partial")]
    for n, f in enumerate(needed, start=1):
        path = export / f["path"]
        if not path.is_file() or path.stat().st_size != f["bytes"]:
            raise InputError(f"{path}: missing or not the size the manifest says")
        if progress:
            print(f"upload {n}/{len(needed)} {f['path']}", file=sys.stderr)
        offset, restarts = f["received"], 0
        target = f"{base}/api/uploads/{upload['id']}/files/{f['index']}"
        with open(path, "rb") as handle:
            while offset < f["bytes"]:
                handle.seek(offset)
                data = handle.read(chunk)
                status, answer, headers = _call(
                    "PUT", f"{target}?offset={offset}", token, data, "application/octet-stream"
                )
                if status == 200:
                    offset = answer["received"]
                    continue
                expected = {k.lower(): v for k, v in headers.items()}.get("upload-offset")
                restarts += 1
                # another offset (a chunk lost in transit) or bytes changed: resume or restart
                if restarts <= 3 and (expected is not None or status == 422):
                    offset = int(expected) if expected is not None else 0
                    continue
                raise ServiceError(f"{f['path']}: {_detail(status, answer)}")
    status, done, _ = _call("POST", f"{base}/api/uploads/{upload['id']}/complete", token)
    if status != 200:
        raise ServiceError(f"completing the upload: {_detail(status, done)}")
    if done["state"] == "refused":
        raise Refused(done["reason"])
    return done
