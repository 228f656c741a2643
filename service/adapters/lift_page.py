"""The lift report as one self-contained HTML page (plots inline as SVG: it opens from a file on
a closed network) and as a plain-text table for the terminal."""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

from service.usecases.lift import ActionLift, LiftReport
from service.usecases.lift_stats import Lift

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

TREATED, CONTROL = "#1f6f8b", "#c8553d"


def text_table(report: LiftReport) -> str:
    lines = [
        f"Lift of decisions made {report.since:%Y-%m-%d} to {report.until:%Y-%m-%d} "
        f"(outcomes observed to {report.observed_until:%Y-%m-%d %H:%M} UTC), "
        f"{report.decisions} decisions, {int(report.programme.confidence * 100)}% intervals",
        "",
        f"{'action':<26}{'treated':>16}{'control':>16}{'incremental':>14}  interval",
    ]
    rows = [("programme", report.programme)] + [(a.action_id, a.lift) for a in report.actions]
    for name, measured in rows:
        low, high = measured.incremental_interval
        lines.append(
            f"{name:<26}{_arm(measured.treated.converted, measured.treated.customers):>16}"
            f"{_arm(measured.control.converted, measured.control.customers):>16}"
            f"{measured.incremental:>14.1f}  [{low:.1f}, {high:.1f}]"
            + ("" if measured.measured else "  (too few to measure)")
        )
    per = report.per_1000_contacts
    treated, control = report.harm_by_group["treatment"], report.harm_by_group["control"]
    lines += [
        "",
        f"Per 1,000 sales contacts ({report.contacts}): "
        + ", ".join(f"{k} {v:.2f}" for k, v in per.items())
        + f" (complaints and opt-outs within {report.harm_days} days of a contact)",
        "Per 1,000 customers, treatment / control: "
        + ", ".join(f"{k} {treated[k]:.2f} / {control[k]:.2f}" for k in treated),
    ]
    return "\n".join(lines)


def _arm(converted: int, customers: int) -> str:
    return f"{converted}/{customers}"


def page(report: LiftReport) -> str:
    """The whole page: summary, plots, and the tables behind them."""
    import matplotlib

    matplotlib.use("Agg")  # no display; the page is written to a file
    measured = [a for a in report.actions if a.lift.treated.customers or a.lift.control.customers]
    sections = [
        f"<h1>Lift of NextBest's recommendations</h1><p>Decisions made "
        f"{report.since:%Y-%m-%d} to {report.until:%Y-%m-%d}; outcomes observed to "
        f"{report.observed_until:%Y-%m-%d %H:%M} UTC; {report.decisions} decisions. "
        f"Intervals are {int(report.programme.confidence * 100)}%. Control: customers for whom "
        "the action was chosen but who did not get it (held out, or in the universal control "
        "group).</p>",
        _table(report),
    ]
    if measured:
        sections += [
            "<h2>Conversion, treated against control, per action</h2>",
            _svg(_rates(measured)),
            "<h2>Incremental conversions per action</h2>",
            _svg(_incremental(measured)),
            "<h2>Per channel: difference in conversion rate</h2>",
            _svg(_by_channel(measured)),
            "<h2>Over time: difference in conversion rate by week of first decision</h2>",
            _svg(_by_week(measured)),
        ]
    sections.append(_harm(report))
    style = (
        "body{font-family:sans-serif;max-width:70em;margin:2em auto;color:#222}"
        "table{border-collapse:collapse}td,th{padding:.2em .7em;border-bottom:1px solid #ddd;"
        "text-align:right}td:first-child,th:first-child{text-align:left}"
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>NextBest lift report</title><style>{style}</style></head><body>"
        + "".join(sections)
        + "</body></html>"
    )


def _table(report: LiftReport) -> str:
    head = (
        "<table><tr><th>action</th><th>channel window</th><th>treated</th><th>control</th>"
        "<th>rate treated</th><th>rate control</th><th>incremental</th><th>interval</th>"
        "<th>open windows</th></tr>"
    )
    rows = [_row("programme", f"{report.window_days} d", report.programme, 0)]
    rows += [
        _row(a.action_id, f"{a.window_days} d", a.lift, a.open_windows) for a in report.actions
    ]
    return head + "".join(rows) + "</table>"


