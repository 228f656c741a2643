"""The Feast adapter: write feature rows online and offline, read a customer's online features.

Every row the stream writes online is also appended to the offline store (a folder of Parquet
parts behind the feature view's ``FileSource``), so a point-in-time training set sees exactly the
values serving saw.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from feast import FeatureStore

from feature_repo.aggregates import FEATURE_NAMES
from feature_repo.definitions import ACTIVITY_SERVICE, ACTIVITY_VIEW
from feature_repo.store import StoreLocation


@dataclass(frozen=True)
class OnlineFeatures:
    customer_id: str
    values: dict[str, float | None]
    as_of: datetime | None

    @property
    def known(self) -> bool:
        return self.as_of is not None


class FeastFeatures:
    def __init__(self, store: FeatureStore, where: StoreLocation) -> None:
        self.store = store
        self.where = where
        self._service = store.get_feature_service(ACTIVITY_SERVICE)

    def write(self, rows: pd.DataFrame) -> None:
        """``rows``: customer_id, event_timestamp and every feature column."""
        if rows.empty:
            return
        rows = rows[["customer_id", "event_timestamp", *FEATURE_NAMES]]
        name = f"part-{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"
        folder = self.where.offline_dir / ACTIVITY_VIEW
        temporary = folder / f".{name}.tmp"
        rows.to_parquet(temporary, index=False)
        # The rename makes the part visible whole; readers never see half a file.
        temporary.rename(folder / name)
        self.store.write_to_online_store(ACTIVITY_VIEW, rows)

    def read(self, customer_id: str) -> OnlineFeatures:
        response = self.store.get_online_features(
            features=self._service, entity_rows=[{"customer_id": customer_id}]
        ).to_dict(include_event_timestamps=True)
        values: dict[str, Any] = {name: response[name][0] for name in FEATURE_NAMES}
        # Feast reports each feature's event time as epoch seconds, 0 when it has no value.
        stamps = [response[f"{name}__ts"][0] or 0 for name in FEATURE_NAMES]
        oldest = min(stamps)
        as_of = datetime.fromtimestamp(oldest, UTC) if oldest > 0 else None
        return OnlineFeatures(customer_id, values, as_of)
