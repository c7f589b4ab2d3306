"""The ``shindan`` command: thin typer wiring; every command calls a task function.

Errors a user can cause (``ShindanError``) print one line ``error: ...`` and exit 2.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from shindan import __version__
from shindan.errors import ShindanError

app = typer.Typer(
    name="shindan",
    help="Diagnostic-support AI for medical images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"shindan {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Diagnostic-support AI for medical images."""


@app.command()
def info(file: Annotated[Path, typer.Argument(help="Slide or image file.")]) -> None:
    """Describe a slide or image as JSON: format, size, levels, µm/px, vendor, associated images."""
    from shindan.io import open_slide

    with open_slide(file) as slide:
        typer.echo(json.dumps(slide.info(), indent=2))


@app.command()
def models() -> None:
    """List shipped models: name, task, classes, training data, headline metric."""
    from shindan.models import list_models

    for card in list_models():
        typer.echo(card.summary_line())


def _register_tasks() -> None:
    # Each task owns its sub-commands; importing here keeps `shindan --help` one place.
    from shindan.classify.cli import app as classify_app
    from shindan.ct.cli import app as ct_app
    from shindan.deid.cli import app as deid_app
    from shindan.explain.cli import register as register_explain
    from shindan.io.annotations_cli import app as annotations_app
    from shindan.kidney.cli import app as kidney_app
    from shindan.kidney.cli import register_demo
    from shindan.nuclei.cli import app as nuclei_app
    from shindan.service.cli import app as admin_app
    from shindan.service.cli import register_serve, register_upload
    from shindan.stats.cli import app as stats_app

    app.add_typer(kidney_app, name="kidney")
    app.add_typer(nuclei_app, name="nuclei")
    app.add_typer(classify_app, name="classify")
    app.add_typer(ct_app, name="ct")
    app.add_typer(stats_app, name="stats")
    app.add_typer(deid_app, name="deid")
    app.add_typer(annotations_app, name="annotations")
    register_explain(app)
    register_demo(app)
    register_serve(app)
    register_upload(app)
    app.add_typer(admin_app, name="admin")


def _terminated(signum: int, frame: object) -> None:
    # SIGTERM (a batch scheduler, `kill`) unwinds like Ctrl-C, so temporary outputs are removed
    print("error: terminated", file=sys.stderr)
    raise SystemExit(128 + signum)


def _command_name() -> str:
    # "shindan classify train" / "shindan explain" from argv, for messages about a command
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    groups = ("kidney", "nuclei", "classify", "ct", "stats", "annotations", "deid", "admin")
    depth = 2 if args and args[0] in groups else 1
    return " ".join(["shindan", *args[:depth]])


def main() -> None:
    """Console-script entry point."""
    signal.signal(signal.SIGTERM, _terminated)
    try:
        _register_tasks()
    except ImportError as exc:  # a task module missing is a packaging bug, say so plainly
        print(f"error: broken installation ({exc})", file=sys.stderr)
        sys.exit(1)
    try:
        code = app(standalone_mode=False)
        # without standalone mode, click returns (not raises) the code of Ctrl-C (130) and of
        # commands that exit early; 0 only for a finished run
        if isinstance(code, int) and code != 0:
            if code == 130:
                print("error: aborted", file=sys.stderr)
            sys.exit(code)
    except ShindanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except ImportError as exc:
        # a torch-only path reached without the train extra: name the extra, no traceback
        from shindan.util.extras import missing_train_message, train_module_missing

        if not train_module_missing(exc):
            raise
        print(f"error: {missing_train_message(_command_name())}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(130)
    except typer.exceptions.TyperException as exc:  # usage errors: bad option, missing argument
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if message.strip():  # a group run bare has printed its help already: no empty error line
            print(f"error: {' '.join(message.split())}", file=sys.stderr)
        sys.exit(2)
