"""``nextbest serve --workers 2``: one port, two API processes, each deciding on its own, and a
clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from service.entrypoints.auth import DEV_KEYS_FILE, development_keys, plain_key

START_TIMEOUT_S = 240.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_two_workers_share_one_port_and_stop_cleanly(tmp_path: Path) -> None:
    home = tmp_path / "home"
    development_keys(home)
    key = plain_key(home / DEV_KEYS_FILE, "channel")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTBEST_")}
    env.update(NEXTBEST_HOME=str(home), NEXTBEST_LOG_LEVEL="WARNING", NEXTBEST_API_WORKERS="2")
    script = Path(sys.executable).with_name("nextbest")
    log = (tmp_path / "api.log").open("wb")
    server = subprocess.Popen(
        [str(script), "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        master = psutil.Process(server.pid)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        workers: set[int] = set()
        while time.monotonic() < deadline:
            assert server.poll() is None, (tmp_path / "api.log").read_text()
            workers = {p.pid for p in master.children()}
            try:
                response = httpx.get(f"{base}/readyz", timeout=5.0)
                if response.status_code == 200:
                    break
            except httpx.TransportError:
                pass  # not accepting yet
            time.sleep(0.5)
        # One worker answering does not mean the master has forked the other yet.
        while len(workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            workers = {p.pid for p in master.children()}
        assert len(workers) == 2, (tmp_path / "api.log").read_text()
        # Every decision the workers made is in the one audit chain, in order.
        with httpx.Client(base_url=base, timeout=5.0) as client:
            compliance = {"X-API-Key": plain_key(home / DEV_KEYS_FILE, "compliance")}
            for _ in range(8):
                # A new connection each time: whichever worker accepts it decides.
                client.headers["Connection"] = "close"
                client.post(
                    "/v1/decisions",
                    json={"customer_id": "C0000002", "channel": "mobile_app"},
                    headers={"X-API-Key": key},
                ).raise_for_status()
            verified = client.get("/v1/audit/verify", headers=compliance).json()
        assert verified["ok"] and verified["records"] == 8
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(60)
        finally:
            if server.poll() is None:
                server.kill()
            log.close()
    assert code == 0, (tmp_path / "api.log").read_text()
    assert not [p for p in psutil.process_iter(["status"]) if p.pid in workers and alive(p)]


def alive(process: psutil.Process) -> bool:
    # A stopped worker may linger as a zombie until whatever adopted it reaps it.
    zombie: bool = process.info["status"] == psutil.STATUS_ZOMBIE
    return not zombie
