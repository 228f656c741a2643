"""feature_repo/ as the feast CLI reads it."""

from __future__ import annotations

from feast.repo_operations import get_repo_files

from feature_repo.store import REPO_DIR


def test_the_feast_cli_imports_only_objects_py() -> None:
    # The CLI imports every module it lists under its bare name (definitions.py a second time,
    # beside feature_repo.definitions): a new module here belongs in .feastignore.
    assert get_repo_files(REPO_DIR) == [(REPO_DIR / "objects.py").resolve()]
