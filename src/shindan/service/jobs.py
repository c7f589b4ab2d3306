"""AI tasks as persistent jobs: the catalog of tasks, and the queue's state changes.

A job is created ``queued``. A worker claims it atomically (an ``UPDATE ... WHERE
state = 'queued'``, after ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL), which makes
it ``running`` under a lease the worker renews while the task runs. A worker that dies stops
renewing: once the lease has expired the job is queued again (or ``failed`` after
``max_attempts`` claims). The worker's last step, ``done`` or ``failed``, only applies while
it still holds the lease, so a job cancelled or taken over meanwhile is left alone.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shindan.errors import ServiceError
from shindan.models.registry import list_models
from shindan.service import audit
from shindan.service.models import Case, Job, User, utcnow

# how many claims a job gets before a worker that keeps dying marks it failed
MAX_ATTEMPTS = 3
# what the database keeps of a task's output (the end of it)
LOG_CHARS = 64_000
FINISHED = ("done", "failed", "cancelled")


class JobError(ServiceError):
    """A job request names an unknown task or model, or parameters the task does not take."""


@dataclass(frozen=True)
class Param:
    """A parameter a task accepts: its type, range or choices, and the option it becomes."""

    name: str
    kind: str  # "int", "float" or "str"
    option: str
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()

    def check(self, value: object) -> object:
        """``value`` if it suits this parameter; :class:`JobError` otherwise."""
        if self.kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif self.kind == "float":
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            ok = ok and math.isfinite(value)
        else:
            ok = isinstance(value, str) and value in self.choices
        if ok and self.kind != "str":
            ok = (self.minimum is None or value >= self.minimum) and (
                self.maximum is None or value <= self.maximum
            )
        if not ok:
            raise JobError(f"parameter {self.name}: {value!r} is not {self.describe()}")
        return value

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        return (
            f"a{'n' if self.kind == 'int' else ''} {self.kind} in [{self.minimum}, {self.maximum}]"
        )


@dataclass(frozen=True)
class Task:
    """A shindan command run on a case's files: ``inputs`` is the folder of the case's files,
    ``OUT`` the outputs folder, ``MODEL`` the model name."""

    name: str
    description: str
    command: tuple[str, ...]
    # the model cards' task ("classification") or explicit model names
    model_task: str | None = None
    model_names: tuple[str, ...] = ()
    params: tuple[Param, ...] = field(default=())

    def models(self) -> dict[str, str]:
        """Model name -> version of the shipped models this task runs."""
        return {
            card.name: card.version
            for card in list_models()
            if card.task == self.model_task or card.name in self.model_names
        }

    def argv(self, model: str, params: dict, out: str) -> list[str]:
        """The command line (after ``shindan``) for ``model`` and checked ``params``."""
        args = [
            out + a[3:] if a.startswith("OUT") else model if a == "MODEL" else a
            for a in self.command
        ]
        by_name = {p.name: p for p in self.params}
        for name in sorted(params):
            args += [by_name[name].option, str(params[name])]
        return args


MPP = Param("mpp", "float", "--mpp", "µm/px when the file has none.", 0.01, 100.0)
BATCH = Param("batch_size", "int", "--batch-size", "Images per inference batch.", 1, 256)
TASKS = {
    t.name: t
    for t in (
        Task(
            "classify predict",
            "Classify every image of the case: predictions.csv, one row per image with the "
            "class probabilities.",
            ("classify", "predict", "MODEL", "inputs", "--out", "OUT/predictions.csv", "--quiet"),
            model_task="classification",
            params=(BATCH,),
        ),
        Task(
            "nuclei segment",
            "Nucleus instances of every image or slide: <stem>_nuclei.tif and .geojson.",
            ("nuclei", "segment", "inputs", "--out", "OUT", "--model", "MODEL", "--quiet"),
            model_names=("nuclei",),
            params=(MPP,),
        ),
        Task(
            "kidney analyze",
            "Kidney biopsy: compartments, interstitial nuclei, fibrosis and inflammation "
            "scores, glomeruli, report.",
            (
                "kidney",
                "analyze",
                "inputs",
                "--out",
                "OUT",
                "--compartments-model",
                "MODEL",
                "--quiet",
            ),
            model_names=("kidney-compartments",),
            params=(MPP,),
        ),
        Task(
            "explain",
            "Class-activation heatmaps of a classifier on every image: <image>_cam.png and "
            "attention.csv.",
            ("explain", "MODEL", "inputs", "--out", "OUT", "--quiet"),
            model_task="classification",
            params=(
                Param(
                    "method",
                    "str",
                    "--method",
                    "The heatmap method.",
                    choices=("gradcam", "gradcam++", "scorecam", "eigencam", "ablationcam"),
                ),
                Param("batch_size", "int", "--batch-size", "Images per batch.", 1, 256),
            ),
        ),
    )
}


def check_request(task: str, model: str | None, params: dict | None) -> tuple[Task, str, str]:
    """The task, model name and model version of a job request; :class:`JobError` if any
    part is unknown or a parameter is out of range.

    Examples
    --------
    >>> check_request("classify predict", "wbc", {"batch_size": 8})[1:]
    ('wbc', '2.1')
    >>> check_request("classify predict", "nuclei", {})
    Traceback (most recent call last):
    ...
    shindan.service.jobs.JobError: task classify predict does not run model nuclei ...
    """
    if task not in TASKS:
        raise JobError(f"no task {task!r} (tasks: {', '.join(TASKS)})")
    spec = TASKS[task]
    models = spec.models()
    if model is None and len(models) == 1:
        model = next(iter(models))
    if model is None:
        raise JobError(f"task {task} needs a model (models: {', '.join(models)})")
    if model not in models:
        raise JobError(f"task {task} does not run model {model} (models: {', '.join(models)})")
    known = {p.name: p for p in spec.params}
    for name, value in (params or {}).items():
        if name not in known:
            raise JobError(f"task {task} takes no parameter {name!r} (takes: {', '.join(known)})")
        known[name].check(value)
    return spec, model, models[model]


def create_job(
    session: Session,
    case: Case,
    user: User,
    task: str,
    model: str | None,
    params: dict | None,
    client: str | None = None,
) -> Job:
    """Queue ``task`` with ``model`` on ``case`` (audited as ``job.create``)."""
    spec, model, version = check_request(task, model, params)
    job = Job(
        public_id=secrets.token_hex(16),
        site_id=case.site_id,
        case_id=case.id,
        user_id=user.id,
        task=spec.name,
        model=model,
        model_version=version,
        params=dict(params or {}),
        state="queued",
        progress=0.0,
        log="",
        attempts=0,
        max_attempts=MAX_ATTEMPTS,
    )
    session.add(job)
    session.flush()
    audit.record(
        session,
        user,
        "job.create",
        f"job:{job.public_id}",
        {"case": case.public_id, "task": spec.name, "model": model, "params": job.params},
        client,
    )
    return job


def cancel_job(session: Session, job: Job) -> bool:
    """Cancel a queued or running job (its worker stops the task at its next heartbeat);
    False when it had finished already."""
    result = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.state.in_(("queued", "running")))
        .values(state="cancelled", finished_at=utcnow(), lease_owner=None)
    )
    session.flush()
    session.refresh(job)
    return result.rowcount == 1


def requeue_expired(session: Session) -> int:
    """Queue again the running jobs whose lease expired (their worker died), or mark them
    failed after ``max_attempts`` claims. Returns how many were changed."""
    now = utcnow()
    query = select(Job).where(Job.state == "running", Job.lease_expires_at < now)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(of=Job, skip_locked=True)
    changed = 0
    for job in session.scalars(query):
        note = f"[lease of {job.lease_owner} expired at {job.lease_expires_at}; "
        if job.attempts >= job.max_attempts:
            job.state, job.finished_at = "failed", now
            note += f"{job.attempts} attempts: failed]\n"
        else:
            job.state = "queued"
            note += "queued again]\n"
        job.lease_owner, job.lease_expires_at, job.progress = None, None, 0.0
        job.log = (job.log + note)[-LOG_CHARS:]
        changed += 1
    session.commit()
    return changed


def claim_job(session: Session, owner: str, lease: timedelta) -> Job | None:
    """Take the oldest queued job for worker ``owner`` (None when none is queued)."""
    query = select(Job.id).where(Job.state == "queued").order_by(Job.id).limit(1)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(of=Job, skip_locked=True)
    job_id = session.scalar(query)
    if job_id is None:
        session.rollback()
        return None
    now = utcnow()
    # the WHERE on the state makes the claim atomic on SQLite too: one worker's UPDATE wins
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == "queued")
        .values(
            state="running",
            lease_owner=owner,
            lease_expires_at=now + lease,
            attempts=Job.attempts + 1,
            started_at=now,
            progress=0.0,
        )
    )
    session.commit()
    if result.rowcount != 1:
        return None
    return session.get(Job, job_id, populate_existing=True)


def renew_lease(session: Session, job_id: int, owner: str, lease: timedelta) -> bool:
    """Extend ``owner``'s lease; False when the job was cancelled or taken over."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == owner, Job.state == "running")
        .values(lease_expires_at=utcnow() + lease)
    )
    session.commit()
    return result.rowcount == 1


