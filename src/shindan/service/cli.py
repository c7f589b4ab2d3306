"""``shindan serve`` and ``shindan admin``: typer wiring over the service's functions."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from shindan.errors import ServiceError
from shindan.service.roles import ROLES

app = typer.Typer(
    help="Service accounts: sites, users, API tokens, access grants, the audit log.",
    no_args_is_help=True,
)
site_app = typer.Typer(help="Sites (hospitals, labs).", no_args_is_help=True)
user_app = typer.Typer(help="Users: one role at one site.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens (shown once; stored as digests).", no_args_is_help=True)
audit_app = typer.Typer(help="The audit log.", no_args_is_help=True)
uploads_app = typer.Typer(help="Uploads of de-identified exports.", no_args_is_help=True)
app.add_typer(site_app, name="site")
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
app.add_typer(audit_app, name="audit")
app.add_typer(uploads_app, name="uploads")

Data = Annotated[Path, typer.Option("--data", help="The service folder.", show_default=False)]
Db = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Database URL (postgresql://USER:PASS@HOST:PORT/NAME); recorded in the folder the "
        "first time. Default: SQLite inside --data.",
    ),
]


@contextmanager
def _session(data: Path, db: str | None, create: bool = False) -> Iterator:
    from shindan.service.db import open_service

    database = open_service(data, db, create=create)
    try:
        with database.session() as session:
            yield session
    finally:
        database.close()


def _say(message: str) -> None:
    typer.echo(message, err=True)


@site_app.command("add")
def site_add(
    site: Annotated[str, typer.Argument(help="Site name (letters, digits, . _ -).")],
    data: Data,
    db: Db = None,
) -> None:
    """Create a site (and the service folder when new)."""
    from shindan.service.accounts import add_site

    with _session(data, db, create=True) as session:
        add_site(session, site)
    _say(f"site {site} added")


@site_app.command("list")
def site_list(data: Data, db: Db = None) -> None:
    """List sites: name, users, cases (tab-separated)."""
    from shindan.service.accounts import list_sites

    with _session(data, db) as session:
        rows = list_sites(session)
    for site, users, cases in rows:
        typer.echo(f"{site.name}\t{users} users\t{cases} cases")


@site_app.command("grant")
def site_grant(
    site: Annotated[str, typer.Argument(help="The site whose cases become visible.")],
    data: Data,
    to_site: Annotated[
        str | None, typer.Option("--to-site", help="Every user of this site.")
    ] = None,
    to_user: Annotated[
        str | None, typer.Option("--to-user", help="One user (e.g. a researcher).")
    ] = None,
    db: Db = None,
) -> None:
    """Let another site, or one user, see all of SITE's cases."""
    from shindan.service.accounts import grant_site

    with _session(data, db) as session:
        grant_site(session, site, to_site=to_site, to_user=to_user)
    _say(
        f"site {site}: cases visible to {'site ' + to_site if to_site else 'user ' + str(to_user)}"
    )


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="User name (letters, digits, . _ -).")],
    site: Annotated[str, typer.Option("--site", help="The user's site.", show_default=False)],
    role: Annotated[
        str, typer.Option("--role", help=f"One of: {', '.join(ROLES)}.", show_default=False)
    ],
    data: Data,
    token: Annotated[
        bool, typer.Option("--token", help="Also make an API token and print it on stdout.")
    ] = False,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read a password from the first stdin line.")
    ] = False,
    db: Db = None,
) -> None:
    """Create a user with one role at one site; --token prints a new API token on stdout."""
    from shindan.service.accounts import add_user, issue_token

    password = _read_password() if password_stdin else None
    with _session(data, db) as session:
        add_user(session, name, site=site, role=role, password=password)
        secret = issue_token(session, name)[1] if token else None
    _say(f"user {name} added ({role} at {site})")
    if secret is not None:
        typer.echo(secret)


def _read_password() -> str:
    password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 12:
        raise ServiceError("--password-stdin: give a password of at least 12 characters")
    return password


@user_app.command("list")
def user_list(
    data: Data,
    site: Annotated[str | None, typer.Option("--site", help="Only this site's users.")] = None,
    db: Db = None,
) -> None:
    """List users: name, site, role, state, live tokens (tab-separated)."""
    from shindan.service.accounts import list_users

    with _session(data, db) as session:
        rows = list_users(session, site)
    for user, tokens in rows:
        state = "active" if user.active else "disabled"
        typer.echo(f"{user.name}\t{user.site.name}\t{user.role}\t{state}\t{tokens} tokens")


