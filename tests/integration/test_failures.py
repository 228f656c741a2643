"""Failure behaviour of the decision API: the online store dying mid-load gives degraded
answers (no 5xx), the operational store going away gives 503 and delivers nothing, and
recovery is automatic when either returns. The Redis here is a private server the test starts
and kills, and PostgreSQL is reached through a proxy the test cuts, so nothing else using the
shared servers is disturbed. Each runs on both decision paths: on the event loop (PostgreSQL
and Redis) and in worker threads (the other stores)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import make_url, text

from consent.stores.customers import KnownCustomer
from consent.stores.reads import GateReads
from feature_repo.activity import FEATURE_NAMES
from service.bootstrap import Container
from service.entrypoints.api.app import create_app
from service.entrypoints.api.routes.operations import READINESS_TIMEOUT_S
from tests.conftest import IN_CI, key_headers, make_settings
from tests.doubles import GOOD_STANDING, grant_all, servable
from tests.integration.conftest import fresh_schema
from tests.proxy import TcpProxy, free_port

CUSTOMERS = [f"C{n:07d}" for n in range(1, 21)]


def _start_redis(port: int, folder: Path) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return server
        time.sleep(0.05)
    server.kill()
    raise RuntimeError("the private redis-server did not start")


@pytest.fixture
def private_redis(tmp_path) -> Iterator[tuple[int, Path]]:
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("redis-server is not installed (scripts/services installs it)")
        pytest.skip("redis-server is not installed")
    yield free_port(), tmp_path


def _decide(client: TestClient, headers: dict[str, str], customer: str) -> dict[str, Any]:
    response = client.post(
        "/v1/decisions", json={"customer_id": customer, "channel": "mobile_app"}, headers=headers
    )
    assert response.status_code == 200, response.text
    decision: dict[str, Any] = response.json()
    return decision


@pytest.fixture(params=["sqlite", "postgres"])
def operational_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The operational store: embedded, or a fresh schema of the real server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ops.db'}"
        return
    with fresh_schema(request.getfixturevalue("postgres_url")) as engine:
        yield engine.url.render_as_string(hide_password=False)


def test_redis_dying_mid_load_degrades_and_recovers(private_redis, operational_url) -> None:
    port, folder = private_redis
    server = _start_redis(port, folder)
    try:
        settings = make_settings(
            folder / "home",
            online_store="redis",
            redis_url=f"redis://127.0.0.1:{port}/0",
            feast_project=f"t{uuid.uuid4().hex[:10]}",
            database_url=operational_url,
        )
        container = Container(settings)
        # With PostgreSQL the decision is made on the event loop, otherwise in a thread.
        assert container.decisions.asynchronous == operational_url.startswith("postgresql")
        servable(container, CUSTOMERS, "mobile_app")
        headers = key_headers(container, "channel")
        with TestClient(create_app(container)) as client:
            before = [_decide(client, headers, c) for c in CUSTOMERS[:5]]
            assert not any(d["degraded"] for d in before)

            assert client.get("/readyz").json()["online_store"] == "ok"
            server.kill()
            server.wait()
            ready = client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["online_store"] == "unavailable"
            during = [_decide(client, headers, c) for c in CUSTOMERS * 3]  # no 5xx, ever
            assert all(
                d["degraded"] and d["fallback"] == "online_store_unavailable" for d in during
            )
            # Nothing that needs personal features was delivered on a degraded answer.
            kinds = {a.id: a for a in container.catalog.actions.values()}
            assert all(
                kinds[a["action_id"]].need is None and not kinds[a["action_id"]].conditioned_on
                for d in during
                for a in d["actions"]
            )

            server = _start_redis(port, folder)
            deadline = time.monotonic() + 15
            while _decide(client, headers, CUSTOMERS[0])["degraded"]:
                assert time.monotonic() < deadline, "the API did not recover after Redis returned"
                time.sleep(0.2)
        container.close()
    finally:
        server.kill()
        server.wait()


def test_stale_features_withhold_the_action_and_the_response_says_why(embedded) -> None:
    """The overdraft warning's trigger holds on the stored features, but they are 20 days old:
    it is not delivered, and even the channel (which sees no suppression details) is told."""
    customer = CUSTOMERS[0]
    embedded.directory.upsert([KnownCustomer(customer, None, None, GOOD_STANDING)])
    grant_all(embedded.registry, customer, "mobile_app")
    row = np.zeros((1, len(FEATURE_NAMES)))
    row[0, FEATURE_NAMES.index("net_flow_30d")] = -5_000.0
    row[0, FEATURE_NAMES.index("fee_count_30d")] = 3.0
    for age_days, expect_stale in ((20, True), (0, False)):
        as_of = int((datetime.now(UTC).timestamp() - age_days * 86_400) * 1e6)
        embedded.features.online.write([customer], np.array([as_of]), row)
        with TestClient(create_app(embedded)) as client:
            decision = _decide(client, key_headers(embedded, "channel"), customer)
        delivered = [a["action_id"] for a in decision["actions"]]
        notices = {n["code"]: n["message"] for n in decision["notices"]}
        if expect_stale:
            assert "overdraft_warning" not in delivered
            assert "overdraft_warning" in notices["FEATURES_STALE"]
        else:
            assert "overdraft_warning" in delivered and "FEATURES_STALE" not in notices


@pytest.mark.parametrize("online_store", ["redis", "sqlite"])
def test_the_operational_store_going_away_means_503_and_nothing_delivered(
    online_store: str, postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    """Consent cannot be checked: every decision is a 503 with a stable code, nothing is
    delivered and nothing is logged; decisions come back by themselves with the database."""
    base = make_url(postgres_url)
    proxy = TcpProxy((base.host or "127.0.0.1", base.port or 5432))
    proxy.start()
    with fresh_schema(postgres_url) as engine:
        schema = engine.url.query["options"]
        settings = make_settings(
            tmp_path / "home",
            database_url=base.set(port=proxy.port)
            .update_query_dict({"options": schema})
            .render_as_string(hide_password=False),
            online_store=online_store,
            redis_url=redis_url,
            feast_project=f"t{uuid.uuid4().hex[:10]}",
        )
        container = Container(settings)
        assert container.decisions.asynchronous == (online_store == "redis")
        container.directory.upsert(KnownCustomer(c, None, None, GOOD_STANDING) for c in CUSTOMERS)
        for customer in CUSTOMERS:
            grant_all(container.registry, customer, "mobile_app")
        headers = key_headers(container, "channel")
        body = {"customer_id": CUSTOMERS[0], "channel": "mobile_app"}
        try:
            with TestClient(create_app(container), raise_server_exceptions=False) as client:
                first = client.post("/v1/decisions", json=body, headers=headers)
                assert first.status_code == 200, first.text
                proxy.cut()
                during = [
                    client.post("/v1/decisions", json={**body, "customer_id": c}, headers=headers)
                    for c in CUSTOMERS[:6]
                ]
                assert {r.status_code for r in during} == {503}
                assert {r.json()["error"]["code"] for r in during} == {"consent_unavailable"}
                assert all("actions" not in r.json() for r in during)
                proxy.start()
                deadline = time.monotonic() + 15
                while (
                    again := client.post("/v1/decisions", json=body, headers=headers)
                ).status_code != 200:
                    assert time.monotonic() < deadline, "decisions did not come back"
                    time.sleep(0.2)
            with engine.connect() as connection:  # only the two decisions that were answered
                logged = connection.execute(text("select decision_id from audit_log")).scalars()
                assert sorted(logged) == sorted(
                    [first.json()["decision_id"], again.json()["decision_id"]]
                )
        finally:
            proxy.cut()
            container.close()


class SlowToOpen(Container):
    """Stores that take longer to open than a readiness probe may take (a busy machine's
    first connection, a database warming up); once open, they answer at once."""

    @cached_property
    def gate_reads(self) -> GateReads:
        time.sleep(READINESS_TIMEOUT_S + 0.5)
        reads: GateReads = super().gate_reads
        return reads


def test_the_first_readiness_probe_times_a_round_trip_not_the_opening_of_the_stores(
    tmp_path: Path,
) -> None:
    container = SlowToOpen(make_settings(tmp_path / "home"))
    try:
        with TestClient(create_app(container)) as client:
            first = client.get("/readyz")
            assert first.status_code == 200, first.json()
            assert first.json()["operational_store"] == "ok"
    finally:
        container.close()
