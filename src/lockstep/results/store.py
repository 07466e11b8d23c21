"""The result store's layout on disk: segments of verified records, and table blobs.

A store is a directory (docs/design.md §4.11)::

    STORE.json                  {"schema": "lockstep.store/v1"}
    segments/<run>-<n>.jsonl    records, one per line: "<sha256 hex of payload> <payload>"
    blobs/<sha256 hex>          a named table's bytes (Arrow IPC stream), by content
    aggregates/<key>.json       the target's answer over exactly a job's stored results,
                                one line like a segment's ("<sha256 hex> <payload>")

A run writes each batch of results that reaches it as one new segment,
atomically (``core.atomic``: a temporary renamed into place), before it asks
for more: a killed runner, a lost scheduler or a crash loses only the results
that had not reached a segment. Segments are never rewritten. Every line
carries the sha256 of its payload, and every table the sha256 it is stored
under; a line or table that does not match (a torn write, a bit flip, an edit)
is reported as ``Corrupt`` and never used, so its simulation runs again.

A record (canonical JSON) holds the simulation's key and its six key fields
(``keys``), ``status`` (``ok`` or ``failed``), ``output`` (JSON), ``tables``
(name → ``sha256:…``), ``cause`` (the failure's one line), ``worker``,
``pid``, ``environment`` and ``seconds`` (the model's own time).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockstep.core.atomic import write_bytes
from lockstep.core.digests import canonical_json, hex_of, sha256_digest
from lockstep.core.errors import BadInput
from lockstep.results.keys import simulation_key

SCHEMA = "lockstep.store/v1"
MARKER = "STORE.json"
_SEGMENT = re.compile(r"^([0-9a-f]+-[0-9]+)-([0-9]{6})\.jsonl$")


class CorruptEntry(Exception):
    """A stored line or table whose bytes are not what its digest says."""


@dataclass(frozen=True)
class Corrupt:
    """A line of a segment that cannot be used, and why."""

    segment: str
    line: int
    why: str

    def __str__(self) -> str:
        return f"{self.segment} line {self.line}: {self.why}"


@dataclass(frozen=True)
class Stored:
    """A verified record, where it was read, and the run that wrote it."""

    segment: str
    line: int
    run: str
    record: dict[str, Any]


def encode_line(record: Mapping[str, Any]) -> bytes:
    """One segment line: the sha256 hex of the record's canonical JSON, a space, the JSON."""
    payload = canonical_json(record)
    return hashlib.sha256(payload).hexdigest().encode() + b" " + payload + b"\n"


def decode_line(line: bytes) -> dict[str, Any]:
    """The record of a segment line; ``CorruptEntry`` unless digest, JSON and key agree."""
    digest, sep, payload = line.rstrip(b"\n").partition(b" ")
    if not sep or hashlib.sha256(payload).hexdigest().encode() != digest:
        raise CorruptEntry("its sha256 does not match its content")
    try:
        record = json.loads(payload)
    except ValueError as exc:
        raise CorruptEntry(f"not JSON ({exc})") from None
    if not isinstance(record, dict):
        raise CorruptEntry("not a record")
    try:
        key = simulation_key(record)
    except (KeyError, TypeError, ValueError):
        raise CorruptEntry("lacks a key field") from None
    if record.get("key") != key:
        raise CorruptEntry("its key is not the hash of its inputs")
    return record


