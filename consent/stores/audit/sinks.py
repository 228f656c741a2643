"""Where signed checkpoints are published, outside the operational store: anything that can keep
``Publication`` documents and give them back (``Sink``). The folder here is the embedded
default; the Kafka topic is ``service/adapters/checkpoint_topic.py``. Another sink (object
storage with a retention lock, a witness) needs only the three methods.

A sink gives back what it holds as it holds it: a document that is not a publication is
handed on as an error, for verification to report, never dropped."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from consent.rules.checkpoints import Publication

log = logging.getLogger(__name__)


class SinkError(RuntimeError):
    """A publication was not taken, or the sink could not be read."""


#: One document read back from a sink: where it came from, and the publication or why it is
#: not one.
Found = tuple[str, Publication | ValueError]


class Sink(Protocol):
    name: str

    def publish(self, publication: Publication) -> None:
        """Keep ``publication`` durably, or raise ``SinkError``."""
        ...

    def read(self) -> Iterator[Found]:
        """Every document kept, oldest first; raises ``SinkError`` if the sink cannot be read."""
        ...

    def latest(self) -> list[Publication]:
        """The few newest publications (the largest trees), unchecked: a writer that starts
        continues the tree from the newest whose signature holds."""
        ...

    def close(self) -> None:
        """Give back connections (made again if the sink is used again)."""
        ...


class FolderSink:
    """Publications as files in a folder, one per tree size: ``<size, 20 digits>.json``. The
    first publication of a size is kept (every process that signs that size signs the same
    root, unless the log was rewritten, which verification reports); files are written whole
    (a temporary file, synced, then linked in) so a reader never sees half of one."""

    name = "folder"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, size: int) -> Path:
        return self.folder / f"{size:020d}.json"

    def publish(self, publication: Publication) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            final = self._path(publication.size)
            if final.exists():
                return
            fd, temporary = tempfile.mkstemp(dir=self.folder, prefix=".publishing-")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    out.write(publication.to_json())
                    out.flush()
                    os.fsync(out.fileno())
                try:
                    os.link(temporary, final)  # fails if another process linked it first
                except FileExistsError:
                    return
                _sync_folder(self.folder)
            finally:
                os.unlink(temporary)
        except OSError as error:
            raise SinkError(f"folder {self.folder}: {error}") from error

    def _files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.glob("*.json") if not p.name.startswith("."))

    def read(self) -> Iterator[Found]:
        try:
            files = self._files()
        except OSError as error:
            raise SinkError(f"folder {self.folder}: {error}") from error
        for path in files:
            yield str(path), _parse(path)

    def latest(self) -> list[Publication]:
        found = []
        for path in reversed(self._files()[-4:]):
            parsed = _parse(path)
            if isinstance(parsed, Publication):
                found.append(parsed)
        return found

    def close(self) -> None:
        pass


def _parse(path: Path) -> Publication | ValueError:
    try:
        return Publication.from_json(path.read_bytes())
    except (OSError, ValueError) as error:
        return ValueError(f"{path.name}: {error}")


def _sync_folder(folder: Path) -> None:
    """Make the new file's name durable too (POSIX: sync the directory)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
