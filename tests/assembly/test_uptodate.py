"""A build's record of what it wrote (assembly/uptodate.py): the same build again answers
from it without loading the builder, and anything that changed takes the full build."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lockstep.assembly import identity, uptodate
from lockstep.core.stamps import RACY_NS
from tests.fixtures.build import Built, build, clone, lockstep

PRINTED = {"text": "build_id sha256:1\n", "json": '{"build_id": "sha256:1"}\n'}
ROLES = ("runner", "worker")
OPTIONS = {"out": "/o", "layout": None, "archives": True}


def _later(monkeypatch: pytest.MonkeyPatch) -> None:
    """The recording happens RACY_NS after the files were written (as a build a while
    later), without waiting for it."""
    now = time.time_ns
    monkeypatch.setattr(uptodate.time, "time_ns", lambda: now() + RACY_NS + 10**9)


def _project(root: Path) -> dict[str, object]:
    """A project's files (never parsed on this path) and its recipe."""
    (root / "src").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[tool.lockstep]\n")
    (root / "src/a.py").write_text("A = 1\n")
    (root / "debian.lock").write_text("{}")
    (root / "python.lock").write_text("{}")
    return {
        "pyproject": str(root / "pyproject.toml"),
        "root": str(root),
        "sources": ["src/**/*.py"],
        "debian_lock": str(root / "debian.lock"),
        "python_lock": str(root / "python.lock"),
        "platforms": ["linux/amd64"],
    }


def _recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, object]]:
    """A project and an out/ whose record vouches for its two files."""
    made = _project(tmp_path / "p")
    out = tmp_path / "out"
    out.mkdir()
    (out / "worker.tar").write_bytes(b"w" * 4096)
    (out / "manifest.json").write_bytes(b"{}")
    _later(monkeypatch)
    key = uptodate.key(uptodate.digests_read(made), ["linux/amd64"], ROLES, OPTIONS)
    files = [out / "worker.tar", out / "manifest.json"]
    assert uptodate.record(out, key, made, files, PRINTED)
    return out, made


def _answer(out: Path, made: dict[str, object], form: str = "text", **kw: object) -> str | None:
    args: dict[str, Any] = {"platforms": None, "roles": ROLES, "options": OPTIONS, **kw}
    pyproject = Path(str(made["pyproject"]))
    return uptodate.answer(out, pyproject, args["platforms"], args["roles"], args["options"], form)


def test_the_key_changes_with_each_thing_outputs_depend_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    digests = {"pyproject": "sha256:p", "sources": "sha256:s", "debian_lock": "sha256:d",
               "python_lock": "sha256:y"}  # fmt: skip
    amd64 = ["linux/amd64"]
    base = uptodate.key(digests, amd64, ROLES, OPTIONS)
    assert base == uptodate.key(dict(digests), tuple(amd64), list(ROLES), dict(OPTIONS))
    others = [
        *(uptodate.key({**digests, name: "sha256:z"}, amd64, ROLES, OPTIONS) for name in digests),
        uptodate.key(digests, ["linux/amd64", "linux/arm64"], ROLES, OPTIONS),
        uptodate.key(digests, ["linux/arm64", "linux/amd64"], ROLES, OPTIONS),
        uptodate.key(digests, amd64, ("worker",), OPTIONS),
        *(uptodate.key(digests, amd64, ROLES, {**OPTIONS, name: "other"}) for name in OPTIONS),
    ]
    monkeypatch.setattr(identity, "builder_code_digest", lambda: "sha256:another-builder")
    others.append(uptodate.key(digests, amd64, ROLES, OPTIONS))
    assert len({base, *others}) == len(others) + 1


