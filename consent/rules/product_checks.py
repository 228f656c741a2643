"""The gate's checks on the product for this customer: lending affordability, investment
suitability, the catalog's age and income limits, and whether the customer already holds it or
has applied for it. A fact the gate does not know fails the check."""

from __future__ import annotations

from datetime import timedelta

from consent.rules.params import AffordabilityParams, HeldParams, NoParams, SuitabilityParams
from consent.rules.subject import UNKNOWN_CUSTOMER, Subject, Verdict


def affordability(subject: Subject, params: AffordabilityParams) -> Verdict:
    need, facts, limit = subject.action.need, subject.facts, params.max_debt_to_income
    if need not in params.needs:
        return True, f"not lending (lending needs: {', '.join(params.needs)})"
    if facts is None:
        return False, f"{UNKNOWN_CUSTOMER}: arrears and debt-to-income unknown"
    if facts.in_arrears:
        return False, "the customer is in arrears: no lending"
    if facts.debt_to_income is None:
        return False, "debt-to-income unknown: no lending"
    if facts.debt_to_income > limit:
        return False, f"debt-to-income {facts.debt_to_income:.2f} above the limit {limit:.2f}"
    return True, f"not in arrears; debt-to-income {facts.debt_to_income:.2f} within {limit:.2f}"


def suitability(subject: Subject, params: SuitabilityParams) -> Verdict:
    action, facts = subject.action, subject.facts
    if action.need not in params.needs:
        return True, f"not an investment (investment needs: {', '.join(params.needs)})"
    if facts is None:
        return False, f"{UNKNOWN_CUSTOMER}: no risk assessment"
    if facts.risk_level is None or facts.risk_assessed_at is None:
        return False, "no risk assessment on record"
    assessed, valid_days = facts.risk_assessed_at, params.assessment_valid_days
    if subject.now - assessed > timedelta(days=valid_days):
        return False, f"risk assessment of {assessed.date()} older than {valid_days} days"
    product, tolerance = action.risk_level, facts.risk_level
    if product > tolerance:
        return False, f"product risk {product} above the assessed tolerance {tolerance}"
    return True, f"product risk {product} within tolerance {tolerance} ({assessed.date()})"


def age_limits(subject: Subject, _: NoParams) -> Verdict:
    action = subject.action
    age = None if subject.facts is None else subject.facts.age
    income = None if subject.facts is None else subject.facts.income
    problems = []
    if action.min_age is not None or action.max_age is not None:
        if age is None:
            problems.append("age unknown")
        elif action.min_age is not None and age < action.min_age:
            problems.append(f"age {age} below the minimum {action.min_age}")
        elif action.max_age is not None and age > action.max_age:
            problems.append(f"age {age} above the maximum {action.max_age}")
    if action.min_income is not None:
        if income is None:
            problems.append("income unknown")
        elif income < action.min_income:
            problems.append(f"income {income:.0f} below the minimum {action.min_income:.0f}")
    if problems:
        return False, "; ".join(problems)
    if action.min_age is None and action.max_age is None and action.min_income is None:
        return True, "the catalog sets no eligibility limits for this action"
    return True, "within the catalog's age and income limits"


def held_or_in_flight(subject: Subject, params: HeldParams) -> Verdict:
    need = subject.action.need
    if need is None:
        return True, "not tied to a need"
    if need in subject.in_flight:
        return False, f"a {need} application is in flight"
    if subject.facts is None:
        return False, f"{UNKNOWN_CUSTOMER}: products held unknown"
    if need in subject.facts.holds:
        if need in params.allow_held:
            return True, f"holds {need}, and holding it does not block another"
        return False, f"already holds {need}"
    return True, f"holds no {need} and has no application in flight"