def _row(name: str, window: str, measured: Lift, open_windows: int) -> str:
    low, high = measured.incremental_interval
    note = "" if measured.measured else " (too few)"
    cells = (
        html.escape(name),
        window,
        _arm(measured.treated.converted, measured.treated.customers),
        _arm(measured.control.converted, measured.control.customers),
        f"{measured.treated.rate:.2%}",
        f"{measured.control.rate:.2%}",
        f"{measured.incremental:.1f}{note}",
        f"[{low:.1f}, {high:.1f}]",
        str(open_windows),
    )
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _harm(report: LiftReport) -> str:
    per = "".join(
        f"<tr><td>{k}</td><td>{v:.2f}</td></tr>" for k, v in report.per_1000_contacts.items()
    )
    groups = report.harm_by_group
    by_group = "".join(
        f"<tr><td>{k}</td><td>{groups['treatment'][k]:.2f}</td><td>{groups['control'][k]:.2f}</td></tr>"
        for k in groups["treatment"]
    )
    return (
        f"<h2>Harm</h2><p>{report.contacts} sales contacts. Complaints and opt-outs count "
        f"within {report.harm_days} days of a contact.</p>"
        f"<table><tr><th>per 1,000 contacts</th><th></th></tr>{per}</table>"
        "<p>Per 1,000 customers in each group of the programme (the excess in treatment is what "
        "the contacts provoked):</p>"
        f"<table><tr><th></th><th>treatment</th><th>control</th></tr>{by_group}</table>"
    )


def _svg(figure: Figure) -> str:
    import matplotlib
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    # No date, and element ids from a fixed salt: the same report gives the same page, byte for
    # byte (a page kept in the repository changes only when its report does).
    with matplotlib.rc_context({"svg.hashsalt": "nextbest-lift"}):
        figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _figure(rows: int = 1, height: float = 3.5) -> tuple[Figure, list[Axes]]:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(rows, 1, figsize=(9, height * rows), squeeze=False)
    return figure, [row[0] for row in axes]


def _rates(actions: Sequence[ActionLift]) -> Figure:
    figure, [axes] = _figure(height=0.5 * len(actions) + 1.5)
    for i, a in enumerate(actions):
        for offset, arm, colour in (
            (-0.15, a.lift.treated, TREATED),
            (0.15, a.lift.control, CONTROL),
        ):
            low, high = arm.interval(a.lift.confidence)
            axes.errorbar(
                arm.rate,
                i + offset,
                xerr=[[arm.rate - low], [high - arm.rate]],
                fmt="o",
                color=colour,
            )
    axes.set_yticks(range(len(actions)), [a.action_id for a in actions])
    axes.set_xlabel("conversion rate within the attribution window")
    axes.legend(["treated", "control"], loc="lower right")
    return figure


def _incremental(actions: Sequence[ActionLift]) -> Figure:
    figure, [axes] = _figure(height=0.4 * len(actions) + 1.5)
    for i, a in enumerate(actions):
        low, high = a.lift.incremental_interval
        axes.errorbar(
            a.lift.incremental,
            i,
            xerr=[[a.lift.incremental - low], [high - a.lift.incremental]],
            fmt="o",
            color=TREATED if a.lift.measured else "#999999",
        )
    axes.axvline(0, color="#444444", linewidth=0.8)
    axes.set_yticks(range(len(actions)), [a.action_id for a in actions])
    axes.set_xlabel("incremental conversions (grey: too few to measure)")
    return figure


def _by_channel(actions: Sequence[ActionLift]) -> Figure:
    cells = [(f"{a.action_id} · {c}", m) for a in actions for c, m in sorted(a.by_channel.items())]
    figure, [axes] = _figure(height=0.3 * len(cells) + 1.5)
    for i, (_, m) in enumerate(cells):
        axes.errorbar(
            m.difference,
            i,
            xerr=[[m.difference - m.low], [m.high - m.difference]],
            fmt="o",
            color=TREATED if m.measured else "#999999",
        )
    axes.axvline(0, color="#444444", linewidth=0.8)
    axes.set_yticks(range(len(cells)), [name for name, _ in cells])
    axes.set_xlabel("conversion rate, treated minus control")
    return figure


def _by_week(actions: Sequence[ActionLift]) -> Figure:
    shown = [a for a in actions if a.by_week]
    figure, axes_list = _figure(rows=max(1, len(shown)), height=2.2)
    for axes, a in zip(axes_list, shown, strict=False):
        weeks = sorted(a.by_week)
        values = [a.by_week[w] for w in weeks]
        x = range(len(weeks))
        axes.plot(x, [m.difference for m in values], marker="o", color=TREATED)
        axes.fill_between(
            x, [m.low for m in values], [m.high for m in values], alpha=0.2, color=TREATED
        )
        axes.axhline(0, color="#444444", linewidth=0.8)
        axes.set_xticks(list(x), weeks, rotation=30, fontsize=7)
        axes.set_title(a.action_id, fontsize=9)
    return figure
