"""The cold build's schedule: layers made side by side give the bytes one at a time gives,
the base's tree is kept (not unpacked again), and a failure is the error the one-at-a-time
order meets first, with nothing half-written.

Real parts: the session's built base (the image's python compiles every layer here) and
the layer cache on disk; the wheels are made here (tests/fixtures/wheels.py).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from lockstep.assembly import schedule
from lockstep.assembly.layercache import STAGING, LayerCache, entries_from_tar
from lockstep.assembly.layers import Compiler, LayerMaker
from lockstep.assembly.stage import materialize
from lockstep.assembly.thirdparty import WheelGroup
from lockstep.core.atomic import SUFFIX
from lockstep.core.digests import hex_of
from lockstep.core.errors import CheckFailed
from lockstep.core.platforms import AMD64
from lockstep.core.store import Cache
from lockstep.inputs.build_inputs import DebianInput
from lockstep.project import load_project
from tests.fixtures.build import Built, build, downloads_only
from tests.fixtures.wheels import make_wheel, wheel_entry

pytestmark = pytest.mark.slow


def fresh_cache(built: Built, root: Path) -> Cache:
    """A cache holding the session's blobs (its .debs and wheels), hard-linked, and no
    layer records: every layer is made again."""
    return Cache(downloads_only(built, root))


def tree(top: Path) -> dict[str, tuple[str, int, bytes]]:
    """Every path under ``top`` (but the staging's marker): kind, mode, bytes or target."""
    out = {}
    for path in sorted(top.rglob("*")):
        rel = path.relative_to(top).as_posix()
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            out[rel] = ("link", 0, os.readlink(path).encode())
        elif stat.S_ISDIR(info.st_mode):
            out[rel] = ("dir", stat.S_IMODE(info.st_mode), b"")
        elif rel != ".complete":
            out[rel] = ("file", stat.S_IMODE(info.st_mode), path.read_bytes())
    return out


def test_the_base_keeps_its_tree_as_its_staging(built: Built, tmp_path: Path) -> None:
    """The base is made from a tree on disk (its python compiles its standard library
    there): that tree, with the .pyc added, is its staging, the same files as unpacking
    the blob gives, and the layer is the bytes the session's build made."""
    project = load_project(built.root)
    cache = fresh_cache(built, tmp_path / "cache")
    maker = LayerMaker(cache)
    record = maker.base_layer(DebianInput.read(project.debian_lock), project.mirror())
    staged = cache.root / "staged" / hex_of(record.digest)
    assert (staged / ".complete").read_text() == record.digest  # before anyone asked for it
    assert maker.layers.staged(record) == staged
    assert [p.name for p in (cache.root / "staged").iterdir()] == [staged.name]  # no leftovers
    unpacked = tmp_path / "unpacked"
    materialize(entries_from_tar(gzip.decompress(cache.get_blob(record.digest) or b"")), unpacked)
    assert tree(staged) == tree(unpacked)
    session = LayerMaker(Cache(built.cache)).base_layer(
        DebianInput.read(project.debian_lock), project.mirror()
    )
    assert record.digest == session.digest


def dead_pid() -> int:
    """A pid whose process is gone: a killed build's."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_a_killed_builds_staging_is_removed_by_the_next(tmp_path: Path) -> None:
    layers = LayerCache(Cache(tmp_path))
    parent = tmp_path / "staged"
    parent.mkdir()
    left = parent / f".{STAGING}.{dead_pid()}.abc{SUFFIX}"
    (left / "usr").mkdir(parents=True)
    mine = parent / f".{STAGING}.{os.getpid()}.def{SUFFIX}"  # a live build's: kept
    mine.mkdir()
    with layers.staging() as tmp:
        assert tmp.parent == parent and tmp.exists()
        assert not left.exists() and mine.exists()
    assert not tmp.exists()  # not kept: removed
    assert sorted(p.name for p in parent.iterdir()) == [mine.name]


def groups_of(cache: Cache, specs: list[tuple[str, int, bool]]) -> list[WheelGroup]:
    """One group per ``(name, kilobytes of source, honest)``: a wheel made here, cached as a
    downloaded one would be; a dishonest one's RECORD lies about one file."""
    out = []
    for name, kb, honest in specs:
        files = {f"{name}/__init__.py": b"".join(b"X%d = %d\n" % (i, i) for i in range(kb * 80))}
        lie = None if honest else {f"{name}/extra.py": b"Y = 2\n"}
        data = make_wheel(name, "1.0", files, lie=lie)
        cache.put_blob(data)
        out.append(WheelGroup(name, (wheel_entry(data, name, "1.0"),)))
    return out


def made(
    maker: LayerMaker, compiler: Compiler, plan: list[WheelGroup], width: int
) -> dict[str, str]:
    """The plan's layers made ``width`` at a time, taken in the plan's order: their digests."""
    sizes = {g.wheels[0].sha256: i for i, g in enumerate(plan)}  # the last is made first
    with schedule.Schedule(width) as run:
        (layers,) = maker.wheel_layers([("python", plan)], compiler, run, sizes)
        return {name: job.result().digest for name, job in layers.items()}


def test_layers_side_by_side_are_the_bytes_of_one_at_a_time(built: Built, tmp_path: Path) -> None:
    project = load_project(built.root)
    maker = LayerMaker(Cache(built.cache))
    base = maker.base_layer(DebianInput.read(project.debian_lock), project.mirror())
    compiler = Compiler(base, AMD64)
    cache = fresh_cache(built, tmp_path / "cache")
    plan = groups_of(cache, [(f"pkg{i}", 1 + 7 * i % 5, True) for i in range(6)])
    one = made(LayerMaker(cache), compiler, plan, 1)
    shutil.rmtree(cache.root / "keys" / "wheels")  # the layers' records: made again
    three = made(LayerMaker(cache), compiler, plan, 3)
    assert list(one) == [f"python:pkg{i}" for i in range(6)]  # the plan's order
    assert three == one
    assert len(set(one.values())) == 6


def test_a_failure_is_the_one_the_plan_order_meets_first(built: Built, tmp_path: Path) -> None:
    """Two dishonest wheels: the larger (later in the plan) is made first and fails first,
    but the error is the earlier one's, as a one-at-a-time build reports it; the cache
    holds no temporaries and every layer made is whole."""
    project = load_project(built.root)
    base = LayerMaker(Cache(built.cache)).base_layer(
        DebianInput.read(project.debian_lock), project.mirror()
    )
    compiler = Compiler(base, AMD64)
    cache = fresh_cache(built, tmp_path / "cache")
    first, ok, last = groups_of(cache, [("early", 1, False), ("fine", 2, True), ("late", 9, False)])
    maker = LayerMaker(cache)
    sizes = {first.wheels[0].sha256: 1, ok.wheels[0].sha256: 2, last.wheels[0].sha256: 3}
    with pytest.raises(CheckFailed) as failed, schedule.Schedule(1) as run:
        (layers,) = maker.wheel_layers([("python", [first, ok, last])], compiler, run, sizes)
        late = layers["python:late"]
        for job in layers.values():
            job.result()
    assert str(failed.value).startswith(f"{first.wheels[0].filename}: ")
    with pytest.raises(CheckFailed) as alone, schedule.Schedule(1) as run:
        maker.wheel_layers([("python", [first])], compiler, run, sizes)[0]["python:early"].result()
    assert str(failed.value) == str(alone.value)  # the same one line
    assert late.done() and isinstance(late.exception(), CheckFailed)  # it ran first
    assert not [p for p in cache.root.rglob("*") if p.name.endswith(SUFFIX)]
    kept = LayerCache(cache).get("wheels", maker._wheels_key(ok, compiler))
    assert kept is not None and cache.get_blob(kept.digest) is not None  # made whole


def test_a_no_op_build_reads_no_wheel(built: Built, tmp_path: Path) -> None:
    """The downloads run in the background from the start, but only of what is missing: a
    build whose layers are all cached reads no wheel (one replaced by other bytes stays
    unnoticed, where a read would verify it, drop it and download it again)."""
    cache = tmp_path / "cache"
    for part in ("blobs", "keys"):
        shutil.copytree(built.cache / part, cache / part, copy_function=os.link)
    lock = json.loads((built.root / "images/python.lock.json").read_text())
    sha = lock["locked_resolves"][0]["locked_requirements"][0]["artifacts"][0]["hash"]
    wheel = cache / "blobs" / "sha256" / sha
    wheel.unlink()  # a link to the session's: replaced, not written through
    wheel.write_bytes(b"not the wheel")
    again = build(built.root, tmp_path / "out", cache)
    assert again.digest("worker") == built.digest("worker")
    assert again.digest("runner") == built.digest("runner")
    assert wheel.read_bytes() == b"not the wheel"