@user_app.command("password")
def user_password(name: Annotated[str, typer.Argument()], data: Data, db: Db = None) -> None:
    """Set a user's password from the first stdin line (for browser logins); ends their sessions."""
    from shindan.service.accounts import set_password

    password = _read_password()
    with _session(data, db) as session:
        set_password(session, name, password)
    _say(f"user {name}: password set")


@user_app.command("disable")
def user_disable(name: Annotated[str, typer.Argument()], data: Data, db: Db = None) -> None:
    """Disable a user: their tokens stop working at once."""
    from shindan.service.accounts import set_active

    with _session(data, db) as session:
        set_active(session, name, False)
    _say(f"user {name} disabled")


@user_app.command("enable")
def user_enable(name: Annotated[str, typer.Argument()], data: Data, db: Db = None) -> None:
    """Enable a disabled user again."""
    from shindan.service.accounts import set_active

    with _session(data, db) as session:
        set_active(session, name, True)
    _say(f"user {name} enabled")


@token_app.command("add")
def token_add(
    user: Annotated[str, typer.Argument(help="The token's user.")],
    data: Data,
    label: Annotated[str | None, typer.Option("--label", help="What the token is for.")] = None,
    db: Db = None,
) -> None:
    """Make a new API token for USER and print it on stdout (it is shown only this once)."""
    from shindan.service.accounts import issue_token

    with _session(data, db) as session:
        secret = issue_token(session, user, label=label)[1]
    typer.echo(secret)


@token_app.command("list")
def token_list(
    data: Data,
    user: Annotated[str | None, typer.Option("--user", help="Only this user's tokens.")] = None,
    db: Db = None,
) -> None:
    """List tokens: first characters, user, label, created, last used, state (tab-separated)."""
    from shindan.service.accounts import list_tokens
    from shindan.service.models import iso

    with _session(data, db) as session:
        rows = list_tokens(session, user)
    for t in rows:
        used = iso(t.last_used_at)[:19] if t.last_used_at else "never used"
        state = "revoked" if t.revoked_at else "live"
        created = iso(t.created_at)[:19]
        typer.echo(f"{t.prefix}…\t{t.user.name}\t{t.label or ''}\t{created}\t{used}\t{state}")


@token_app.command("revoke")
def token_revoke(
    prefix: Annotated[str, typer.Argument(help="The token's first characters (or the token).")],
    data: Data,
    db: Db = None,
) -> None:
    """Revoke a token: it stops working at once."""
    from shindan.service.accounts import revoke_token

    with _session(data, db) as session:
        record = revoke_token(session, prefix.rstrip("…"))
        owner = record.user.name
    _say(f"token {record.prefix}… of {owner} revoked")


@uploads_app.command("prune")
def uploads_prune(
    data: Data,
    older_than_hours: Annotated[
        float, typer.Option("--older-than-hours", help="Uploads started before this.", min=0)
    ] = 72,
    db: Db = None,
) -> None:
    """End uploads left open (never completed): their received bytes are deleted."""
    from datetime import timedelta

    from shindan.service.db import open_service
    from shindan.service.intake import prune_uploads

    database = open_service(data, db, create=False)
    try:
        with database.session() as session:
            ended = prune_uploads(session, database.settings, timedelta(hours=older_than_hours))
    finally:
        database.close()
    _say(f"{ended} open upload(s) ended")


@audit_app.command("export")
def audit_export(
    data: Data,
    since: Annotated[int, typer.Option("--since", help="Only entries after this id.")] = 0,
    db: Db = None,
) -> None:
    """Print the audit log as CSV on stdout: id, at, actor, action, target, detail, client."""
    from shindan.service import audit

    with _session(data, db) as session:
        text = audit.to_csv(audit.entries(session, since_id=since))
    sys.stdout.write(text)


def _check_ray(address: str) -> None:
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise ServiceError(f"--ray {address}: Ray is not installed (pip install 'ray[default]')")
    raise ServiceError(f"--ray {address}: running jobs on Ray is not available yet in this version")


