"""The API under test, as an operator starts it: ``nextbest serve`` in its own process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

#: Loading Feast, MLflow and seven boosters takes a while on a busy machine.
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve_command(port: int) -> list[str]:
    """The project's console script, as an operator would start the API."""
    script = Path(sys.executable).with_name("nextbest")
    if not script.exists():
        raise SystemExit(f"{script} is missing: install the project into this environment")
    return [str(script), "serve", "--port", str(port)]


@dataclass
class ApiServer:
    """``nextbest serve`` in its own process with the state's settings (and nothing else of
    this process's ``NEXTBEST_*``: an unknown one would stop it)."""

    env: dict[str, str]
    log_path: Path
    workers: int = 1
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> dict[str, Any]:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("NEXTBEST_")}
        env.update(self.env)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                serve_command(self.port), env=env, stdout=log, stderr=subprocess.STDOUT
            )
        return self._wait_ready()

    def _wait_ready(self) -> dict[str, Any]:
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the API exited ({self.process.returncode}):\n{self.log()}")
                try:
                    response = client.get("/readyz")
                    if response.status_code == 200:
                        self._wait_workers(deadline)
                        return dict(response.json())
                except httpx.TransportError:
                    pass  # not listening yet
                time.sleep(0.2)
        raise RuntimeError(f"the API was not ready within {READY_TIMEOUT_S:.0f} s:\n{self.log()}")

    def _wait_workers(self, deadline: float) -> None:
        """With workers, one answering is not all of them ready: wait until every worker is
        running and the whole tree has been nearly idle for a second (building a worker's
        container keeps a core busy)."""
        if self.workers <= 1:
            return
        assert self.process is not None
        master = psutil.Process(self.process.pid)
        while time.monotonic() < deadline:
            tree = [master, *master.children(recursive=True)]
            before = sum(sum(p.cpu_times()[:2]) for p in tree)
            time.sleep(1.0)
            after = sum(sum(p.cpu_times()[:2]) for p in tree)
            if len(tree) > self.workers and after - before < 0.05:
                return
        raise RuntimeError(f"the API's workers did not settle:\n{self.log()}")

    def log(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # uvicorn shuts down gracefully on SIGTERM
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
