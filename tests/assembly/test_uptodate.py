"""A build's record of what it wrote (assembly/uptodate.py): the same build again answers
from it without loading the builder, and anything that changed takes the full build."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lockstep.assembly import uptodate
from lockstep.core.stamps import RACY_NS
from tests.fixtures.build import Built, build, clone, lockstep

PRINTED = {"text": "build_id sha256:1\n", "json": '{"build_id": "sha256:1"}\n'}
INPUTS = {"linux/amd64": {"sources": "sha256:a", "builder": "b"}}
IDENTITY = {"code": "sha256:c", "lockstep": "0.1.0", "project": "sha256:p"}
OPTIONS = {"out": "/o", "layout": None, "archives": True}


def _later(monkeypatch: pytest.MonkeyPatch) -> None:
    """The recording happens RACY_NS after the files were written (as a build a while
    later), without waiting for it."""
    now = time.time_ns
    monkeypatch.setattr(uptodate.time, "time_ns", lambda: now() + RACY_NS + 10**9)


def _outputs(out: Path) -> list[Path]:
    out.mkdir()
    files = [out / "worker.tar", out / "manifest.json"]
    files[0].write_bytes(b"w" * 4096)
    files[1].write_bytes(b"{}")
    return files


def test_the_key_changes_with_each_thing_outputs_depend_on() -> None:
    base = uptodate.key(INPUTS, IDENTITY, ("runner", "worker"), OPTIONS)
    assert base == uptodate.key(dict(INPUTS), dict(IDENTITY), ["runner", "worker"], dict(OPTIONS))
    two = {**INPUTS, "linux/arm64": INPUTS["linux/amd64"]}
    others = [
        uptodate.key({"linux/amd64": {**INPUTS["linux/amd64"], "sources": "sha256:z"}},
                     IDENTITY, ("runner", "worker"), OPTIONS),
        uptodate.key(two, IDENTITY, ("runner", "worker"), OPTIONS),
        uptodate.key(dict(reversed(two.items())), IDENTITY, ("runner", "worker"), OPTIONS),
        uptodate.key(INPUTS, {**IDENTITY, "code": "sha256:d"}, ("runner", "worker"), OPTIONS),
        uptodate.key(INPUTS, {**IDENTITY, "project": "sha256:q"}, ("runner", "worker"), OPTIONS),
        uptodate.key(INPUTS, IDENTITY, ("worker",), OPTIONS),
        uptodate.key(INPUTS, IDENTITY, ("runner", "worker"), {**OPTIONS, "archives": False}),
        uptodate.key(INPUTS, IDENTITY, ("runner", "worker"), {**OPTIONS, "layout": "/l"}),
        uptodate.key(INPUTS, IDENTITY, ("runner", "worker"), {**OPTIONS, "out": "/p"}),
    ]  # fmt: skip
    assert len({base, *others}) == len(others) + 1


def test_a_record_replays_until_a_file_changes_in_any_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    archive, manifest = _outputs(out)
    _later(monkeypatch)
    assert uptodate.record(out, "sha256:k", [archive, manifest], PRINTED)
    assert uptodate.replay(out, "sha256:k", "text") == PRINTED["text"]
    assert uptodate.replay(out, "sha256:k", "json") == PRINTED["json"]
    assert uptodate.replay(out, "sha256:other", "text") is None
    assert uptodate.changed(out) == frozenset()

    # one byte inside, the size and the mtime put back: the ctime still tells
    before = archive.stat()
    with open(archive, "r+b") as f:
        f.seek(2048)
        f.write(b"x")
    os.utime(archive, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert archive.stat().st_size == before.st_size
    assert uptodate.replay(out, "sha256:k", "text") is None
    assert uptodate.changed(out) == {archive}

    assert uptodate.record(out, "sha256:k", [archive, manifest], PRINTED)
    copy = tmp_path / "copy"
    copy.write_bytes(manifest.read_bytes())
    copy.replace(manifest)  # the same bytes, another file
    assert uptodate.replay(out, "sha256:k", "text") is None
    assert uptodate.changed(out) == {manifest}
    manifest.unlink()
    assert uptodate.changed(out) == {manifest}


def test_files_changed_within_the_racy_window_are_not_vouched_for(tmp_path: Path) -> None:
    out = tmp_path / "out"
    files = _outputs(out)
    assert not uptodate.record(out, "sha256:k", files, PRINTED)  # written just now
    assert not (out / uptodate.RECORD).exists()
    assert uptodate.replay(out, "sha256:k", "text") is None


@pytest.mark.parametrize(
    "record",
    [b"", b"not json", b"[]", b'{"format": 1}', b'{"format": 1, "key": "sha256:k"}',
     b'{"format": 1, "key": "sha256:k", "files": [], "printed": {"text": "x"}}',
     b'{"format": 1, "key": "sha256:k", "files": {}, "printed": {"text": "x"}}',
     b'{"format": 1, "key": "sha256:k", "files": {"/nonexistent": {}}, "printed": {"text": 1}}',
     b'{"format": 2, "key": "sha256:k", "files": {}, "printed": {"text": "x"}}'],
)  # fmt: skip
def test_a_broken_record_means_the_full_build(tmp_path: Path, record: bytes) -> None:
    (tmp_path / uptodate.RECORD).write_bytes(record)
    assert uptodate.replay(tmp_path, "sha256:k", "text") is None
    assert isinstance(uptodate.changed(tmp_path), frozenset)


def test_a_replay_removes_a_killed_builds_temporaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    files = _outputs(out)
    _later(monkeypatch)
    assert uptodate.record(out, "sha256:k", files, PRINTED)
    ended = subprocess.Popen(["true"])  # its pid: a process that is gone
    ended.wait()
    dead = out / f".worker.tar.{ended.pid}.abc123.tmp"
    dead.write_bytes(b"half an archive")
    assert uptodate.replay(out, "sha256:k", "text") == PRINTED["text"]
    assert not dead.exists()


# --- the CLI ----------------------------------------------------------------------------


def _quiet_for_racy() -> None:
    time.sleep(RACY_NS / 1e9 + 0.2)  # the files older than the racy window, as any time later


def _run(built: Built, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``lockstep build`` with ``-X importtime``: stderr names every module it loaded."""
    env = {**os.environ, "LOCKSTEP_CACHE_DIR": str(built.cache)}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "lockstep", "build", "all", "--out", str(out),
         "--platform", "linux/amd64", *args],
        cwd=built.root, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _loaded_builder(proc: subprocess.CompletedProcess[str]) -> bool:
    return "lockstep.assembly.builder\n" in proc.stderr


