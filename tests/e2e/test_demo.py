"""The README's promise: `nextbest demo` on the embedded defaults, then `nextbest audit verify`
in the same folder checks the demo's log."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

NEXTBEST = str(Path(sys.executable).with_name("nextbest"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_demo_runs_on_embedded_defaults_and_its_audit_log_verifies(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTBEST_")}
    port = str(free_port())
    demo = subprocess.run(
        [
            NEXTBEST,
            "demo",
            "--duration",
            "1",
            "--customers",
            "1000",
            "--days",
            "120",
            "--port",
            port,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert f"API ready at http://127.0.0.1:{port}" in demo.stdout
    assert "never answered the consent request): delivered nothing" in demo.stdout
    assert "NO_CONSENT_FOR_PURPOSE_AND_CHANNEL" in demo.stdout
    assert "stopped" in demo.stdout
    assert (tmp_path / ".nextbest" / "nextbest.db").exists()

    verify = subprocess.run(
        [NEXTBEST, "audit", "verify"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stderr
    result = json.loads(verify.stdout)
    # The three example decisions, and a promotion record per model the demo trained; all of
    # it covered by the checkpoints the demo published.
    assert result["ok"] is True and result["covered"] == result["records"]
    exported = subprocess.run(
        [NEXTBEST, "audit", "export"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    kinds = [
        json.loads(line)["record"].get("operation", "decision")
        for line in exported.stdout.splitlines()
    ]
    assert kinds.count("decision") == 3 and kinds.count("model_promotion") >= 1
    assert len(kinds) == result["records"]
