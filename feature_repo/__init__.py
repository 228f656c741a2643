"""The Feast repository of NextBest: the event contract, the streaming aggregates and the
feature views they feed. Depends on nothing else of ours."""
