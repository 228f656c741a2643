"""The stream worker's stores, each in the online store's kind of store (Redis beside the
features, or SQLite files in the home): the per-customer state, the timers and watermarks,
the dead letters' marks and the alerter's memory. Each call makes a new client; the caller
closes it."""

from __future__ import annotations

from service.adapters.state import RedisStateStore, SQLiteStateStore, StateStore
from service.adapters.timers import (
    RedisTimerIndex,
    RedisWatermarks,
    SQLiteTimerIndex,
    SQLiteWatermarks,
    TimerIndex,
    WatermarkStore,
)
from service.settings import Settings


class StreamStores:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = settings.online_store == "redis"

    def state(self) -> StateStore:
        if self.redis:
            return RedisStateStore(self.settings.redis_url, self.settings.feast_project)
        return SQLiteStateStore(self.settings.home / "stream_state.db")

    def timers(self) -> TimerIndex:
        if self.redis:
            return RedisTimerIndex(self.settings.redis_url, self.settings.feast_project)
        return SQLiteTimerIndex(self.settings.home / "stream_timers.db")

    def watermarks(self) -> WatermarkStore:
        """How far the stream is processed, per partition (the workers write, serving reads)."""
        if self.redis:
            return RedisWatermarks(self.settings.redis_url, self.settings.feast_project)
        return SQLiteWatermarks(self.settings.home / "stream_timers.db")

    def dead_letter_marks(self) -> StateStore:
        """How far each partition's dead letters are written, apart from the state:
        ``--reset-state`` rebuilds features, and its replay still does not write the dead
        letters again."""
        if self.redis:
            project = self.settings.feast_project
            return RedisStateStore(self.settings.redis_url, f"{project}:dead_letters")
        return SQLiteStateStore(self.settings.home / "dead_letters.db")

    def alert_memory(self) -> StateStore:
        """The alerter's last scores per customer."""
        if self.redis:
            return RedisStateStore(self.settings.redis_url, f"{self.settings.feast_project}:alerts")
        return SQLiteStateStore(self.settings.home / "alert_memory.db")


def drop_redis_project(redis_url: str, project: str) -> int:
    """Delete every key of a Feast project in Redis: its online rows (Feast's keys end with the
    project's name) and the stream's stores (``nextbest:<project>:``). For a project of its own
    that ends (a benchmark's, a simulation's); returns how many keys went."""
    import redis

    client = redis.Redis.from_url(redis_url)
    dropped = 0
    try:
        for pattern in (f"*{project}", f"nextbest:{project}:*"):
            keys = list(client.scan_iter(match=pattern.encode(), count=10_000))
            for start in range(0, len(keys), 10_000):
                dropped += int(client.delete(*keys[start : start + 10_000]))  # type: ignore[arg-type]
    finally:
        client.close()
    return dropped
