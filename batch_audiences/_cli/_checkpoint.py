"""Resume files for ``upload --checkpoint PATH``.

A checkpoint ties a set of accepted chunk indexes to one exact job: the input file (its resolved
path, size, modification time and a hash of its first and last MiB), the audience, the mode, the
chunk size and the reading options. Re-running the same command reads it back and asks the bulk
engine to skip those chunks; any difference in the job is refused, because skipping chunk 7 of
another file would silently lose data.

The file is JSON, rewritten atomically (a temporary file in the same directory, flushed, then
``os.replace``) after each acknowledgement, so a kill at any moment leaves either the previous or
the next version, never a torn one. It never holds a credential.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

import attrs

__all__ = ["Checkpoint", "CheckpointError", "Fingerprint", "fingerprint"]

KIND: Final = "batch-audiences upload checkpoint"
VERSION: Final = 1
_EDGE: Final = 1 << 20  # bytes hashed at each end of the input


class CheckpointError(Exception):
    """A checkpoint that cannot be used for this job (exit code 2)."""


@attrs.frozen
class Fingerprint:
    """What identifies an input file well enough to resume reading it by chunk index."""

    path: str
    size: int
    mtime_ns: int
    head_sha256: str
    tail_sha256: str

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


def fingerprint(path: str | os.PathLike[str]) -> Fingerprint:
    """Fingerprint a regular file (OSError if it cannot be read)."""
    resolved = Path(path).resolve()
    with open(resolved, "rb") as file:
        stat = os.fstat(file.fileno())
        head = hashlib.sha256(file.read(_EDGE)).hexdigest()
        file.seek(max(0, stat.st_size - _EDGE))
        tail = hashlib.sha256(file.read(_EDGE)).hexdigest()
    return Fingerprint(str(resolved), stat.st_size, stat.st_mtime_ns, head, tail)


def _describe_difference(field: str, expected: object, found: object) -> str:
    names = {
        "path": "input file",
        "size": "input file size",
        "mtime_ns": "input file modification time",
        "head_sha256": "input file content (first MiB)",
        "tail_sha256": "input file content (last MiB)",
        "audience": "audience",
        "mode": "mode",
        "chunk_size": "chunk size",
    }
    what = names.get(field, f"option {field}")
    if field.endswith("sha256") or field == "mtime_ns":
        return f"{what} changed"
    return f"{what}: checkpoint has {expected!r}, this run has {found!r}"


def _as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@attrs.define
class Checkpoint:
    """The resume state of one upload; :meth:`save` writes it to :attr:`path`."""

    path: Path
    job: dict[str, Any]
    accepted: set[int] = attrs.field(factory=set)
    replace_token: str | None = None
    finished: bool = False
    chunks: int | None = None

    @classmethod
    def for_job(
        cls,
        path: str | os.PathLike[str],
        *,
        source: Fingerprint,
        audience: str,
        mode: str,
        chunk_size: int,
        options: Mapping[str, Any],
    ) -> Checkpoint:
        """Load the checkpoint at ``path`` if it exists and matches the job, else start a new one.

        Raises :class:`CheckpointError` when the file exists but is unreadable or describes
        another job.
        """
        job = {
            "input": source.to_json(),
            "audience": audience,
            "mode": mode,
            "chunk_size": chunk_size,
            "options": dict(options),
        }
        checkpoint = cls(Path(path), job)
        if checkpoint.path.exists():
            checkpoint._load()
        return checkpoint

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CheckpointError(f"cannot read checkpoint {self.path}: {error}") from None
        if not isinstance(data, dict) or data.get("kind") != KIND:
            raise CheckpointError(f"{self.path} is not an upload checkpoint")
        if data.get("version") != VERSION:
            raise CheckpointError(
                f"checkpoint {self.path} has format version {data.get('version')!r}; this "
                f"batch-audiences writes version {VERSION}"
            )
        differences = list(self._differences(data.get("job")))
        if differences:
            raise CheckpointError(
                f"checkpoint {self.path} was written for another job ({'; '.join(differences)}); "
                "re-run the exact same command, or delete the file (or pick another --checkpoint "
                "path) to start over"
            )
        accepted = data.get("accepted_chunks", [])
        if not isinstance(accepted, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in accepted
        ):
            raise CheckpointError(f"checkpoint {self.path}: accepted_chunks is not a list of indexes")
        self.accepted = set(accepted)
        token = data.get("replace_token")
        self.replace_token = token if isinstance(token, str) else None
        self.finished = data.get("finished") is True
        chunks = data.get("chunks")
        self.chunks = chunks if isinstance(chunks, int) else None

    def _differences(self, found: object) -> Iterable[str]:
        if not isinstance(found, dict):
            yield "it holds no job description"
            return
        mine = self.job
        for field in ("audience", "mode", "chunk_size"):
            if found.get(field) != mine[field]:
                yield _describe_difference(field, found.get(field), mine[field])
        theirs_input = _as_dict(found.get("input"))
        for field, value in mine["input"].items():
            if theirs_input.get(field) != value:
                yield _describe_difference(field, theirs_input.get(field), value)
        theirs_options = _as_dict(found.get("options"))
        mine_options: dict[str, Any] = mine["options"]
        for field in sorted(set(mine_options) | set(theirs_options)):
            if theirs_options.get(field) != mine_options.get(field):
                yield _describe_difference(field, theirs_options.get(field), mine_options.get(field))

    @property
    def resumed(self) -> bool:
        """Whether earlier runs already had chunks accepted."""
        return bool(self.accepted)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "version": VERSION,
            "job": self.job,
            "accepted_chunks": sorted(self.accepted),
            "replace_token": self.replace_token,
            "finished": self.finished,
            "chunks": self.chunks,
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        }

    def save(self) -> None:
        """Write the checkpoint atomically (temporary file + ``os.replace``)."""
        data = json.dumps(self.to_json(), indent=1).encode("utf-8")
        directory = self.path.parent if str(self.path.parent) else Path(".")
        fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
