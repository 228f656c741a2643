"""NextBest's Feast objects as module attributes, where the ``feast`` CLI run in this folder looks
for definitions (``.feastignore`` keeps it out of the other modules). They are the objects
``store.open_store`` registers, with the offline store in the state folder ``NEXTBEST_HOME``,
so ``feast plan`` against a state NextBest applied shows no change.
"""

from __future__ import annotations

import os
from pathlib import Path

from feature_repo.definitions import build
from feature_repo.store import StoreLocation


def _home() -> Path:
    # The CLI changes into this folder before importing us: a relative path would name a state
    # folder inside the source tree, and an empty registry there would make `feast apply` start
    # from nothing instead of failing.
    home = Path(os.environ.get("NEXTBEST_HOME", ""))
    if not home.is_absolute():
        raise RuntimeError(
            "set NEXTBEST_HOME to the absolute path of the NextBest state folder "
            "(and NEXTBEST_FEAST_PROJECT) to use the feast CLI on it; see the README, section Feast"
        )
    return home


(
    customer,
    customer_activity_offline,
    customer_activity_push,
    customer_activity,
    customer_profile_offline,
    customer_profile,
    need_scoring_v1,
    customer_scores_offline,
    customer_scores,
) = build(StoreLocation(_home()).offline_dir)
