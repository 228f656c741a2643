"""The lock against what the project declares and what docs/dependencies.md records.

requirements-lock.txt must hold every dependency pyproject.toml declares (the package's, the dev
extra's and the build requirements), each pinned inside its specifier and hashed; every
declaration needs an upper bound; and no pinned version may fall in an affected range of the
advisory table in docs/dependencies.md, whose floors pyproject.toml must carry."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
TABLE_MARKER = "<!-- advisories:"
UPPER_BOUND_OPERATORS = frozenset({"<", "<=", "==", "===", "~="})


@dataclass(frozen=True)
class Pin:
    version: Version
    hashes: int


@dataclass(frozen=True)
class Advisory:
    package: NormalizedName
    ids: str
    affected: SpecifierSet
    # None for a transitive dependency: its floor lives in the lock alone.
    floor: SpecifierSet | None


def parse_lock(text: str) -> dict[NormalizedName, Pin]:
    """`name[extras]==version \\ --hash=...` entries of a pip requirements file."""
    pins: dict[NormalizedName, Pin] = {}
    logical = re.sub(r"\\\n", " ", text)
    for line in logical.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement_text, *hashes = line.split("--hash=")
        requirement = Requirement(requirement_text.strip())
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{requirement} is not pinned"
        pins[canonicalize_name(requirement.name)] = Pin(Version(specifier.version), len(hashes))
    return pins


def declared_requirements(pyproject: dict[str, Any]) -> list[Requirement]:
    project = pyproject["project"]
    texts = [
        *project["dependencies"],
        *project["optional-dependencies"]["dev"],
        *pyproject["build-system"]["requires"],
    ]
    return [Requirement(text) for text in texts]


def parse_advisories(markdown: str) -> list[Advisory]:
    _, found, after = markdown.partition(TABLE_MARKER)
    assert found, f"docs/dependencies.md has no line starting {TABLE_MARKER!r}"
    rows = []
    for line in after.splitlines()[1:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0] in {"Package", "---"}:
            continue
        package, ids, affected, floor = cells
        rows.append(
            Advisory(
                package=canonicalize_name(package),
                ids=ids,
                affected=SpecifierSet(affected.strip("`")),
                floor=None if floor.startswith("*via*") else SpecifierSet(floor.strip("`")),
            )
        )
    return rows


def lock_problems(pins: dict[NormalizedName, Pin], requirements: list[Requirement]) -> list[str]:
    problems = []
    for requirement in requirements:
        pin = pins.get(canonicalize_name(requirement.name))
        if pin is None:
            problems.append(f"{requirement.name} is declared but not locked (run scripts/lock)")
        elif not requirement.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{requirement.name}=={pin.version} is outside {requirement}")
    problems += [f"{name} has no hash" for name, pin in pins.items() if pin.hashes == 0]
    return problems


def unbounded(requirements: list[Requirement]) -> list[str]:
    return [
        str(requirement)
        for requirement in requirements
        if not any(spec.operator in UPPER_BOUND_OPERATORS for spec in requirement.specifier)
    ]


def advisory_problems(pins: dict[NormalizedName, Pin], advisories: list[Advisory]) -> list[str]:
    problems = []
    for advisory in advisories:
        pin = pins.get(advisory.package)
        if pin is None:
            problems.append(f"{advisory.package} is in the advisory table but not in the lock")
        elif advisory.affected.contains(pin.version, prereleases=True):
            problems.append(
                f"{advisory.package}=={pin.version} is affected by {advisory.ids} "
                f"({advisory.affected})"
            )
    return problems


def floor_problems(requirements: list[Requirement], advisories: list[Advisory]) -> list[str]:
    """Each recorded floor is carried by pyproject.toml and lies outside its affected range."""
    declared = {canonicalize_name(r.name): r.specifier for r in requirements}
    problems = []
    for advisory in advisories:
        if advisory.floor is None:
            continue
        specifier = declared.get(advisory.package)
        if specifier is None:
            problems.append(f"{advisory.package} has a floor but is not declared")
            continue
        for clause in advisory.floor:
            version = Version(clause.version)
            if clause.operator == ">=":
                if advisory.affected.contains(version, prereleases=True):
                    problems.append(f"{advisory.package}: floor {clause} is itself affected")
                lowest = [Version(s.version) for s in specifier if s.operator in {">=", "=="}]
                if not lowest or max(lowest) < version:
                    problems.append(f"{advisory.package}: {specifier} is below the floor {clause}")
            elif clause.operator == "!=":
                if specifier.contains(version, prereleases=True):
                    problems.append(f"{advisory.package}: {specifier} admits {version}")
            else:
                problems.append(f"{advisory.package}: floor {clause} must use >= or !=")
    return problems


@pytest.fixture(scope="module")
def pins() -> dict[NormalizedName, Pin]:
    return parse_lock((ROOT / "requirements-lock.txt").read_text())


@pytest.fixture(scope="module")
def requirements() -> list[Requirement]:
    with (ROOT / "pyproject.toml").open("rb") as pyproject:
        return declared_requirements(tomllib.load(pyproject))


@pytest.fixture(scope="module")
def advisories() -> list[Advisory]:
    return parse_advisories((ROOT / "docs" / "dependencies.md").read_text())


def test_the_lock_holds_every_declared_dependency_inside_its_specifier_and_hashed(
    pins: dict[NormalizedName, Pin], requirements: list[Requirement]
) -> None:
    assert lock_problems(pins, requirements) == []


def test_every_declared_dependency_has_an_upper_bound(requirements: list[Requirement]) -> None:
    assert unbounded(requirements) == []


def test_no_locked_version_is_in_a_recorded_advisory_range(
    pins: dict[NormalizedName, Pin], advisories: list[Advisory]
) -> None:
    assert advisories, "the advisory table is empty or unreadable"
    assert advisory_problems(pins, advisories) == []


def test_pyproject_carries_every_recorded_floor(
    requirements: list[Requirement], advisories: list[Advisory]
) -> None:
    assert floor_problems(requirements, advisories) == []


# The checks themselves, on inputs that must fail them.

BAD_LOCK = """\
lightgbm==4.5.0 \\
    --hash=sha256:aaaa
