"""The open-loop load generator: ``POST /v1/decisions`` at a fixed rate for a fixed time, each
request sent when it falls due whatever the earlier ones are doing, on ``bench.http``'s bounded
pool of keep-alive connections."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from bench.http import Client

#: The channel every decision of the load is for; the state's decision customers agreed to be
#: contacted on it.
CHANNEL = "mobile_app"
#: A request this slow is an error, not a latency: the run would be meaningless anyway.
REQUEST_TIMEOUT_S = 10.0


@dataclass
class Outcome:
    """One request: when it was due, when the generator got to it, when it went on the wire
    (a free connection found), and what came back."""

    due: float
    reached: float = 0.0
    on_wire: float = 0.0
    done: float = 0.0
    skipped: bool = False  # the client already had its cap of requests in flight
    status: int | None = None
    error: str | None = None
    server_ms: float | None = None
    scored: bool = False
    explained: bool = False
    delivered: bool = False
    #: Answered without personal features (the online read failed or its breaker was open).
    without_features: bool = False

    @property
    def client_ms(self) -> float:
        return (self.done - self.on_wire) * 1000

    @property
    def from_schedule_ms(self) -> float:
        return (self.done - self.due) * 1000

    @property
    def lag_ms(self) -> float:
        return (self.reached - self.due) * 1000


@dataclass(frozen=True)
class Load:
    rate: float
    seconds: float
    connections: int
    #: Beyond this many requests in flight, due requests are skipped and counted: a server
    #: that cannot keep up would otherwise bury the generator in its own queue.
    max_in_flight: int


def app_duration(header: str | None) -> float | None:
    """The ``app`` metric's ``dur`` (ms) from a ``Server-Timing`` header, if there is one."""
    for metric in (header or "").split(","):
        name, *params = (part.strip() for part in metric.split(";"))
        if name != "app":
            continue
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "dur":
                try:
                    return float(value.strip().strip('"'))
                except ValueError:
                    return None
    return None


async def _request(client: Client, outcome: Outcome, request: bytes) -> None:
    def on_wire() -> None:
        outcome.on_wire = time.perf_counter()

    try:
        answer = await client.send(request, REQUEST_TIMEOUT_S, on_wire)
    except (OSError, TimeoutError) as error:
        outcome.done = time.perf_counter()
        outcome.error = f"{type(error).__name__}: {error}"
        return
    outcome.done = time.perf_counter()
    outcome.status = answer.status
    outcome.server_ms = app_duration(answer.headers.get("server-timing"))
    if answer.status == 200:
        body = json.loads(answer.body)
        outcome.scored = bool(body.get("models"))
        actions = body.get("actions") or []
        outcome.delivered = bool(actions)
        outcome.explained = any(a.get("reasons") for a in actions)
        outcome.without_features = body.get("fallback") == "online_store_unavailable"


async def open_loop(
    base_url: str, api_key: str, customers: Sequence[str], load: Load, rng: random.Random
) -> tuple[list[Outcome], float]:
    """Requests at ``load.rate`` per second for ``load.seconds``, each sent when it is due
    whatever the ones before it are doing; returns the outcomes and the wall time until the
    last answer. The client is ``bench.http``'s: it leaves the cores to the server."""
    address = httpx.URL(base_url)
    host, port = address.host, address.port or 80
    client = Client(host, port, load.connections, wanted=("server-timing",))
    headers = {"X-API-Key": api_key}
    requests = {
        c: Client.post_json(
            "/v1/decisions", f"{host}:{port}", {"customer_id": c, "channel": CHANNEL}, headers
        )
        for c in customers
    }
    try:
        outcomes: list[Outcome] = []
        tasks: set[asyncio.Task[None]] = set()
        began = time.perf_counter()
        for i in range(int(load.rate * load.seconds)):
            due = began + i / load.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            outcome = Outcome(due=due, reached=time.perf_counter())
            outcomes.append(outcome)
            if len(tasks) >= load.max_in_flight:
                outcome.skipped = True
                continue
            task = asyncio.create_task(_request(client, outcome, requests[rng.choice(customers)]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.wait(set(tasks))
        return outcomes, time.perf_counter() - began
    finally:
        client.close()
