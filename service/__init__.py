"""The running NextBest system: API, stream worker, scoring, CLI and their wiring."""

__version__ = "0.1.0"
