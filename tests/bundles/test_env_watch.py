"""``TreeWatch``: inotify on every directory of a tree, and the environment checks it saves."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lockstep.bundles.env import EnvStore
from lockstep.bundles.env_watch import TreeWatch
from lockstep.core.digests import sha256_digest
from tests.fixtures.procs import PYTHON_LOCK
from tests.fixtures.support import require
from tests.fixtures.wheels import make_wheel, wheel_entry, write_lock


def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f.py").write_text("X = 1\n")
    (root / "top.txt").write_text("t")
    return root


def started(root: Path) -> TreeWatch:
    watch = TreeWatch.start(root)
    require(watch is not None, "inotify is not available here")
    assert watch is not None
    return watch


@pytest.mark.parametrize(
    "change",
    [
        lambda r: (r / "a" / "b" / "f.py").write_text("X = 2\n"),
        lambda r: os.chmod(r / "a" / "b" / "f.py", 0o600),
        lambda r: os.utime(r / "top.txt", (0, 0)),
        lambda r: (r / "a" / "b" / "new.pyc").write_bytes(b""),
        lambda r: (r / "a" / "b" / "f.py").unlink(),
        lambda r: (r / "a" / "b" / "f.py").rename(r / "a" / "f.py"),
        lambda r: (r / "a" / "c").mkdir(),
    ],
    ids=["write", "chmod", "utime", "create", "delete", "rename", "mkdir"],
)
def test_any_change_anywhere_in_the_tree_is_seen(tmp_path: Path, change: object) -> None:
    root = tree(tmp_path)
    watch = started(root)
    try:
        (root / "a" / "b" / "f.py").read_text()  # reading is not a change
        os.stat(root / "top.txt")
        assert not watch.changed()
        change(root)  # type: ignore[operator]
        assert watch.changed() and watch.changed()  # and it stays changed
    finally:
        watch.close()
    assert watch.changed()  # a closed watch knows nothing: "changed"


def test_a_job_finds_an_unchanged_environment_without_walking_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_wheel(files={"demo/__init__.py": b"VALUE = 1\n", "demo/sub/m.py": b"Y = 2\n"})
    bundle = tmp_path / "bundle"
    write_lock(bundle, [wheel_entry(data)])
    first = EnvStore(tmp_path / "cache", "sha256:" + "a" * 64, PYTHON_LOCK)
    first.put_wheel(sha256_digest(data), data)
    env = first.ensure(bundle)
    assert env is not None and first.wait_compiled(env.key, 60)
    # a restarted worker: it checks what is on disk when it starts, then watches it
    store = EnvStore(tmp_path / "cache", "sha256:" + "a" * 64, PYTHON_LOCK)
    assert store.check_all() == 1
    walks: list[str] = []
    real = EnvStore._verify

    def counted(self: EnvStore, final: Path, key: str, deep: bool = False) -> tuple[str, bool]:
        walks.append(key)
        return real(self, final, key, deep)

    monkeypatch.setattr(EnvStore, "_verify", counted)
    for _ in range(3):
        assert store.status(bundle)["ready"] is True
    require(store._watches, "inotify is not available here")
    assert walks == []  # nothing changed: no walk
    target = env.site / "demo" / "sub" / "m.py"
    target.chmod(0o644)
    target.write_text("Y = 'changed'\n")
    assert store.status(bundle)["ready"] is False  # the watch saw it; the walk found it
    assert walks and set(walks) == {env.key}  # walked (and again before removing it)
