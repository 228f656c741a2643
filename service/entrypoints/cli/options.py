"""Parameter types and options several commands share."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from pydantic import TypeAdapter, ValidationError

from consent.rules.vocabulary import NEEDS
from feature_repo.events import CustomerId

if TYPE_CHECKING:
    AnyParamType = click.ParamType[Any]
else:
    # Click is generic in its value type only from 8.4; the dependency range admits 8.1.
    AnyParamType = click.ParamType

#: A moment on the command line: a day, or a time with or without its zone (UTC if none).
WHEN = click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"])


class Validated(AnyParamType):
    """A value from outside checked by the same pydantic type as the API checks it with."""

    def __init__(self, name: str, annotation: Any) -> None:
        self.name = name
        self._adapter: TypeAdapter[Any] = TypeAdapter(annotation)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return self._adapter.validate_python(value)
        except ValidationError as error:
            self.fail(f"not a valid {self.name}: {problems(error)}", param, ctx)


def problems(error: ValidationError) -> str:
    """A pydantic ValidationError in one line, as the API's 422 details name them."""
    return "; ".join(
        ": ".join(filter(None, (".".join(str(p) for p in e["loc"]), e["msg"])))
        for e in error.errors(include_url=False)
    )


CUSTOMER_ID = Validated("customer id", CustomerId)
NEED = click.Choice(NEEDS)


def needs_or_all(values: tuple[str, ...]) -> tuple[str, ...]:
    """The needs named on the command line; none named: all of them."""
    return tuple(values) or NEEDS


def utc(moment: datetime | None) -> datetime | None:
    """A moment read without a zone is taken as UTC."""
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


bank_option = click.option(
    "--bank",
    "bank_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Bank folder with the outcomes (default: $NEXTBEST_HOME/bank).",
)
