"""A customer's online features read through the Feast SDK (``get_online_features``): the
reference the direct reads are held equal to, and a read for any online store Feast supports."""

from __future__ import annotations

from datetime import UTC, datetime

from feast import FeatureStore

from feature_repo.activity import VALID_UNTIL
from feature_repo.definitions import ACTIVITY_SERVICE, SCORING_FEATURES
from service.adapters.features.layout import VIEW_FEATURES
from service.adapters.features.online_features import OnlineFeatures


class FeastSdkReads:
    """Synchronous only: the SDK's asynchronous read is not what the decision path uses."""

    asynchronous = False

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self._service = store.get_feature_service(ACTIVITY_SERVICE)

    def read(self, customer_id: str) -> OnlineFeatures:
        """Every scoring feature (None when unknown); Feast gives row times in whole seconds."""
        response = self.store.get_online_features(
            features=self._service, entity_rows=[{"customer_id": customer_id}]
        ).to_dict(include_event_timestamps=True)
        values = {name: response[name][0] for name in (*SCORING_FEATURES, VALID_UNTIL)}
        # Feast reports each feature's event time as epoch seconds, 0 when it has no value.
        stamps: dict[str, datetime | None] = {}
        for view, names in VIEW_FEATURES.items():
            # Until when a row holds is no feature, and may be null where the features are not.
            scored = (name for name in names if name != VALID_UNTIL)
            oldest = min(response[f"{name}__ts"][0] or 0 for name in scored)
            stamps[view] = datetime.fromtimestamp(oldest, UTC) if oldest > 0 else None
        return OnlineFeatures.of_views(customer_id, values, stamps)

    async def read_async(self, customer_id: str) -> OnlineFeatures:
        raise NotImplementedError("the Feast SDK read runs on a thread")

    async def close_async(self) -> None:
        """Nothing to close: ``read_async`` opens nothing."""
