"""The README's architecture table names every module of each folder it describes, and only
modules that exist: the table is how a newcomer finds their way, so it must not drift."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Folders whose every module the table must name (a subpackage is named as ``name/``).
DESCRIBED = (
    "consent",
    "consent/rules",
    "consent/stores",
    "consent/stores/audit",
    "feature_repo",
    "training",
    "service/entrypoints",
    "service/entrypoints/api",
    "service/entrypoints/cli",
    "service/usecases",
    "service/adapters",
    "service/adapters/features",
    "service",
    "bench",
)


def _rows() -> dict[str, str]:
    """Each row of the architecture table: its folder and what the row says."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| folder | what it owns |") :]
    rows = {}
    for line in table.splitlines()[2:]:
        if not line.startswith("| `"):
            break
        folder, says = re.match(r"\| `([^`]+)/` \| (.*) \|$", line).groups()  # type: ignore[union-attr]
        rows[folder] = says
    return rows


ROWS = _rows()


def _named(says: str) -> set[str]:
    """Every file or folder name the row gives in backticks (``x.py``, ``x/``, ``a/b.py``)."""
    return {
        name.rsplit("/", 2)[-1] if not name.endswith("/") else name.rsplit("/", 2)[-2] + "/"
        for name in re.findall(r"`([\w./]+)`", says)
    }


@pytest.mark.parametrize("folder", DESCRIBED)
def test_the_table_names_every_module_of_the_folder(folder: str) -> None:
    assert folder in ROWS, f"the README's architecture table has no row for {folder}/"
    named = _named(ROWS[folder])
    here = ROOT / folder
    modules = {p.name for p in here.glob("*.py") if p.name != "__init__.py"}
    packages = {
        f"{p.name}/"
        for p in here.iterdir()
        if (p / "__init__.py").exists() and f"{folder}/{p.name}" not in ROWS
    }
    described_apart = {f"{Path(f).name}/" for f in ROWS if Path(f).parent == Path(folder)}
    missing = sorted((modules | packages) - named - described_apart)
    assert not missing, f"{folder}/: the README's row does not name {missing}"


@pytest.mark.parametrize("folder", sorted(ROWS))
def test_every_module_the_table_names_exists(folder: str) -> None:
    here = ROOT / folder
    if not here.is_dir():
        pytest.fail(f"the README describes {folder}/, which does not exist")
    gone = sorted(
        name
        for name in re.findall(r"`([\w./]+\.py)`", ROWS[folder])
        if not (here / name).exists() and not (ROOT / name).exists()
    )
    assert not gone, f"{folder}/: the README names {gone}, which do not exist"
