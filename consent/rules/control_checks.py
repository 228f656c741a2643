"""The gate's control groups: customers held back from sales actions so that what the
actions cause can be measured (``nextbest report lift``).

- The universal control group: a share of customers who receive no sales action at all.
- Per-action holdouts: for each sales action, a share of customers who do not receive it.

Assignment is a salted hash of the customer id, not a draw: the same customer stays in the
same group across decisions, channels and processes, and anyone holding the policy can
recompute it. The groups are nested: a customer is in control while her bucket is below the
share, so raising the share keeps every member and lowering it releases the newest ones. A new
``generation`` reshuffles. The bucket itself is never recorded: a stable hash of the customer
id would outlive her erasure as a pseudonym.

Service and regulatory actions are never held back (the registry gives these rules sales
actions only)."""

from __future__ import annotations

import hashlib
from typing import Final

from consent.rules.params import HoldoutParams, UniversalControlParams
from consent.rules.subject import Subject, Verdict

UNIVERSAL_RULE: Final = "control.universal"
HOLDOUT_RULE: Final = "control.action_holdout"
CONTROL_RULES: Final = frozenset({UNIVERSAL_RULE, HOLDOUT_RULE})

#: Shares are honoured to a hundredth of a percent.
BUCKETS: Final = 10_000

NO_CUSTOMER: Final = "no customer to assign to a group: held back (fails safe)"


def bucket(generation: str, *parts: str) -> int:
    """A customer's bucket in ``[0, BUCKETS)`` for the assignment named by ``parts``."""
    key = "\x00".join((generation, *parts)).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") % BUCKETS


def in_share(generation: str, share: float, *parts: str) -> bool:
    below = round(share * BUCKETS)
    # A share of nothing holds no one back: no hash to work out (the packaged holdouts).
    return below > 0 and bucket(generation, *parts) < below


def in_universal_control(params: UniversalControlParams, customer_id: str) -> bool:
    return in_share(params.generation, params.share, "universal", customer_id)


def held_out(params: HoldoutParams, action_id: str, customer_id: str) -> bool:
    return in_share(params.generation, params.share(action_id), "holdout", action_id, customer_id)


def universal(subject: Subject, params: UniversalControlParams) -> Verdict:
    if subject.customer_id is None:
        return False, NO_CUSTOMER
    key = UNIVERSAL_RULE  # one policy per decision, and the memo is the decision's
    control = subject.memo.get(key)
    if control is None:  # once per decision, whatever the number of candidates
        control = subject.memo[key] = in_universal_control(params, subject.customer_id)
    if control:
        return False, (
            f"in the universal control group ({params.generation}, {params.share:.2%} of "
            "customers): no sales action"
        )
    return True, f"not in the universal control group ({params.generation})"


def holdout(subject: Subject, params: HoldoutParams) -> Verdict:
    if subject.customer_id is None:
        return False, NO_CUSTOMER
    action_id = subject.action.id
    share = params.share(action_id)
    if held_out(params, action_id, subject.customer_id):
        return False, (
            f"held out of {action_id} ({params.generation}, {share:.2%} of customers) to "
            "measure what it causes"
        )
    return True, f"not held out of {action_id} ({params.generation})"
