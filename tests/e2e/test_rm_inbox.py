"""The RM inbox page in Debian's headless Chromium (Playwright): the RM signs in with their key,
an alert raised meanwhile appears without a reload, and the disposition recorded on the page
is stored (and goes to contact history)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import uvicorn
from sqlalchemy import select

from consent.rules.model import ConsentGiven
from consent.stores.customers import KnownCustomer
from consent.stores.tables import contact_history
from service.bootstrap import Container
from service.entrypoints.api.app import create_app
from tests.conftest import key_headers
from tests.doubles import GOOD_STANDING, grant_all, sample_alert


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path,
            headless=True,
            args=["--no-sandbox", "--disable-gpu"],  # root in CI: no user-namespace sandbox
        )
        yield launched
        launched.close()


@pytest.fixture
def served(embedded: Container) -> Iterator[tuple[Container, str]]:
    """The real app on a loopback port, in a thread of this process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(create_app(embedded), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    try:
        yield embedded, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_the_rm_signs_in_sees_an_alert_arrive_and_records_an_outcome(served, browser) -> None:
    from playwright.sync_api import expect

    container, base = served
    rm_key = key_headers(container, "rm")["X-API-Key"]  # the development RM key: RM0001
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    try:
        page.goto(f"{base}/rm")
        page.get_by_label("API key").fill("not-a-key-" + "x" * 30)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert").first).to_contain_text("Sign-in failed")
        problems.clear()  # the refused sign-in's 401 is logged by the browser on purpose

        page.get_by_label("API key").fill(rm_key)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_text("No open alerts")).to_be_visible()

        # Raised while the page is open (another RM's alert must not show). Alerts pass the
        # gate again when listed: the customers are known and consent.
        now = datetime.now(UTC)
        for cid, rm in (("C0000042", "RM0001"), ("C9", "RM0002")):
            container.directory.upsert([KnownCustomer(cid, None, rm, GOOD_STANDING)])
            grant_all(container.registry, cid, "rm")
        container.alert_store.add(
            [sample_alert("C0000042", "RM0001"), sample_alert("C9", "RM0002")], 20, now
        )
        item = page.locator("li.alert")
        expect(item).to_have_count(1)  # appears without a reload
        expect(item).to_contain_text("C0000042")
        expect(item).to_contain_text("Mortgage interest 0.71")
        expect(item).to_contain_text("Suggested: book a mortgage consultation")
        expect(page.get_by_role("status")).to_have_text("1 new alert.")

        form = page.get_by_role("form", name="Outcome for C0000042: Book a mortgage consultation")
        form.get_by_label("Note").fill("Consultation booked")
        form.get_by_role("button", name="Converted").click()
        expect(page.get_by_role("status")).to_contain_text('Recorded "converted"')
        expect(item).to_have_count(0)
        assert problems == []
    finally:
        context.close()

    stored = container.alert_store.get("alert-C0000042")
    assert stored is not None
    assert (stored.status, stored.disposition, stored.disposition_note) == (
        "closed",
        "converted",
        "Consultation booked",
    )
    with container.engine.connect() as connection:
        kinds = [r.kind for r in connection.execute(select(contact_history))]
    assert kinds == ["accept"]
    other = container.alert_store.get("alert-C9")
    assert other is not None and other.status == "open"


def test_an_alert_withdrawn_while_shown_leaves_the_list_and_says_so(served, browser) -> None:
    """Consent withdrawn while the RM has the alert open: at the next refresh it leaves the open
    alerts (no outcome can be recorded) and is listed as withdrawn, with the notice only."""
    from playwright.sync_api import expect

    container, base = served
    rm_key = key_headers(container, "rm")["X-API-Key"]
    container.directory.upsert([KnownCustomer("C0000042", None, "RM0001", GOOD_STANDING)])
    grant_all(container.registry, "C0000042", "rm")
    container.alert_store.add([sample_alert("C0000042", "RM0001")], 20, datetime.now(UTC))
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    try:
        page.goto(f"{base}/rm")
        page.get_by_label("API key").fill(rm_key)
        page.get_by_role("button", name="Sign in").click()
        item = page.locator("li.alert")
        expect(item).to_contain_text("Mortgage interest 0.71")
        expect(page.get_by_role("heading", name="Withdrawn")).to_be_hidden()

        withdrawal = ConsentGiven(
            customer_id="C0000042",
            purpose="marketing",
            channel="rm",
            granted=False,
            recorded_at=datetime.now(UTC),
            source="branch",
            notice_version="v1",
        )
        container.registry.record([withdrawal])
        expect(item).to_have_count(0)  # at the next refresh, without a reload
        gone = page.locator("li.withdrawn-alert")
        expect(gone).to_have_count(1)
        expect(gone).to_contain_text("C0000042")
        expect(gone).to_contain_text("withdrawn: consent withdrawn")
        expect(gone).not_to_contain_text("Mortgage interest")  # nothing left to act on
        expect(gone.get_by_role("button")).to_have_count(0)
        expect(page.get_by_role("heading", name="Withdrawn")).to_be_visible()
        expect(page.get_by_role("status")).to_contain_text("was withdrawn (consent withdrawn)")
        assert problems == []
    finally:
        context.close()
