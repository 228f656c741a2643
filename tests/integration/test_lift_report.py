"""Issue 21: outcomes come from the stream into the operational store (once each, however often
they are delivered), are erased with the customer, and ``nextbest report lift`` attributes them
to the decisions logged before them: per action, treated against held out and the universal
control group, with the conversions the test put there, as text, JSON and an HTML page."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from consent.rules.vocabulary import NEEDS
from consent.stores.customers import KnownCustomer
from consent.stores.tables import outcome_events
from service.bootstrap import Container
from service.entrypoints.cli import main
from service.usecases import pipeline
from service.usecases.decision_messages import DecideForCustomer
from service.usecases.erasure import erase_customer
from service.usecases.ports import FixedModels
from tests.conftest import make_settings
from tests.doubles import (
    GOOD_STANDING,
    ConfidentModel,
    EveryoneEngaged,
    decision_service,
    grant_all,
)

RM = "RM0001"
#: Decided this long ago: every attribution window (at most 45 days) has closed.
AGO = timedelta(days=60)
CUSTOMERS = [f"C{n:07d}" for n in range(400)]


APPLIED = {"product": "mortgage", "status": "submitted"}
COMPLAINT = {"reason": "complaint", "channel": "rm"}
OPT_OUT = {
    "purpose": "marketing",
    "channel": "rm",
    "granted": False,
    "source": "app",
    "notice_version": "v1",
}


def _event(
    customer_id: str, n: int, at: datetime, type_: str, payload: dict[str, Any]
) -> dict[str, Any]:
    return {
        "event_id": f"E-{customer_id}-{n}",
        "customer_id": customer_id,
        "occurred_at": at.isoformat().replace("+00:00", "Z"),
        "channel": "web",
        "type": type_,
        "payload": payload,
    }


@pytest.fixture
def decided(tmp_path: Path) -> tuple[Container, dict[str, dict[str, str]], datetime]:
    """Every customer decided for on the RM channel 60 days ago (features a minute older), and
    what became of each chosen sales action, by customer."""
    container = Container(make_settings(tmp_path / "home"))
    container.models = FixedModels({n: ConfidentModel(n) for n in NEEDS})  # type: ignore[assignment]
    then = datetime.now(UTC).replace(microsecond=0) - AGO
    decisions = decision_service(container.engine, EveryoneEngaged(age=AGO + timedelta(minutes=1)))
    decisions.clock = lambda: then
    assigned: dict[str, dict[str, str]] = {}
    for customer_id in CUSTOMERS:
        container.directory.upsert([KnownCustomer(customer_id, None, RM, GOOD_STANDING)])
        grant_all(container.registry, customer_id, "rm")
        made = decisions.decide(DecideForCustomer(customer_id, "rm", 3))
        control = made.record.control
        assert control is not None
        assigned[customer_id] = {a: v.assignment for a, v in control.actions.items()}
    return container, assigned, then


def test_outcomes_are_attributed_to_the_decisions_before_them(decided, tmp_path: Path) -> None:
    container, assigned, then = decided
    mortgage = "mortgage_consultation"
    chosen = {c: a[mortgage] for c, a in assigned.items() if mortgage in a}
    treated = [c for c, a in chosen.items() if a == "treatment"]
    control = [c for c, a in chosen.items() if a != "treatment"]
    assert len(treated) > 100 and control, "the packaged shares hold some customers back"
    # Half the treated customers apply for a mortgage within the window, none of the control
    # group; one applies too late to count, one complains and opts out.
    converts = treated[: len(treated) // 2]
    events = [
        _event(
            c,
            1,
            then + timedelta(days=3),
            "application",
            {"product": "mortgage", "status": "submitted"},
        )
        for c in converts
    ]
    events.append(
        _event(
            treated[-1],
            2,
            then + timedelta(days=50),
            "application",
            {"product": "mortgage", "status": "submitted"},
        )
    )
    unhappy = treated[-2]
    events.append(
        _event(
            unhappy,
            3,
            then + timedelta(days=2),
            "contact",
            {"reason": "complaint", "channel": "rm"},
        )
    )
    events.append(
        _event(
            unhappy,
            4,
            then + timedelta(days=2, hours=1),
            "consent_changed",
            {
                "purpose": "marketing",
                "channel": "rm",
                "granted": False,
                "source": "app",
                "notice_version": "v1",
            },
        )
    )
    # Delivered twice: kept once.
    pipeline.publish_events(container, events + events)
    pipeline.stream_until_idle(container, idle_s=1.0)
    with container.engine.connect() as connection:
        stored = connection.execute(select(func.count()).select_from(outcome_events)).scalar_one()
    assert stored == len(events)

    page = tmp_path / "lift.html"
    env = {"NEXTBEST_HOME": str(container.settings.home)}
    since = (then - timedelta(days=1)).strftime("%Y-%m-%d")
    result = CliRunner().invoke(
        main, ["report", "lift", "--since", since, "--json", "--html", str(page)], env=env
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    [row] = [a for a in report["actions"] if a["action_id"] == mortgage]
    assert row["treated"] == {"customers": len(treated), "converted": len(converts)}
    assert row["control"] == {"customers": len(control), "converted": 0}
    low, high = row["interval"]
    assert low <= len(converts) / len(treated) <= high
    assert row["by_channel"].keys() == {"rm"}
    assert report["harm"]["contacts"] == sum(
        v == "treatment" for a in assigned.values() for v in a.values()
    )
    assert report["harm"]["per_1000_contacts"]["complaint"] > 0
    assert report["harm"]["per_1000_contacts"]["opt_out"] > 0
    html = page.read_text()
    assert html.count("<svg") == 4 and mortgage in html
    again = tmp_path / "again.html"
    rerun = CliRunner().invoke(
        main, ["report", "lift", "--since", since, "--html", str(again)], env=env
    )
    assert rerun.exit_code == 0, rerun.output
    assert again.read_bytes() == page.read_bytes()  # the same report, the same page

    text = CliRunner().invoke(main, ["report", "lift", "--since", since], env=env)
    assert text.exit_code == 0, text.output
    assert mortgage in text.output and "Per 1,000 sales contacts" in text.output

    # Erased with the customer: her outcomes go, and she drops out of the report.
    erased = erase_customer(container, unhappy, "test")
    assert erased.outcome_events == 2
    with container.engine.connect() as connection:
        left = connection.execute(select(func.count()).select_from(outcome_events)).scalar_one()
    assert left == len(events) - 2
    container.close()


def test_a_report_refuses_an_unknown_action_and_an_empty_period(tmp_path: Path) -> None:
    env = {"NEXTBEST_HOME": str(tmp_path / "home")}
    unknown = CliRunner().invoke(main, ["report", "lift", "--action", "no_such"], env=env)
    assert unknown.exit_code == 2 and "no action 'no_such'" in unknown.output
    empty = CliRunner().invoke(
        main, ["report", "lift", "--since", "2026-01-02", "--until", "2026-01-01"], env=env
    )
    assert empty.exit_code == 2 and "--since must be before --until" in empty.output
