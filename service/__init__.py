"""The running NextBest system: API, stream worker, scoring, CLI and their wiring."""

__version__ = "0.1.0"

import os

# LightGBM's OpenMP threads spin while waiting for work; on a small shared machine a spinning
# thread steals the core another one needs, and a fit takes several times as long.
# Set before anything loads the OpenMP runtime; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# MLflow's HTTP client retries 7 times with exponential backoff (minutes) by default: a registry
# that does not answer would hold a model refresh that long. Fail fast; the next refresh retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
# MLflow reads the backoff factor as an integer: "0.5" failed every request to a registry
# server before it was sent (models never loaded over HTTP).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
# Importing Feast points PROMETHEUS_MULTIPROC_DIR at a temporary folder of its own (which
# prometheus_client then uses for every metric, as files, removed when that process exits) and
# children inherit it. Our processes keep their metrics in memory and serve them themselves:
# forget a folder Feast made for a parent, and fix prometheus_client's choice before Feast loads.
# An operator who wants prometheus_client's multiprocess mode sets the variables to a folder.
for _name in ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR"):
    if os.path.basename(os.environ.get(_name, "")).startswith("feast_metrics_"):
        del os.environ[_name]

import prometheus_client.values  # noqa: E402,F401  (chooses in-memory values now)