fastapi==0.136.3
"""
LIGHTGBM_ADVISORY = Advisory(
    canonicalize_name("lightgbm"), "CVE-2024-43598", SpecifierSet("<4.6.0"), SpecifierSet(">=4.6")
)
FASTAPI_ADVISORY = Advisory(
    canonicalize_name("fastapi"),
    "MAL-2026-4750",
    SpecifierSet("==0.136.3"),
    SpecifierSet("!=0.136.3"),
)


def test_a_locked_version_in_an_affected_range_is_reported() -> None:
    problems = advisory_problems(parse_lock(BAD_LOCK), [LIGHTGBM_ADVISORY, FASTAPI_ADVISORY])
    assert problems == [
        "lightgbm==4.5.0 is affected by CVE-2024-43598 (<4.6.0)",
        "fastapi==0.136.3 is affected by MAL-2026-4750 (==0.136.3)",
    ]


def test_a_missing_pin_a_pin_outside_its_specifier_and_an_unhashed_pin_are_reported() -> None:
    problems = lock_problems(
        parse_lock(BAD_LOCK), [Requirement("lightgbm>=4.6,<5"), Requirement("mlflow>=3.13,<4")]
    )
    assert problems == [
        "lightgbm==4.5.0 is outside lightgbm<5,>=4.6",
        "mlflow is declared but not locked (run scripts/lock)",
        "fastapi has no hash",
    ]


def test_a_declaration_without_an_upper_bound_is_reported() -> None:
    assert unbounded([Requirement("pyarrow>=23.0.1"), Requirement("numpy>=1.26,<3")]) == [
        "pyarrow>=23.0.1"
    ]


def test_a_declared_floor_below_the_recorded_one_is_reported() -> None:
    problems = floor_problems(
        [Requirement("lightgbm>=4.3,<5"), Requirement("fastapi>=0.115,<1")],
        [LIGHTGBM_ADVISORY, FASTAPI_ADVISORY],
    )
    assert problems == [
        "lightgbm: <5,>=4.3 is below the floor >=4.6",
        "fastapi: <1,>=0.115 admits 0.136.3",
    ]


def test_the_advisory_table_is_read_with_its_transitive_rows() -> None:
    table = (
        f"{TABLE_MARKER} x -->\n"
        "| Package | Advisory | Affected | Floor |\n| --- | --- | --- | --- |\n"
        "| lightgbm | CVE-2024-43598 | `<4.6.0` | `>=4.6` |\n"
        "| urllib3 | CVE-2026-44432 | `>=2.6.0,<2.7.0` | *via* requests |\n\nafter\n"
    )
    assert parse_advisories(table) == [
        LIGHTGBM_ADVISORY,
        Advisory(
            canonicalize_name("urllib3"), "CVE-2026-44432", SpecifierSet(">=2.6.0,<2.7.0"), None
        ),
    ]
