"""A job's simulations against the result store: which are stored, which to run, and
the stored results in spec order, for the target and the result document.

A job's simulations are numbered in spec order (``position = params index *
seeds + seed index``). Nothing here holds a list of the simulations: a stored
record finds its positions through its parameter set and seed (memory in the
number of parameter sets plus seeds), the status of each position is one byte,
and the results read back are spooled to a temporary file found through three
numbers per position (17 bytes: its offset and two lengths), so a study of 10⁵
simulations costs the runner a few MB.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import zlib
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from lockstep.core.digests import canonical_json
from lockstep.jobs.spec import JobSpec
from lockstep.results.keys import Inputs
from lockstep.results.store import Corrupt, ResultStore, Stored

MISSING, DONE, FAILED = 0, 1, 2
TARGET_FIELDS = ("params_index", "params", "seed", "output")  # what target(results) gets
SHOWN = 3  # corrupt lines named in a progress line
REST = ("key", "worker", "executor", "pid", "environment", "seconds", "tables")  # spooled too
_COMPACT = json.JSONEncoder(separators=(",", ":"))


@dataclass(frozen=True)
class Simulation:
    """One simulation of the job."""

    position: int
    params_index: int
    params: Mapping[str, Any]
    seed: int
    key: str

    @property
    def what(self) -> str:
        return f"params[{self.params_index}] seed {self.seed}"


@dataclass
class Failure:
    """A simulation that failed in this run, with its one-line cause."""

    simulation: Simulation
    cause: str


@dataclass
class Tally:
    """What reading the store found."""

    reused: int = 0
    corrupt: list[Corrupt] = field(default_factory=list)

    def corrupt_line(self, store: ResultStore) -> str | None:
        """A progress line naming the first corrupt entries, or None."""
        if not self.corrupt:
            return None
        named = "; ".join(str(c) for c in self.corrupt[:SHOWN])
        more = f"; and {len(self.corrupt) - SHOWN} more" if len(self.corrupt) > SHOWN else ""
        return (
            f"store {store.root}: {len(self.corrupt)} corrupt entr(y/ies) ignored, their "
            f"simulations run again: {named}{more}"
        )


class Study:
    """The job's simulations on one build and bundle, and what the store holds of them."""

    def __init__(self, spec: JobSpec, inputs: Inputs, store: ResultStore) -> None:
        self.spec = spec
        self.inputs = inputs
        self.store = store
        self.seeds = len(spec.seeds)
        self.total = len(spec.params) * self.seeds
        self.status = bytearray(self.total)
        self.done = 0  # positions DONE
        self._params_json = [canonical_json(params) for params in spec.params]
        self._params_at: dict[bytes, list[int]] = {}
        for index, text in enumerate(self._params_json):
            self._params_at.setdefault(text, []).append(index)
        self._seed_at = {seed: i for i, seed in enumerate(spec.seeds)}
        self._pairs: set[tuple[str, int]] = set()  # (worker, pid) of the results taken
        self._spool: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self._offset = array("q", [-1]) * self.total
        self._lengths = array("I", [0]) * (2 * self.total)  # a head or rest is < 4 GiB

    def close(self) -> None:
        self._spool.close()

    def simulation(self, position: int) -> Simulation:
        index, seed_index = divmod(position, self.seeds)
        params, seed = self.spec.params[index], self.spec.seeds[seed_index]
        return Simulation(position, index, params, seed, self.inputs.key(params, seed))

    def missing(self) -> Iterator[int]:
        """The positions not stored, in spec order (lazily)."""
        status = self.status
        return (p for p in range(self.total) if status[p] != DONE)

    def read(self, run: str | None = None) -> Tally:
        """Take every stored result of this job (of run ``run`` only, if given)."""
        tally = Tally()
        for found in self.store.scan(run):
            if isinstance(found, Corrupt):
                tally.corrupt.append(found)
            elif found.record.get("status") == "ok" and self.inputs.matches(found.record):
                tally.reused += self.take(found)
        return tally

    def take(self, found: Stored) -> int:
        """Mark the positions ``found`` answers as done; how many were not yet."""
        record = found.record
        seed_index = self._seed_at.get(record["seed"])
        if seed_index is None:
            return 0
        taken = 0
        for index in self._params_at.get(canonical_json(record["params"]), ()):
            position = index * self.seeds + seed_index
            if self.status[position] == DONE:
                continue
            self.status[position] = DONE
            self.done += 1
            self._spool_record(position, index, record)
            taken += 1
        return taken

    def take_new(self, position: int, record: Mapping[str, Any]) -> None:
        """Mark ``position`` done by ``record``, a result of this run."""
        if self.status[position] != DONE:
            self.status[position] = DONE
            self.done += 1
            self._spool_record(position, position // self.seeds, record)

    def mark_failed(self, position: int) -> None:
        if self.status[position] != DONE:
            self.status[position] = FAILED

    def _spool_record(self, position: int, index: int, record: Mapping[str, Any]) -> None:
        # canonical inside, so a result computed now and one read from the store give the
        # same bytes (the aggregate is stored under their digest)
        head = b'{"params_index":%d,"params":%s,"seed":%d,"output":%s}' % (
            index,
            self._params_json[index],  # the record's, canonical (it was found through it)
            self.spec.seeds[position % self.seeds],
            canonical_json(record["output"]),
        )
        rest = _COMPACT.encode({k: record.get(k) for k in REST}).encode()
        self._pairs.add((str(record["worker"]), int(record["pid"])))
        self._spool.seek(0, 2)
        self._offset[position] = self._spool.tell()
        self._lengths[2 * position] = len(head)
        self._lengths[2 * position + 1] = len(rest)
        self._spool.write(head + rest)

    def texts(self) -> Iterator[tuple[bytes, bytes]]:
        spool = self._spool
        spool.flush()
        for position in range(self.total):
            offset = self._offset[position]
            if offset < 0:
                continue
            spool.seek(offset)
            head = spool.read(self._lengths[2 * position])
            yield head, spool.read(self._lengths[2 * position + 1])

    def target_input(self) -> tuple[bytes, str]:
        """The stored results as zlib-compressed JSON text, in spec order: what
        ``target(results)`` gets (``entry.aggregate`` inflates it), and the ``sha256:`` of
        that text (what the aggregate is stored under). Compressed as it is read, so the
        runner holds about a tenth of the JSON, never the whole text."""
        deflate, digest = zlib.compressobj(1), hashlib.sha256()
        out = []
        for chunk in self._target_text():
            digest.update(chunk)
            if piece := deflate.compress(chunk):  # mostly b"": zlib buffers 64 KiB first,
                out.append(piece)  # and a list of 10^5 empty objects was 10 MB at 10^5
        out.append(deflate.flush())
        return b"".join(out), f"sha256:{digest.hexdigest()}"

    def results_digest(self) -> str:
        """``sha256:`` of the JSON text ``target_input`` compresses."""
        digest = hashlib.sha256()
        for chunk in self._target_text():
            digest.update(chunk)
        return f"sha256:{digest.hexdigest()}"

    def _target_text(self) -> Iterator[bytes]:
        yield b"["
        sep = b""
        for head, _ in self.texts():
            yield sep + head
            sep = b","
        yield b"]"

    def processes(self) -> tuple[set[str], set[tuple[str, int]]]:
        """The workers and ``(worker, pid)`` pairs that made the stored results (memory in
        the number of processes, not of simulations; counted as results are taken)."""
        return {w for w, _ in self._pairs}, set(self._pairs)

    def simulations(self) -> Iterator[str]:
        """Each stored result as the result document's JSON object, in spec order."""
        for head, rest in self.texts():
            yield (head[:-1] + b"," + rest[1:]).decode()
