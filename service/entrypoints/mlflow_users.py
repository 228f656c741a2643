"""The MLflow users NextBest's containers sign in as, made once by an administrator (compose's
``mlflow-users`` job): ``nextbest-trainer``, which creates NextBest's experiments and registered
models and so may change them, and ``nextbest-reader``, which the API and the stream worker
use and which may only read (the server's ``default_permission`` is READ).

Run as ``python -m service.entrypoints.mlflow_users`` with ``MLFLOW_TRACKING_URI``, the admin's
``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD``, and the two users' passwords in
``MLFLOW_TRAINER_PASSWORD`` and ``MLFLOW_READER_PASSWORD``. A user that exists is left as it is
(its password is changed with MLflow's own update-password API). Exits 0 when both exist.
"""

from __future__ import annotations

import os
import sys

from mlflow.exceptions import MlflowException
from mlflow.server.auth.client import AuthServiceClient

USERS = {"nextbest-trainer": "MLFLOW_TRAINER_PASSWORD", "nextbest-reader": "MLFLOW_READER_PASSWORD"}


def ensure_users(tracking_uri: str, passwords: dict[str, str]) -> list[str]:
    """Create the users that do not exist yet; the names created."""
    client = AuthServiceClient(tracking_uri)
    created = []
    for name, password in passwords.items():
        try:
            client.get_user(name)
            continue
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
        client.create_user(name, password)
        created.append(name)
    return created


def main() -> int:
    missing = [v for v in ("MLFLOW_TRACKING_URI", *USERS.values()) if not os.environ.get(v)]
    if missing:
        print(f"mlflow_users: set {', '.join(missing)}", file=sys.stderr)
        return 2
    passwords = {name: os.environ[variable] for name, variable in USERS.items()}
    created = ensure_users(os.environ["MLFLOW_TRACKING_URI"], passwords)
    print(f"mlflow_users: created {created or 'none'}; {', '.join(USERS)} exist")
    return 0


if __name__ == "__main__":
    sys.exit(main())
