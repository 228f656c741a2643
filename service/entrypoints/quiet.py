"""Third-party chatter kept out of NextBest's own processes (the CLI, the API's workers)."""

from __future__ import annotations

import logging
import os
import warnings


def quiet_libraries() -> None:
    """Keep third-party chatter out of the output. Feast resets the DeprecationWarning filter
    when it is imported, so this runs again once a container (and with it Feast) is loaded."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in ("feast", "mlflow", "alembic", "urllib3", "kafka", "dask", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # MLflow announces every registration and warns that a pyfunc is pickled (ours is our own
    # class, loaded by our own code); neither helps someone reading the command's output.
    for name in ("mlflow.tracking._model_registry", "mlflow.pyfunc", "mlflow.models.model"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\.")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"mlflow\.")
