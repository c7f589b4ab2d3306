"""The API of AI tasks and jobs: the catalog, queueing a task on a case, following and
cancelling jobs, and reading their output files. A job is reached only through its case
(:mod:`shindan.service.access`): another site's job answers 404 like a missing one."""

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field, StringConstraints
from sqlalchemy.orm import Session

from shindan.service import audit
from shindan.service.jobs import TASKS, JobError, cancel_job, case_jobs, create_job, visible_job
from shindan.service.models import Case, Job, User, iso
from shindan.service.settings import Settings

Text = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$", max_length=64)]


class ParamOut(BaseModel):
    name: str
    type: Literal["int", "float", "str"]
    help: str
    minimum: float | None
    maximum: float | None
    choices: list[str]


class ModelOut(BaseModel):
    name: str
    version: str


class TaskOut(BaseModel):
    name: str
    description: str
    models: list[ModelOut]
    params: list[ParamOut]


class JobIn(BaseModel):
    task: Text = Field(description="A task of GET /api/tasks, e.g. 'classify predict'.")
    model: Text | None = Field(None, description="One of the task's models (default: its only).")
    params: dict[str, int | float | str] = Field(
        default_factory=dict, description="Parameters the task accepts (GET /api/tasks)."
    )


class JobOut(BaseModel):
    id: str
    case: str
    task: str
    model: str
    model_version: str
    params: dict
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    progress: float
    attempts: int
    log: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    outputs: list[str] | None = Field(
        description="Output files (GET /api/jobs/{id}/outputs/{name}) once done."
    )


def task_catalog() -> list[TaskOut]:
    """The tasks jobs can run, with their shipped models and parameters."""
    return [
        TaskOut(
            name=t.name,
            description=t.description,
            models=[ModelOut(name=n, version=v) for n, v in sorted(t.models().items())],
            params=[
                ParamOut(
                    name=p.name,
                    type=p.kind,
                    help=p.help,
                    minimum=p.minimum,
                    maximum=p.maximum,
                    choices=list(p.choices),
                )
                for p in t.params
            ],
        )
        for t in TASKS.values()
    ]


def output_names(settings: Settings, job: Job) -> list[str] | None:
    """The files of a done job's outputs folder, as paths relative to it."""
    if job.state != "done" or not job.outputs:
        return None
    root = settings.data / job.outputs
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def output_file(settings: Settings, job: Job, name: str) -> Path | None:
    """The output file ``name`` of a done job, or None (also for names leaving the folder)."""
    if job.state != "done" or not job.outputs or "\\" in name:
        return None
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    root = (settings.data / job.outputs).resolve()
    path = root.joinpath(*parts).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


def router(
    settings: Settings,
    session_dependency: Callable,
    user_dependency: Callable,
    case_or_404: Callable[[Session, User, str], Case],
) -> APIRouter:
    """The job routes, authenticated and access-checked by the app's own dependencies."""
    routes = APIRouter(tags=["jobs"])
    SessionDep = Annotated[Session, Depends(session_dependency)]
    UserDep = Annotated[User, Depends(user_dependency)]

    def client(request: Request) -> str | None:
        return request.client.host if request.client else None

    def job_out(job: Job) -> JobOut:
        return JobOut(
            id=job.public_id,
            case=job.case.public_id,
            task=job.task,
            model=job.model,
            model_version=job.model_version,
            params=job.params,
            state=job.state,
            progress=job.progress,
            attempts=job.attempts,
            log=job.log,
            created_at=iso(job.created_at),
            started_at=iso(job.started_at) if job.started_at else None,
            finished_at=iso(job.finished_at) if job.finished_at else None,
            outputs=output_names(settings, job),
        )

    def job_or_404(session: Session, user: User, job_id: str) -> Job:
        job = visible_job(session, user, job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return job

    @routes.get("/api/tasks")
    def list_tasks(user: UserDep) -> list[TaskOut]:
        """The AI tasks jobs run: shipped models and accepted parameters of each."""
        return task_catalog()

    @routes.post("/api/cases/{case_id}/jobs", status_code=201)
    def post_job(
        request: Request, case_id: str, body: JobIn, user: UserDep, session: SessionDep
    ) -> JobOut:
        """Queue a task on a case's stored files (any user who sees the case)."""
        case = case_or_404(session, user, case_id)
        try:
            job = create_job(
                session, case, user, body.task, body.model, body.params, client(request)
            )
        except JobError as exc:
            raise HTTPException(422, str(exc)) from None
        session.commit()
        return job_out(job)

    @routes.get("/api/cases/{case_id}/jobs")
    def list_case_jobs(
        request: Request, case_id: str, user: UserDep, session: SessionDep
    ) -> list[JobOut]:
        """A case's jobs, newest first."""
        case = case_or_404(session, user, case_id)
        jobs = case_jobs(session, case)
        audit.record(session, user, "job.list", f"case:{case_id}", None, client(request))
        session.commit()
        return [job_out(j) for j in jobs]

    @routes.get("/api/jobs/{job_id}")
    def read_job(request: Request, job_id: str, user: UserDep, session: SessionDep) -> JobOut:
        """A job: state, progress, attempts, log, and its output files once done."""
        job = job_or_404(session, user, job_id)
        audit.record(session, user, "job.read", f"job:{job_id}", None, client(request))
        session.commit()
        return job_out(job)

    @routes.post("/api/jobs/{job_id}/cancel")
    def post_cancel(request: Request, job_id: str, user: UserDep, session: SessionDep) -> JobOut:
        """Cancel a queued or running job (409 once it has finished)."""
        job = job_or_404(session, user, job_id)
        if not cancel_job(session, job):
            raise HTTPException(409, f"job {job_id} has finished ({job.state})")
        audit.record(session, user, "job.cancel", f"job:{job_id}", None, client(request))
        session.commit()
        return job_out(job)

    @routes.get(
        "/api/jobs/{job_id}/outputs/{name:path}",
        response_class=FileResponse,
        responses={200: {"content": {"application/octet-stream": {}}}},
    )
    def read_output(
        request: Request, job_id: str, name: str, user: UserDep, session: SessionDep
    ) -> FileResponse:
        """An output file of a done job (a name from its ``outputs``)."""
        job = job_or_404(session, user, job_id)
        path = output_file(settings, job, name)
        if path is None:
            raise HTTPException(404, f"no output {name} of job {job_id}")
        audit.record(
            session, user, "job.output.read", f"job:{job_id}", {"name": name}, client(request)
        )
        session.commit()
        return FileResponse(path, media_type="application/octet-stream", filename=path.name)

    return routes
