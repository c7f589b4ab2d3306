"""Workers: processes that claim queued jobs and run them as ``shindan`` commands.

A job runs in ``DATA/jobs/<job id>/``: ``inputs/`` links the case's stored files under their
own names, the command writes into ``attempt-<n>.tmp/``, and only a finished task's folder is
renamed to ``outputs/`` (with the job marked done in the same transaction), so a worker
killed mid-task leaves nothing a retry could mix into its results.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from shindan.service.db import Database
from shindan.service.intake import store_path
from shindan.service.jobs import (
    LOG_CHARS,
    TASKS,
    claim_job,
    finish_job,
    renew_lease,
    requeue_expired,
)
from shindan.service.models import CaseFile, Job

LEASE = timedelta(seconds=30)


def job_folder(database: Database, public_id: str) -> Path:
    """Where a job's inputs, attempts and outputs live."""
    return database.settings.data / "jobs" / public_id


def _shindan() -> list[str]:
    # the console script next to this interpreter, else the same entry point through it
    script = Path(sys.executable).with_name("shindan")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from shindan.cli import main; main()"]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    # Linux: the task is killed when its worker dies (kill -9 included), so a dead worker's
    # task does not run on beside its retry
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _link_inputs(database: Database, job: Job, folder: Path) -> None:
    """``folder`` made anew with a link per stored file of the job's case, named as sent."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    with database.sessions() as session:
        rows = list(
            session.scalars(
                select(CaseFile).where(CaseFile.case_id == job.case_id).order_by(CaseFile.id)
            )
        )
    used: set[str] = set()
    for entry in rows:
        name = entry.path.rsplit("/", 1)[-1]
        if name in used or name.startswith("."):
            name = f"{entry.id}_{name.lstrip('.')}"
        used.add(name)
        (folder / name).symlink_to(store_path(database.settings, entry.sha256))


class Worker:
    """Claims and runs jobs of one service database until stopped.

    Parameters
    ----------
    database : Database
        The service database (its folder holds the case files and job folders).
    lease : timedelta
        How long a claim holds without a heartbeat; heartbeats come every third of it.
    poll : float
        Seconds between looks at an empty queue.
    name : str, optional
        The lease owner's name (default host:pid).
    """

    def __init__(
        self,
        database: Database,
        lease: timedelta = LEASE,
        poll: float = 1.0,
        name: str | None = None,
    ) -> None:
        self.database = database
        self.lease = lease
        self.poll = poll
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.stopping = threading.Event()

    def stop(self) -> None:
        """Finish after the current heartbeat; the running task is stopped and queued again."""
        self.stopping.set()

    def run(self, max_jobs: int | None = None) -> int:
        """Run jobs until :meth:`stop` (or ``max_jobs`` have run). Returns how many ran."""
        ran = 0
        while not self.stopping.is_set() and (max_jobs is None or ran < max_jobs):
            if self.run_one():
                ran += 1
            else:
                self.stopping.wait(self.poll)
        return ran

    def run_one(self) -> bool:
        """Requeue expired jobs, claim one and run it; False when none was queued."""
        with self.database.sessions() as session:
            requeue_expired(session)
            job = claim_job(session, self.name, self.lease)
        if job is None:
            return False
        self._execute(job)
        return True

    def _execute(self, job: Job) -> None:
        folder = job_folder(self.database, job.public_id)
        tmp = folder / f"attempt-{job.attempts}.tmp"
        log_path = folder / f"attempt-{job.attempts}.log"
        spec = TASKS[job.task]
        try:
            _link_inputs(self.database, job, folder / "inputs")
            # what a dead worker's attempt left behind is never part of the results
            for stale in folder.glob("attempt-*"):
                shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
            tmp.mkdir()
        except OSError as exc:
            self._finish(job, "failed", f"cannot prepare the job folder: {exc}\n", None, None)
            return
        # relative paths, so outputs naming their inputs are the same on every attempt
        args = spec.argv(job.model, job.params, tmp.name)
        header = f"[attempt {job.attempts} by {self.name}] shindan {' '.join(args)}\n"
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                _shindan() + args,
                cwd=folder,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
                # Ctrl-C at a terminal reaches the worker, which stops the task itself
                start_new_session=True,
                env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
            )
            held = self._watch(job, process)
        output = log_path.read_text("utf-8", errors="replace")
        log_path.unlink(missing_ok=True)
        log = (job.log or "") + header + output
        if self.stopping.is_set() and process.returncode != 0:
            held = False  # the task was stopped with its worker: not a failure of the task
        if not held:  # cancelled, taken over or stopping: nothing of this attempt is kept
            shutil.rmtree(tmp, ignore_errors=True)
            if self.stopping.is_set():
                self._release(job, log + "[worker stopped: queued again]\n")
            return
        if process.returncode == 0:
            self._finish(job, "done", log, tmp, folder / "outputs")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
            self._finish(job, "failed", log + f"[exit status {process.returncode}]\n", None, None)

    def _watch(self, job: Job, process: subprocess.Popen) -> bool:
        """Heartbeat until the task ends; False (task killed) if the lease was lost."""
        beat = self.lease.total_seconds() / 3
        while True:
            try:
                process.wait(timeout=beat)
                return True
            except subprocess.TimeoutExpired:
                pass
            with self.database.sessions() as session:
                held = renew_lease(session, job.id, self.name, self.lease)
            if not held or self.stopping.is_set():
                process.kill()
                process.wait()
                return False

    def _finish(
        self, job: Job, state: str, log: str, tmp: Path | None, outputs: Path | None
    ) -> None:
        with self.database.sessions() as session:
            relative = str(outputs.relative_to(self.database.settings.data)) if outputs else None
            if not finish_job(session, job.id, self.name, state, log, relative):
                session.rollback()
                if tmp is not None:
                    shutil.rmtree(tmp, ignore_errors=True)
                return
            if tmp is not None and outputs is not None:
                # a folder from an attempt that died between this rename and its commit
                if outputs.exists():
                    shutil.rmtree(outputs)
                os.replace(tmp, outputs)
            session.commit()

    def _release(self, job: Job, log: str) -> None:
        with self.database.sessions() as session:
            current = session.get(Job, job.id)
            if current is not None and current.lease_owner == self.name:
                current.state, current.lease_owner, current.lease_expires_at = "queued", None, None
                current.attempts -= 1  # a stop on purpose does not use up an attempt
                current.log = log[-LOG_CHARS:]
                session.commit()


def run_worker(database: Database, lease: timedelta = LEASE, poll: float = 1.0) -> None:
    """Run a :class:`Worker` until SIGTERM or Ctrl-C (the running job is queued again)."""
    worker = Worker(database, lease=lease, poll=poll)

    def _stop(_signum, _frame) -> None:  # noqa: ANN001
        worker.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    worker.run()


def start_workers(data: Path, count: int) -> list[subprocess.Popen]:
    """Start ``count`` ``shindan worker`` processes on the service folder ``data``."""
    return [
        subprocess.Popen(_shindan() + ["worker", "--data", str(data)], stdin=subprocess.DEVNULL)
        for _ in range(count)
    ]


def stop_workers(processes: list[subprocess.Popen], timeout: float = 30) -> None:
    """Stop workers from :func:`start_workers` (SIGTERM: their running jobs are queued again)."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