def test_a_record_answers_until_an_input_or_a_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, made = _recorded(tmp_path, monkeypatch)
    archive, manifest = out / "worker.tar", out / "manifest.json"
    assert _answer(out, made) == PRINTED["text"]
    assert _answer(out, made, "json") == PRINTED["json"]
    assert _answer(out, made, platforms=["linux/amd64"]) == PRINTED["text"]
    assert _answer(out, made, platforms=["linux/arm64"]) is None
    assert _answer(out, made, roles=("worker",)) is None
    assert _answer(out, made, options={**OPTIONS, "archives": False}) is None
    assert uptodate.changed(out) == frozenset()

    # an input: a declared file changed, one added, a lock changed, the project file changed
    for n, (name, text) in enumerate(
        [("src/a.py", "A = 2\n"), ("src/b.py", "B = 1\n"), ("python.lock", '{"x": 1}'),
         ("pyproject.toml", "[tool.lockstep]\n# changed\n")]
    ):  # fmt: skip
        out, made = _recorded(tmp_path / f"input-{n}", monkeypatch)
        (Path(str(made["root"])) / name).write_text(text)
        assert _answer(out, made) is None, name

    # an output: one byte inside, the size and the mtime put back: the ctime still tells
    out, made = _recorded(tmp_path / "bytes", monkeypatch)
    archive = out / "worker.tar"
    before = archive.stat()
    with open(archive, "r+b") as f:
        f.seek(2048)
        f.write(b"x")
    os.utime(archive, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert archive.stat().st_size == before.st_size
    assert _answer(out, made) is None
    assert uptodate.changed(out) == {archive}

    out, made = _recorded(tmp_path / "renamed", monkeypatch)
    manifest = out / "manifest.json"
    copy = tmp_path / "copy"
    copy.write_bytes(manifest.read_bytes())
    copy.replace(manifest)  # the same bytes, another file
    assert _answer(out, made) is None
    assert uptodate.changed(out) == {manifest}
    manifest.unlink()
    assert uptodate.changed(out) == {manifest}


def test_files_changed_within_the_racy_window_are_not_vouched_for(tmp_path: Path) -> None:
    made = _project(tmp_path / "p")
    out = tmp_path / "out"
    out.mkdir()
    (out / "worker.tar").write_bytes(b"w")
    key = uptodate.key(uptodate.digests_read(made), ["linux/amd64"], ROLES, OPTIONS)
    assert not uptodate.record(out, key, made, [out / "worker.tar"], PRINTED)  # just written
    assert not (out / uptodate.RECORD).exists()
    assert _answer(out, made) is None


def test_a_file_gone_before_the_recording_records_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another build's temporary, seen in a shared layout and renamed away since."""
    made = _project(tmp_path / "p")
    out = tmp_path / "out"
    out.mkdir()
    (out / "worker.tar").write_bytes(b"w")
    _later(monkeypatch)
    key = uptodate.key(uptodate.digests_read(made), ["linux/amd64"], ROLES, OPTIONS)
    files = [out / "worker.tar", out / ".blob.123.abc.tmp"]
    assert not uptodate.record(out, key, made, files, PRINTED)
    assert not (out / uptodate.RECORD).exists()


def test_a_recipe_naming_another_tree_means_the_full_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record edited to select the sources elsewhere (``/`` would be a walk of the whole
    disk) is not followed there, even to a copy that digests the same."""
    out, made = _recorded(tmp_path, monkeypatch)
    shutil.copytree(tmp_path / "p/src", tmp_path / "copy/src")
    data = json.loads((out / uptodate.RECORD).read_bytes())
    data["recipe"]["root"] = str(tmp_path / "copy")
    (out / uptodate.RECORD).write_text(json.dumps(data))
    assert _answer(out, made) is None


@pytest.mark.parametrize(
    "record",
    [b"", b"not json", b"[]", b'{"format": 1}', b'{"format": 1, "recipe": {}}',
     b'{"format": 1, "recipe": [], "key": "sha256:k"}',
     b'{"format": 1, "recipe": {"pyproject": 1}, "key": "sha256:k", "files": {}}',
     b'{"format": 2, "recipe": {}, "key": "sha256:k", "files": {}, "printed": {"text": "x"}}'],
)  # fmt: skip
def test_a_broken_record_means_the_full_build(tmp_path: Path, record: bytes) -> None:
    made = _project(tmp_path / "p")
    (tmp_path / uptodate.RECORD).write_bytes(record)
    assert _answer(tmp_path, made) is None
    assert isinstance(uptodate.changed(tmp_path), frozenset)


def test_a_recipe_whose_files_are_gone_means_the_full_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, made = _recorded(tmp_path, monkeypatch)
    (tmp_path / "p/src/a.py").unlink()  # the glob matches nothing: the full build says so
    assert _answer(out, made) is None
    out, made = _recorded(tmp_path / "again", monkeypatch)
    Path(str(made["debian_lock"])).unlink()
    assert _answer(out, made) is None


def test_an_answer_removes_a_killed_builds_temporaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, made = _recorded(tmp_path, monkeypatch)
    ended = subprocess.Popen(["true"])  # its pid: a process that is gone
    ended.wait()
    dead = out / f".worker.tar.{ended.pid}.abc123.tmp"
    dead.write_bytes(b"half an archive")
    assert _answer(out, made) == PRINTED["text"]
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
