"""How far the stream is processed, as serving sees it: the oldest partition's watermark the
workers published (``service.usecases.stream_timers``), re-read in the background so a
decision never waits for it."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from service.adapters.timers import WatermarkStore

log = logging.getLogger(__name__)

#: How often the published watermarks are read again.
REFRESH_S = 1.0


class PipelineWatermark:
    def __init__(self, store: WatermarkStore, refresh_s: float = REFRESH_S) -> None:
        self._store = store
        self._refresh_s = refresh_s
        self._value: datetime | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def current(self) -> datetime | None:
        """The oldest published watermark (None: none published). The first call reads it;
        later ones return what the background refresh read last, so a store that stops
        answering leaves the watermark to age (and the features to go stale), never a decision
        waiting."""
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self.refresh()
                    self._thread = threading.Thread(target=self._run, name="watermark", daemon=True)
                    self._thread.start()
        return self._value

    def refresh(self) -> None:
        """Read the published watermarks now (a simulation moving its clock does, between
        steps, rather than wait for the background refresh)."""
        try:
            published = self._store.read()
        except Exception as error:
            log.warning("the stream's watermark could not be read: %s", error)
            return
        if published:
            self._value = datetime.fromtimestamp(min(published.values()) / 1e6, UTC)

    def _run(self) -> None:
        while not self._stopping.wait(self._refresh_s):
            self.refresh()

    def close(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self._refresh_s)
        self._store.close()