def test_a_recorded_no_op_build_prints_the_same_without_loading_the_builder(
    built: Built, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = _run(built, out, "--json")
    assert _loaded_builder(first) and not (out / uptodate.RECORD).exists()  # racy: no record
    _quiet_for_racy()
    full = {"json": _run(built, out, "--json")}  # a full no-op build: it records
    assert _loaded_builder(full["json"]) and (out / uptodate.RECORD).exists()
    fast = {"json": _run(built, out, "--json"), "text": _run(built, out)}
    assert not any(_loaded_builder(p) for p in fast.values())
    (out / uptodate.RECORD).unlink()
    full["text"] = _run(built, out)
    assert _loaded_builder(full["text"])
    for form in ("json", "text"):
        assert fast[form].stdout == full[form].stdout, form
        assert fast[form].stderr.count("\n") < full[form].stderr.count("\n"), form
    images = json.loads(full["json"].stdout)["images"]
    assert {role: images[role]["digest"] for role in images} == {
        role: built.digest(role) for role in ("runner", "worker")
    }


def test_a_change_to_an_input_the_target_or_an_output_takes_the_full_build(
    built: Built, tmp_path: Path
) -> None:
    src = clone(tmp_path / "src")
    out, layout = tmp_path / "out", tmp_path / "layout"
    made = build(src, out, built.cache, "--layout", str(layout))
    _quiet_for_racy()
    build(src, out, built.cache, "--layout", str(layout))  # records
    record = json.loads((out / uptodate.RECORD).read_bytes())
    assert str(made.path("worker")) in record["files"]
    blob = layout / "blobs" / "sha256" / made.digest("worker")[len("sha256:") :]
    assert str(blob) in record["files"]
    originals = {p: p.read_bytes() for p in (made.path("worker"), blob)}

    # a byte inside the archive (in a layer) and inside the layout's worker manifest, sizes
    # and mtimes kept: what looked current before is written again
    for path in originals:
        before = path.stat()
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    again = lockstep(
        ["build", "all", "--out", str(out), "--json", "--platform", "linux/amd64",
         "--layout", str(layout)],
        cwd=src, cache=built.cache,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    for path, data in originals.items():
        assert path.read_bytes() == data, path

    # another target: its own output, not the record's
    worker_only = lockstep(
        ["build", "worker", "--out", str(out), "--json", "--platform", "linux/amd64",
         "--layout", str(layout)],
        cwd=src, cache=built.cache,
    )  # fmt: skip
    assert sorted(json.loads(worker_only.stdout)["images"]) == ["worker"]

    # an input: a new build id
    target = src / "src/lockstep/runtime/__init__.py"
    target.write_text(target.read_text() + "\n# changed after the record\n")
    changed = build(src, out, built.cache, "--layout", str(layout))
    assert changed.build_id != made.build_id
