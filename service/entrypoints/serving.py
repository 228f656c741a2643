"""Several API processes behind one port, for a host with several cores.

Python runs one thread at a time per process, so one process uses about one core, and a
decision is mostly Python on that core. ``serve_workers`` runs Gunicorn with Uvicorn's worker
class: the master binds the port, imports the libraries once and forks the workers, which share
those pages (copy on write; the collector is told to leave them alone). Each worker then builds
its own container, so no connection, thread or loaded model is ever shared across a fork. A
worker that dies is replaced by the master.
"""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING, Any

from gunicorn.app.base import BaseApplication
from starlette.types import ASGIApp, Receive, Scope, Send

from service.entrypoints.heap import freeze_loaded
from service.entrypoints.quiet import quiet_libraries

if TYPE_CHECKING:
    from service.bootstrap import Container

#: Building a worker's container (Feast, MLflow, the models) takes a while on a busy machine;
#: the master must not take that silence for a hung worker.
WORKER_START_TIMEOUT_S = 180
#: How long a worker may take to finish its requests on shutdown.
GRACEFUL_TIMEOUT_S = 30


class PerWorkerApp:
    """The API, built in each worker on its first event (the lifespan's start), after the
    fork: what the master loaded is libraries only."""

    def __init__(self) -> None:
        self._app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            from service.entrypoints.api.app import create_app

            self._app = create_app(worker_container())
        await self._app(scope, receive, send)


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> PerWorkerApp:
        # Preloaded in the master: the imports (most of a worker's memory), nothing else.
        import service.entrypoints.api  # noqa: F401

        freeze_loaded()  # what the master loaded stays out of the workers' collections
        return PerWorkerApp()


def worker_container() -> Container:
    """A container on the settings of the environment (the CLI checked them before it started
    the server), for a worker or for preparing the stores."""
    from service.bootstrap import Container
    from service.settings import load_settings

    quiet_libraries()
    return Container(load_settings())


def prepare_stores() -> None:
    """Create what the workers share on first use (the operational store's tables, MLflow's
    database, the feature store, the development keys): workers starting together on a new
    home would race to migrate the same databases."""
    container = worker_container()
    try:
        _ = container.engine, container.models, container.feature_store, container.keyring
    finally:
        container.close()


def serve_workers(host: str, port: int, workers: int, log_level: str) -> None:
    # In a process of its own: the master forks the workers and must hold no connection.
    code = "from service.entrypoints.serving import prepare_stores; prepare_stores()"
    prepared = subprocess.run([sys.executable, "-c", code], check=False)
    if prepared.returncode != 0:
        raise SystemExit(f"nextbest serve: preparing the stores failed ({prepared.returncode})")
    _Gunicorn(
        {
            "bind": f"{host}:{port}",
            "workers": workers,
            "worker_class": "uvicorn_worker.UvicornWorker",
            "preload_app": True,
            "timeout": WORKER_START_TIMEOUT_S,
            "graceful_timeout": GRACEFUL_TIMEOUT_S,
            "keepalive": 75,
            "loglevel": log_level.lower(),
            "accesslog": None,
        }
    ).run()
