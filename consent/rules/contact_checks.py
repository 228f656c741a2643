"""The gate's checks on contact: how often the customer (and their household) was reached
(caps), whether they recently said no (cool-off), and whether it is night where they are
(quiet hours)."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

from consent.rules.model import ContactKind, ContactRecord
from consent.rules.params import CapsParams, CooloffParams, QuietHoursParams, time_zone
from consent.rules.subject import Subject, Verdict
from consent.rules.vocabulary import ANY_CHANNEL


def _counts(contact: ContactRecord, kinds: tuple[ContactKind, ...], household: bool) -> bool:
    return contact.kind in kinds and (household or not contact.household)


def caps(subject: Subject, params: CapsParams) -> Verdict:
    if subject.action.kind not in params.applies_to:
        return True, f"caps do not apply to {subject.action.kind} actions"
    key = ("contact.caps", id(params))
    verdict: Verdict | None = subject.memo.get(key)
    if verdict is None:
        verdict = subject.memo[key] = _caps_verdict(subject, params)
    return verdict


def _caps_verdict(subject: Subject, params: CapsParams) -> Verdict:
    reached: list[str] = []
    checked: list[str] = []
    for cap in params.caps:
        if cap.channel not in (ANY_CHANNEL, subject.channel):
            continue
        since = subject.now - timedelta(days=cap.window_days)
        count = sum(
            1
            for c in subject.contacts
            if _counts(c, params.count_kinds, params.household)
            and cap.channel in (ANY_CHANNEL, c.channel)
            and c.occurred_at > since
        )
        where = "all channels" if cap.channel == ANY_CHANNEL else cap.channel
        text = f"{count} of {cap.max} on {where} in {cap.window_days} days"
        if count >= cap.max:
            reached.append(text)
        else:
            checked.append(text)
    scope = "household included" if params.household else "customer only"
    if reached:
        return False, f"cap reached: {'; '.join(reached)} ({scope})"
    if not checked:
        return True, f"no cap for {subject.channel}"
    return True, f"within caps: {'; '.join(checked)} ({scope})"


def cooloff(subject: Subject, params: CooloffParams) -> Verdict:
    action = subject.action
    if action.cooloff_days == 0:
        return True, "the action has no cool-off"
    since = subject.now - timedelta(days=action.cooloff_days)
    answers = [
        c
        for c in subject.contacts
        if _counts(c, params.kinds, params.household)
        and c.occurred_at > since
        and (c.action_id == action.id or (action.need is not None and c.need == action.need))
    ]
    if not answers:
        return True, f"no {'/'.join(params.kinds)} in the last {action.cooloff_days} days"
    last = max(answers, key=lambda c: c.occurred_at)
    until = (last.occurred_at + timedelta(days=action.cooloff_days)).date().isoformat()
    what = last.action_id or last.need
    return False, f"{last.kind} of {what} on {last.occurred_at.date()}: cool-off until {until}"


def quiet_hours(subject: Subject, params: QuietHoursParams) -> Verdict:
    if subject.action.kind not in params.applies_to:
        return True, f"quiet hours do not apply to {subject.action.kind} actions"
    if subject.channel not in params.channels:
        return True, f"{subject.channel} is not an outbound channel"
    zone = time_zone(subject.facts.timezone if subject.facts else None)
    note = ""
    if zone is None:
        zone = ZoneInfo(params.default_timezone)
        note = " (customer's time zone unknown: the bank's)"
    local = subject.now.astimezone(zone)
    where = f"{local:%H:%M} in {zone.key}{note}"
    if params.is_quiet(local.time()):
        return False, f"{where} is within quiet hours {params.start}-{params.end}"
    return True, f"{where} is outside quiet hours {params.start}-{params.end}"
