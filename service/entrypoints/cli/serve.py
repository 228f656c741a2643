"""Commands that serve: ``serve`` the HTTP API, and the ``demo`` that sets up a bank first."""

from __future__ import annotations

import time

import click

from service.entrypoints.cli.context import open_container, settings_or_exit
from service.entrypoints.quiet import quiet_libraries


@click.command()
@click.option("--host", default=None, help="Default: NEXTBEST_API_HOST.")
@click.option("--port", default=None, type=int, help="Default: NEXTBEST_API_PORT.")
@click.option(
    "--workers", default=None, type=click.IntRange(1, 64), help="Default: NEXTBEST_API_WORKERS."
)
def serve(host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the HTTP API (one process, or a worker per core behind one port)."""
    settings = settings_or_exit()
    host = host or settings.api_host
    port = port or settings.api_port
    workers = workers or settings.api_workers
    if workers > 1:
        from service.entrypoints.serving import serve_workers

        quiet_libraries()
        serve_workers(host, port, workers, settings.log_level)
        return

    import uvicorn

    from service.entrypoints.api.app import create_app

    container = open_container()
    app = create_app(container)
    uvicorn.run(app, host=host, port=port, log_level=container.settings.log_level.lower())


@click.command()
@click.option(
    "--duration",
    type=float,
    default=None,
    help="Stop after this many seconds of serving (default: until Ctrl-C).",
)
@click.option("--customers", default=2_000, show_default=True, type=click.IntRange(1_000, 100_000))
@click.option("--days", default=120, show_default=True, type=click.IntRange(120, 365))
@click.option("--seed", default=7, show_default=True)
@click.option("--port", default=None, type=int, help="Default: NEXTBEST_API_PORT.")
def demo(duration: float | None, customers: int, days: int, seed: int, port: int | None) -> None:
    """Set up a synthetic bank on the embedded defaults, train, serve and show decisions."""
    from service.entrypoints.demo import run_demo

    started = time.monotonic()
    run_demo(
        open_container(),
        customers=customers,
        days=days,
        seed=seed,
        port=port,
        duration=duration,
        started=started,
    )
