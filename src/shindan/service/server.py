"""Running the API with uvicorn, where Ctrl-C or SIGTERM is the normal way to stop."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI


class Server(uvicorn.Server):
    """uvicorn's server, ending with exit 0 when a stop signal shut it down.

    uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again for the
    previous handler, which would make the CLI report an abort; a service stopped on purpose
    has finished normally.
    """

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()


def run_server(app: FastAPI, host: str, port: int) -> None:
    """Serve ``app`` on ``host:port`` until Ctrl-C or SIGTERM (HTTP/1.1, uvicorn warnings only)."""
    Server(uvicorn.Config(app, host=host, port=port, log_level="warning")).run()
