"""Feature values in words a person understands, for the reasons given with a recommendation:
"loan calculator views, last 7 days: 5" rather than ``loan_views_7d=5.0``."""

from __future__ import annotations

from functools import cache

from feature_repo.activity import FEATURES
from feature_repo.profile import PROFILE_FEATURES


@cache
def _descriptions() -> dict[str, tuple[str, str]]:
    """Feature name -> (kind, description)."""
    out = {f.name: (f.kind, f.description) for f in FEATURES}
    out.update({f.name: ("profile", f.description) for f in PROFILE_FEATURES})
    return out


def describe(name: str, value: float | None) -> str:
    kind, description = _descriptions().get(name, ("unknown", name.replace("_", " ")))
    if value is None:
        return f"{description}: not known"
    if description.startswith("1 when ") or description.startswith("1 in the "):
        # A yes/no fact: "1 when a mortgage is held" -> "a mortgage is held: yes".
        fact = description.removeprefix("1 when ").removeprefix("1 in the ")
        if description.startswith("1 in the "):
            fact = "in the " + fact
        return f"{fact}: {'yes' if value >= 0.5 else 'no'}"
    if kind in ("since", "first"):
        return f"{description}: {value:,.0f}"
    if float(value).is_integer() or abs(value) >= 100:
        return f"{description}: {value:,.0f}"
    return f"{description}: {value:,.2f}"
