"""AI tasks as jobs: the catalog, a job's life on real shipped models and real blood-cell
images stored in a case, site isolation on every job route, and a worker killed with
SIGKILL mid-task whose job another worker finishes with the same outputs as an
uninterrupted run. Runs on SQLite and PostgreSQL; skips when ../shared/data is absent."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from shindan.service.intake import store_path
from shindan.service.models import Case, CaseFile, Job
from shindan.service.worker import Worker, job_folder

BLOOD = Path(__file__).resolve().parents[3] / "shared" / "data" / "blood" / "pbc"


# Enough images that `classify predict` runs for seconds even on a fast, idle machine (about
# 350 images/s here), so a worker can be killed or stopped while the task is mid-way.
SLOW_CASE = 3000


def _images(count: int) -> list[Path]:
    if not BLOOD.is_dir():
        pytest.skip(f"shared data absent: {BLOOD}")
    found, seen = [], set()
    for path in sorted(BLOOD.rglob("*.jpg")):  # distinct contents: a case stores each once
        digest = hashlib.sha256(path.read_bytes()).digest()
        if digest not in seen and len(found) < count:
            seen.add(digest)
            found.append(path)
    if len(found) < count:
        pytest.skip(f"{BLOOD} has fewer than {count} images")
    return found


def _store(api, case_id: str, images: list[Path]) -> None:
    """Put ``images`` in the case's storage as intake does (content under its SHA-256)."""
    settings = api.database.settings
    with api.database.session() as session:
        case = session.query(Case).filter_by(public_id=case_id).one()
        for image in images:
            data = image.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            target = store_path(settings, digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            session.add(
                CaseFile(
                    case_id=case.id,
                    sha256=digest,
                    size=len(data),
                    path=f"images/{image.name}",
                    modality="image",
                )
            )


def _job(api, user: str, job_id: str) -> dict:
    answer = api.call("GET", f"/api/jobs/{job_id}", user)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _queue(api, user: str, case_id: str, **body) -> dict:
    answer = api.call("POST", f"/api/cases/{case_id}/jobs", user, json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_task_catalog_from_the_model_registry(api):
    tasks = {t["name"]: t for t in api.call("GET", "/api/tasks", "pat").json()}
    assert set(tasks) == {"classify predict", "nuclei segment", "kidney analyze", "explain"}
    assert {m["name"] for m in tasks["classify predict"]["models"]} == {
        "wbc",
        "glomerulosclerosis",
    }
    assert [m["name"] for m in tasks["kidney analyze"]["models"]] == ["kidney-compartments"]
    assert [m["name"] for m in tasks["nuclei segment"]["models"]] == ["nuclei"]
    assert [p["name"] for p in tasks["classify predict"]["params"]] == ["batch_size"]
    method = tasks["explain"]["params"][0]
    assert method["name"] == "method" and "gradcam" in method["choices"]


def test_job_lifecycle(api):
    images = _images(3)
    case_id = api.add_case("ana", "K1")
    _store(api, case_id, images)
    for body, why in (
        ({"task": "segment everything"}, "no task"),
        ({"task": "classify predict", "model": "nuclei"}, "does not run model"),
        ({"task": "classify predict", "model": "wbc", "params": {"batch_size": 0}}, "not an"),
        ({"task": "classify predict", "model": "wbc", "params": {"rm": "-rf"}}, "no parameter"),
        ({"task": "explain", "model": "wbc", "params": {"method": "x; ls"}}, "one of"),
    ):
        answer = api.call("POST", f"/api/cases/{case_id}/jobs", "ana", json=body)
        assert answer.status_code == 422 and why in answer.json()["detail"], answer.text

    job = _queue(api, "ana", case_id, task="classify predict", model="wbc")
    assert job["state"] == "queued" and job["model_version"] == "2.1" and job["outputs"] is None
    cancelled = _queue(api, "ana", case_id, task="classify predict", model="glomerulosclerosis")
    answer = api.call("POST", f"/api/jobs/{cancelled['id']}/cancel", "adm")
    assert answer.status_code == 200 and answer.json()["state"] == "cancelled"

    worker = Worker(api.database, lease=timedelta(seconds=30), poll=0.1)
    assert worker.run_one() is True
    assert worker.run_one() is False  # the cancelled job is never run
    done = _job(api, "ana", job["id"])
    assert done["state"] == "done", done["log"]
    assert (
        done["attempts"] == 1 and done["progress"] == 1.0 and done["outputs"] == ["predictions.csv"]
    )
    assert "classify predict wbc inputs" in done["log"]
    assert _job(api, "ana", cancelled["id"])["state"] == "cancelled"
    listed = api.call("GET", f"/api/cases/{case_id}/jobs", "adm").json()
    assert [j["id"] for j in listed] == [cancelled["id"], job["id"]]

    answer = api.call("GET", f"/api/jobs/{job['id']}/outputs/predictions.csv", "ana")
    assert answer.status_code == 200, answer.text
    rows = answer.text.strip().splitlines()
    assert rows[0].startswith("image,label,p_basophil")
    assert sorted(r.split(",")[0] for r in rows[1:]) == sorted(f"inputs/{p.name}" for p in images)
    # each row's label is the class of highest probability (a real model's answer)
    for row in rows[1:]:
        cells = row.split(",")
        probs = dict(zip(rows[0].split(",")[2:], map(float, cells[2:]), strict=True))
        assert cells[1] == max(probs, key=probs.get).removeprefix("p_")
    # nothing outside the outputs folder is served
    for name in (
        "..%2F..%2Fservice.json",
        "..%2Finputs%2F" + images[0].name,
        "%2Fetc%2Fpasswd",
        "inputs",
        "no-such.csv",
        ".%2Fpredictions.csv",
    ):
        answer = api.call("GET", f"/api/jobs/{job['id']}/outputs/{name}", "ana")
        assert answer.status_code == 404, (name, answer.text)
    assert api.call("POST", f"/api/jobs/{job['id']}/cancel", "ana").status_code == 409

    actions = [(e["actor"], e["action"]) for e in api.call("GET", "/api/audit", "adm").json()]
    for expected in (
        ("ana", "job.create"),
        ("adm", "job.cancel"),
        ("ana", "job.read"),
        ("adm", "job.list"),
        ("ana", "job.output.read"),
    ):
        assert expected in actions, expected


def test_other_sites_jobs_are_404(api):
    case_id = api.add_case("ana", "K1")
    job = _queue(api, "ana", case_id, task="classify predict", model="wbc")
    for user in ("ben", "pat", "rui", "oad"):  # every role at osaka
        for method, path, body in (
            ("GET", f"/api/jobs/{job['id']}", None),
            ("POST", f"/api/jobs/{job['id']}/cancel", None),
            ("GET", f"/api/jobs/{job['id']}/outputs/predictions.csv", None),
            ("GET", f"/api/cases/{case_id}/jobs", None),
            ("POST", f"/api/cases/{case_id}/jobs", {"task": "classify predict"}),
        ):
            answer = api.call(method, path, user, json=body)
            assert answer.status_code == 404, (user, method, path, answer.text)
    assert _job(api, "adm", job["id"])["state"] == "queued"  # not cancelled by osaka
    # shared with osaka's pathologist: the job is theirs to read too
    api.call("POST", f"/api/cases/{case_id}/shares", "ana", json={"user": "pat"})
    assert _job(api, "pat", job["id"])["id"] == job["id"]
    assert api.call("GET", f"/api/jobs/{job['id']}", "ben").status_code == 404


def _wait(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.slow
def test_killed_worker_job_is_retried_with_the_same_outputs(api):
    case_id = api.add_case("ana", "K1")
    _store(api, case_id, _images(SLOW_CASE))
    data = api.database.settings.data
    lease = timedelta(seconds=2)

    # an uninterrupted run, the reference
    reference = _queue(api, "ana", case_id, task="classify predict", model="wbc")
    assert Worker(api.database, lease=lease).run_one()
    assert _job(api, "ana", reference["id"])["state"] == "done"

    job = _queue(api, "ana", case_id, task="classify predict", model="wbc")
    shindan = Path(sys.executable).with_name("shindan")
    worker = subprocess.Popen(
        [
            str(shindan),
            "worker",
            "--data",
            str(data),
            "--lease-seconds",
            "2",
            "--poll-seconds",
            "0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    folder = job_folder(api.database, job["id"])
    try:
        _wait(lambda: _job(api, "ana", job["id"])["state"] == "running", 30, "the claim")
        _wait(lambda: (folder / "attempt-1.log").exists(), 10, "the task to start")
        time.sleep(1.5)  # into the task: it has started classifying
        assert _job(api, "ana", job["id"])["state"] == "running"
        # the task has not written its table yet: the kill comes mid-task
        assert not (folder / "attempt-1.tmp" / "predictions.csv").exists()
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    # the task died with its worker (no process writes into the attempt any more)
    assert not (folder / "outputs").exists()

    # another worker: the lease expires, the job is queued again and run by it
    rescuer = Worker(api.database, lease=lease, poll=0.1)
    _wait(lambda: rescuer.run_one(), 30, "the lease to expire")
    finished = _job(api, "ana", job["id"])
    assert finished["state"] == "done", finished["log"]
    assert finished["attempts"] == 2
    assert "expired" in finished["log"] and "queued again" in finished["log"]
    with api.database.session() as session:
        row = session.query(Job).filter_by(public_id=job["id"]).one()
        assert row.lease_owner is None and row.lease_expires_at is None
    # only the inputs and the finished outputs are left, equal to the uninterrupted run's
    assert sorted(p.name for p in folder.iterdir()) == ["inputs", "outputs"]
    ours = (folder / "outputs" / "predictions.csv").read_bytes()
    theirs = job_folder(api.database, reference["id"]) / "outputs" / "predictions.csv"
    assert ours == theirs.read_bytes()
    assert ours.count(b"\n") == SLOW_CASE + 1


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads processes from /proc")
def test_serve_runs_jobs_in_its_workers(tmp_path):
    import json
    import urllib.request

    from shindan.service import accounts
    from shindan.service.cases import add_case
    from shindan.service.db import open_service

    from .conftest import free_port

    images = _images(3)
    data = tmp_path / "svc"
    database = open_service(data)
    with database.session() as session:
        accounts.add_site(session, "kyoto")
        accounts.add_user(session, "ana", "kyoto", "uploader")
        token = accounts.issue_token(session, "ana")[1]
        case_id = add_case(session, accounts.get_site(session, "kyoto"), "K1", "test").public_id

    class _Api:  # what _store needs
        pass

    holder = _Api()
    holder.database = database
    _store(holder, case_id, images)
    database.close()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    shindan = str(Path(sys.executable).with_name("shindan"))
    serve = subprocess.Popen(
        [shindan, "serve", "--data", str(data), "--port", str(port), "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def call(method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            base + path,
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    try:
        _wait(lambda: _answers(base), 60, "shindan serve")
        workers = _children(serve.pid)
        assert len(workers) == 2
        job = call(
            "POST", f"/api/cases/{case_id}/jobs", {"task": "classify predict", "model": "wbc"}
        )
        assert job["state"] == "queued"
        _wait(lambda: call("GET", f"/api/jobs/{job['id']}")["state"] == "done", 60, "the job")
        assert call("GET", f"/api/jobs/{job['id']}")["outputs"] == ["predictions.csv"]
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
    # the workers stop with the service
    assert not [pid for pid in workers if _alive(pid)]


def _answers(base: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{base}/api/health", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


@pytest.mark.slow
def test_stopped_worker_queues_its_job_again(api):
    case_id = api.add_case("ana", "K1")
    _store(api, case_id, _images(SLOW_CASE))
    job = _queue(api, "ana", case_id, task="classify predict", model="wbc")
    shindan = Path(sys.executable).with_name("shindan")
    data = api.database.settings.data
    worker = subprocess.Popen(
        [str(shindan), "worker", "--data", str(data), "--lease-seconds", "3"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    folder = job_folder(api.database, job["id"])
    try:
        _wait(lambda: (folder / "attempt-1.log").exists(), 30, "the task to start")
        assert not (folder / "attempt-1.tmp" / "predictions.csv").exists()
    finally:
        worker.send_signal(signal.SIGTERM)  # what shindan serve sends its workers at exit
        stderr = worker.communicate(timeout=30)[1]
    assert worker.returncode == 0, stderr
    again = _job(api, "ana", job["id"])
    # a stop on purpose: queued again at once, no attempt used up, nothing of it kept
    assert again["state"] == "queued" and again["attempts"] == 0, again
    assert "worker stopped: queued again" in again["log"]
    assert not (folder / "outputs").exists() and not (folder / "attempt-1.tmp").exists()