class ResultStore:
    """A result store directory (see the module); ``open`` makes or checks its layout."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.segments_dir = root / "segments"
        self.blobs_dir = root / "blobs"
        self.aggregates_dir = root / "aggregates"

    @classmethod
    def open(cls, root: Path, create: bool = True) -> ResultStore:
        """The store at ``root``, made if ``create`` and it is new or empty; ``BadInput`` if
        ``root`` is something else (a file, a directory with other things in it) or cannot
        be made (a read-only file system)."""
        try:
            return cls._open(root, create)
        except OSError as exc:
            raise BadInput(
                f"{root}: cannot use it as the result store ({exc.strerror or exc}); give a "
                "writable directory with --store DIR"
            ) from None

    @classmethod
    def _open(cls, root: Path, create: bool) -> ResultStore:
        marker = root / MARKER
        if marker.is_file():
            try:
                schema = json.loads(marker.read_bytes()).get("schema")
            except (OSError, ValueError, AttributeError):
                schema = None
            if schema != SCHEMA:
                raise BadInput(
                    f"{marker}: not a {SCHEMA} result store (schema {schema!r}); give "
                    "another --store directory"
                )
        elif not create:
            raise BadInput(
                f"{root}: no result store there ({MARKER} missing); give the "
                "directory `lockstep run --store` wrote"
            )
        elif root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise BadInput(
                f"{root}: not a result store ({MARKER} missing) and not an empty directory; "
                "give a new or empty --store directory"
            )
        else:
            write_bytes(marker, canonical_json({"schema": SCHEMA}) + b"\n")
        store = cls(root)
        if create:
            store.segments_dir.mkdir(exist_ok=True)
            store.blobs_dir.mkdir(exist_ok=True)
        return store

    def writer(self) -> SegmentWriter:
        """A writer for a new run: its segments are named ``<run>-<n>.jsonl``."""
        return SegmentWriter(self, f"{time.time_ns():x}-{os.getpid()}")

    def segment_names(self) -> list[str]:
        """Every segment, oldest run first."""
        try:
            names = os.listdir(self.segments_dir)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if _SEGMENT.match(n))

    def scan(self, run: str | None = None) -> Iterator[Stored | Corrupt]:
        """Every record of every segment (only run ``run``'s if given), verified, in
        segment and line order; a ``Corrupt`` for each line that is not usable."""
        for name in self.segment_names():
            match = _SEGMENT.match(name)
            assert match is not None
            if run is not None and match.group(1) != run:
                continue
            try:
                data = (self.segments_dir / name).read_bytes()
            except OSError as exc:
                yield Corrupt(name, 0, f"unreadable ({exc.strerror})")
                continue
            if data and not data.endswith(b"\n"):
                yield Corrupt(name, data.count(b"\n") + 1, "cut short")
            for number, line in enumerate(data.splitlines(keepends=True), 1):
                if not line.endswith(b"\n"):
                    continue  # reported above
                try:
                    record = decode_line(line)
                    self._check_tables(record)
                except CorruptEntry as exc:
                    yield Corrupt(name, number, str(exc))
                    continue
                yield Stored(name, number, match.group(1), record)

    def put_aggregate(self, key: str, answer: Mapping[str, Any]) -> None:
        """Store the target's ``answer`` (value, worker, executor, pid, environment) under
        ``key`` (``Inputs.aggregate_key``), atomically."""
        self.aggregates_dir.mkdir(exist_ok=True)
        write_bytes(self.aggregates_dir / f"{key}.json", encode_line({**answer, "key": key}))

    def aggregate(self, key: str) -> dict[str, Any] | None:
        """The stored answer under ``key``, or None: missing, or not its digest or key
        (then the target runs again, as a corrupt simulation does)."""
        try:
            digest, _, payload = (self.aggregates_dir / f"{key}.json").read_bytes().partition(b" ")
            answer = json.loads(payload)
        except (OSError, ValueError):
            return None
        if hashlib.sha256(payload.rstrip(b"\n")).hexdigest().encode() != digest:
            return None
        return answer if isinstance(answer, dict) and answer.get("key") == key else None

    def put_blob(self, data: bytes) -> str:
        """Store a table's bytes by their sha256; the ``sha256:…`` digest."""
        digest = sha256_digest(data)
        path = self.blobs_dir / hex_of(digest)
        if not path.is_file() or path.stat().st_size != len(data):
            write_bytes(path, data)
        return digest

    def read_blob(self, digest: str) -> bytes:
        """A table's bytes; ``CorruptEntry`` if missing or not their digest."""
        try:
            data = (self.blobs_dir / hex_of(digest)).read_bytes()
        except (OSError, ValueError) as exc:
            raise CorruptEntry(f"table {digest} is missing ({exc})") from None
        if sha256_digest(data) != digest:
            raise CorruptEntry(f"table {digest} does not match its digest")
        return data

    def _check_tables(self, record: Mapping[str, Any]) -> None:
        tables = record.get("tables") or {}
        if not isinstance(tables, dict):
            raise CorruptEntry("its tables are not a mapping")
        for digest in tables.values():
            self.read_blob(str(digest))


class SegmentWriter:
    """Writes one run's batches of records, each batch one new segment."""

    def __init__(self, store: ResultStore, run: str) -> None:
        self.store = store
        self.run = run
        self.count = 0

    def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Write ``records`` as the run's next segment (atomically); nothing if empty."""
        if not records:
            return
        self.count += 1
        name = f"{self.run}-{self.count:06d}.jsonl"
        write_bytes(self.store.segments_dir / name, b"".join(encode_line(r) for r in records))