def finish_job(
    session: Session,
    job_id: int,
    owner: str,
    state: str,
    log: str,
    outputs: str | None = None,
) -> bool:
    """Mark ``owner``'s running job done or failed (not committed: the caller commits after
    putting the outputs in place). False when ``owner`` no longer holds it."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == owner, Job.state == "running")
        .values(
            state=state,
            log=log[-LOG_CHARS:],
            outputs=outputs,
            progress=1.0 if state == "done" else Job.progress,
            finished_at=utcnow(),
            lease_owner=None,
            lease_expires_at=None,
        )
    )
    return result.rowcount == 1


def visible_job(session: Session, user: User, public_id: str) -> Job | None:
    """The job ``public_id`` if ``user`` may see its case."""
    from shindan.service.access import visible_cases

    case_ids = visible_cases(user).with_only_columns(Case.id).order_by(None)
    return session.scalar(select(Job).where(Job.public_id == public_id, Job.case_id.in_(case_ids)))


def case_jobs(session: Session, case: Case, limit: int = 200) -> list[Job]:
    """A case's jobs, newest first."""
    query = select(Job).where(Job.case_id == case.id).order_by(Job.id.desc()).limit(limit)
    return list(session.scalars(query))


__all__ = [
    "FINISHED",
    "TASKS",
    "JobError",
    "Param",
    "Task",
    "cancel_job",
    "case_jobs",
    "check_request",
    "claim_job",
    "create_job",
    "finish_job",
    "renew_lease",
    "requeue_expired",
    "visible_job",
]