def _check_port(host: str, port: int) -> None:
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise ServiceError(f"--host {host}: unknown host name") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise ServiceError(f"cannot listen on {host}:{port} ({exc.strerror})") from None


def register_serve(root: typer.Typer) -> None:
    """Add ``shindan serve`` to the root command."""

    @root.command()
    def serve(
        data: Data,
        host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", help="TCP port.", min=1, max=65535)] = 8000,
        db: Db = None,
        ray: Annotated[
            str | None, typer.Option("--ray", help="Run jobs on this Ray cluster (ADDRESS).")
        ] = None,
        workers: Annotated[
            int, typer.Option("--workers", help="Local worker processes running jobs.", min=0)
        ] = 1,
    ) -> None:
        """The platform service: the API under /api/ (OpenAPI at /openapi.json) and the web page.

        Keeps its database (SQLite by default) and files in --data; upgrades the database
        schema at start; runs AI jobs in --workers local processes. Ctrl-C stops it.
        """
        if ray is not None:
            _check_ray(ray)
        from shindan.service.app import create_app
        from shindan.service.db import Database
        from shindan.service.server import run_server
        from shindan.service.settings import load_settings

        _check_port(host, port)
        settings = load_settings(data, db)
        database = Database(settings)
        application = create_app(database)
        shown = f"[{host}]" if ":" in host else host
        _say(
            f"shindan serve: http://{shown}:{port}/ (data {settings.data}, "
            f"database {settings.dialect}); Ctrl-C stops"
        )
        from shindan.service.worker import start_workers, stop_workers

        pool = start_workers(settings.data, workers)
        try:
            run_server(application, host=host, port=port)
        finally:
            stop_workers(pool)
            database.close()
        _say("shindan serve: stopped")

    @root.command()
    def worker(
        data: Data,
        db: Db = None,
        lease_seconds: Annotated[
            float,
            typer.Option(
                "--lease-seconds",
                help="A claimed job returns to the queue this long after the worker's last "
                "heartbeat (its worker died).",
                min=1,
            ),
        ] = 30,
        poll_seconds: Annotated[
            float, typer.Option("--poll-seconds", help="Seconds between looks at an empty queue.")
        ] = 1.0,
    ) -> None:
        """Run AI jobs of a service (more workers beside `shindan serve`'s); Ctrl-C stops.

        A job running when it stops is queued again for another worker.
        """
        from datetime import timedelta

        from shindan.service.db import open_service
        from shindan.service.worker import run_worker

        database = open_service(data, db, create=False)
        _say(f"shindan worker: jobs of {database.settings.data}; Ctrl-C stops")
        try:
            run_worker(database, timedelta(seconds=lease_seconds), max(poll_seconds, 0.05))
        finally:
            database.close()
        _say("shindan worker: stopped")


def register_upload(root: typer.Typer) -> None:
    """Add ``shindan upload`` to the root command."""

    @root.command()
    def upload(
        export: Annotated[Path, typer.Argument(help="A `shindan deid --out` folder.")],
        url: Annotated[str, typer.Option("--url", help="The service, e.g. http://127.0.0.1:8000.")],
        token_file: Annotated[
            Path | None,
            typer.Option("--token-file", help="File holding the API token (else $SHINDAN_TOKEN)."),
        ] = None,
        chunk_mib: Annotated[
            int, typer.Option("--chunk-mib", help="MiB per request.", min=1, max=64)
        ] = 8,
    ) -> None:
        """Send a de-identified export to a shindan service (resumes an interrupted upload).

        Prints the stored upload as JSON on stdout. Exit 1 when the service's check refuses
        the export (the reason on stderr; nothing is stored).
        """
        import json
        import os

        from shindan.errors import InputError
        from shindan.service.client import Refused, upload_export

        if token_file is not None:
            try:
                token = token_file.read_text().strip()
            except OSError as exc:
                raise InputError(f"--token-file {token_file}: {exc.strerror}") from None
        else:
            token = os.environ.get("SHINDAN_TOKEN", "").strip()
        if not token:
            raise InputError("give the API token with --token-file FILE or $SHINDAN_TOKEN")
        try:
            done = upload_export(export, url, token, chunk=chunk_mib * 2**20)
        except Refused as exc:
            _say(f"refused: {exc}")
            raise typer.Exit(1) from None
        typer.echo(json.dumps(done, indent=2))
