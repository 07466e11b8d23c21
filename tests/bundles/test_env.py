"""Bundle environments on a worker, without a cluster: wheels made in the test, honest and not.

Every refusal leaves no environment behind (nothing installed), and a broken
or partial environment is found and made again, never used.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lockstep.bundles import env as bundle_env
from lockstep.bundles import env_compile, env_install
from lockstep.bundles.env import EnvRefused, EnvStore, WheelRefused, WheelsMissing
from lockstep.core.digests import sha256_digest
from tests.fixtures.procs import PYTHON_LOCK
from tests.fixtures.wheels import make_wheel, wheel_entry, write_lock

BUILD = "sha256:" + "a" * 64


def store(tmp_path: Path) -> EnvStore:
    return EnvStore(tmp_path / "cache", BUILD, PYTHON_LOCK)


def bundle_with(tmp_path: Path, *wheels: tuple[bytes, str], name: str = "bundle") -> Path:
    bundle = tmp_path / name
    write_lock(bundle, [wheel_entry(data, project) for data, project in wheels])
    (bundle / "model.py").write_text("import demo\n")
    return bundle


def put_all(s: EnvStore, *datas: bytes) -> None:
    for data in datas:
        s.put_wheel(sha256_digest(data), data)


def nothing_made(s: EnvStore) -> bool:
    return not s.envs.exists() or not [p for p in s.envs.iterdir() if not p.name.endswith(".lock")]


def test_an_environment_is_made_once_from_sent_wheels_and_imports(tmp_path: Path) -> None:
    data = make_wheel(files={"demo/__init__.py": b"VALUE = 41 + 1\n", "demo/sub.py": b"X = 1\n"})
    bundle = bundle_with(tmp_path, (data, "demo"))
    s = store(tmp_path)
    status = s.status(bundle)
    assert status["ready"] is False and status["missing"] == [sha256_digest(data)]
    put_all(s, data)
    assert s.status(bundle)["missing"] == []
    env = s.ensure(bundle)
    assert env is not None and env.built
    assert env.site == s.envs / env.key.removeprefix("sha256:") / "site"
    assert s.wait_compiled(env.key, 60)  # compiled by this interpreter, in the background
    assert (env.site / "demo" / "__pycache__").is_dir()
    assert s.verify_deep(env.key) == ""  # the .pyc files are listed now
    again = s.ensure(bundle)
    assert again is not None and not again.built and again.key == env.key
    assert s.status(bundle) == {"env": env.key, "ready": True, "missing": []}
    out = subprocess.run(
        [sys.executable, "-I", "-B", "-c", f"import sys; sys.path.insert(0, {str(env.site)!r}); "
         "import demo; print(demo.VALUE, demo.__file__)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.startswith(f"42 {env.site}/demo/__init__.py")
    assert (env.site / "demo" / "__init__.py").stat().st_mode & 0o777 == 0o444  # read-only
    assert (env.site / "demo").stat().st_mode & 0o777 == 0o555


def test_a_worker_installs_its_own_platform_s_wheels_and_refuses_a_lock_without_it(
    tmp_path: Path,
) -> None:
    amd = make_wheel(files={"demo/__init__.py": b"ARCH = 'amd64'\n"})
    arm = make_wheel(files={"demo/__init__.py": b"ARCH = 'arm64'\n"})
    bundle = tmp_path / "bundle"
    write_lock(
        bundle, [], platforms={"linux/amd64": [wheel_entry(amd)], "linux/arm64": [wheel_entry(arm)]}
    )
    made = {}
    for platform, data in (("linux/amd64", amd), ("linux/arm64", arm)):
        s = EnvStore(tmp_path / platform.replace("/", "-"), BUILD, PYTHON_LOCK, platform)
        assert s.status(bundle)["missing"] == [sha256_digest(data)]  # only its own wheel
        put_all(s, data)
        env = s.ensure(bundle)
        assert env is not None and env.built
        made[platform] = (env.site / "demo" / "__init__.py").read_text()
    assert made == {"linux/amd64": "ARCH = 'amd64'\n", "linux/arm64": "ARCH = 'arm64'\n"}

    # An environment of the other platform where this worker keeps its own is not used.
    shared = EnvStore(tmp_path / "linux-amd64", BUILD, PYTHON_LOCK, "linux/arm64")
    assert shared.status(bundle) == {
        "env": env.key, "ready": False, "missing": [sha256_digest(arm)]
    }  # fmt: skip

    only_amd = tmp_path / "only-amd64"
    write_lock(only_amd, [wheel_entry(amd)], platforms={"linux/amd64": [wheel_entry(amd)]})
    arm_store = EnvStore(tmp_path / "arm", BUILD, PYTHON_LOCK, "linux/arm64")
    with pytest.raises(EnvRefused) as refused:
        arm_store.status(only_amd)
    assert str(refused.value) == (
        "the bundle's lock is for linux/amd64, not this worker's linux/arm64; lock it for "
        "every platform of the image with `lockstep bundle lock`"
    )
    assert nothing_made(arm_store)


def test_a_bundle_without_a_lock_has_no_environment(tmp_path: Path) -> None:
    bundle = tmp_path / "plain"
    bundle.mkdir()
    (bundle / "model.py").write_text("")
    s = store(tmp_path)
    assert s.ensure(bundle) is None and s.for_bundle(bundle) is None
    assert s.status(bundle) == {"env": None, "ready": True, "missing": []}


def test_a_wheel_sent_with_another_hash_is_refused_and_nothing_is_kept(tmp_path: Path) -> None:
    s = store(tmp_path)
    good = make_wheel()
    with pytest.raises(WheelRefused, match=r"has sha256 .*refused, nothing stored"):
        s.put_wheel(sha256_digest(good), good + b"tampered")
    assert s.missing([sha256_digest(good)]) == [sha256_digest(good)]
    bundle = bundle_with(tmp_path, (good, "demo"))
    with pytest.raises(WheelsMissing):
        s.ensure(bundle)
    assert nothing_made(s)


def test_a_wheel_corrupted_on_the_worker_is_removed_and_asked_for_again(tmp_path: Path) -> None:
    data = make_wheel()
    bundle = bundle_with(tmp_path, (data, "demo"))
    s = store(tmp_path)
    put_all(s, data)
    path = s.wheel_path(sha256_digest(data))
    path.chmod(0o644)
    path.write_bytes(data[:-10])
    with pytest.raises(WheelsMissing):
        s.ensure(bundle)
    assert not path.exists() and nothing_made(s)


@pytest.mark.parametrize(
    ("wheel", "message"),
    [
        (make_wheel(lie={"demo/evil.py": b"import os\n"}), "does not have the hash its RECORD"),
        (make_wheel(unlisted={"demo/extra.py": b""}), "not listed with a hash in its RECORD"),
        (make_wheel(listed_only=["demo/gone.py"]), "lists demo/gone.py, which it does not"),
        (make_wheel(files={"../escape.py": b"x = 1\n"}), "'..' path part"),
        (make_wheel(files={"demo/../../escape.py": b""}), "'..' path part"),
        (make_wheel(files={"/etc/evil.py": b""}), "absolute path"),
        (make_wheel(symlinks={"demo/link": "/etc/passwd"}), "symbolic link"),
        (make_wheel(files={"json/__init__.py": b""}), "shadow the standard library"),
        (make_wheel(name="other"), "it is other, the lock says demo"),
        (b"not a zip at all", "not a zip archive"),
    ],
    ids=[
        "record-lies",
        "unlisted",
        "listed-missing",
        "dotdot",
        "dotdot-inner",
        "absolute",
        "symlink",
        "stdlib-shadow",
        "other-project",
        "not-a-zip",
    ],
)
def test_a_dishonest_or_unsafe_wheel_is_refused_and_nothing_is_installed(
    tmp_path: Path, wheel: bytes, message: str
) -> None:
    bundle = bundle_with(tmp_path, (wheel, "demo"))
    s = store(tmp_path)
    put_all(s, wheel)
    with pytest.raises(WheelRefused, match=message):
        s.ensure(bundle)
    assert nothing_made(s)
    assert not (tmp_path / "escape.py").exists() and not (tmp_path / "cache" / "escape.py").exists()


def test_two_wheels_writing_one_file_are_refused(tmp_path: Path) -> None:
    one = make_wheel("demo", files={"shared/__init__.py": b"A = 1\n"})
    two = make_wheel("second", files={"shared/__init__.py": b"A = 2\n"})
    bundle = bundle_with(tmp_path, (one, "demo"), (two, "second"))
    s = store(tmp_path)
    put_all(s, one, two)
    with pytest.raises(WheelRefused, match=r"shared/__init__\.py is installed already"):
        s.ensure(bundle)
    assert nothing_made(s)


def test_too_much_to_unpack_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(env_install, "MAX_ENV_BYTES", 1000)
    big = make_wheel(files={"demo/__init__.py": b"#" * 5000})
    bundle = bundle_with(tmp_path, (big, "demo"))
    s = store(tmp_path)
    put_all(s, big)
    with pytest.raises(WheelRefused, match="more than 1000 bytes"):
        s.ensure(bundle)
    assert nothing_made(s)


def test_a_lock_for_another_image_or_edited_by_hand_is_refused(tmp_path: Path) -> None:
    data = make_wheel()
    bundle = tmp_path / "other-image"
    write_lock(bundle, [wheel_entry(data)], python_lock="sha256:" + "1" * 64)
    s = store(tmp_path)
    with pytest.raises(EnvRefused, match="made for the image Python lock sha256:1111"):
        s.ensure(bundle)
    edited = bundle_with(tmp_path, (data, "demo"), name="edited")
    lock = edited / "lockstep.lock.json"
    lock.write_text(lock.read_text().replace('"1.0"', '"1.1"', 1))
    with pytest.raises(EnvRefused, match="edited by hand"):
        s.ensure(edited)


def test_an_edited_environment_is_found_and_made_again(tmp_path: Path) -> None:
    data = make_wheel()
    bundle = bundle_with(tmp_path, (data, "demo"))
    s = store(tmp_path)
    put_all(s, data)
    env = s.ensure(bundle)
    assert env is not None and s.verify_deep(env.key) == ""
    init = env.site / "demo" / "__init__.py"
    init.chmod(0o644)
    init.write_text("VALUE = 'changed'\n")
    again = s.ensure(bundle)  # every job checks every file
    assert again is not None and again.built
    assert init.read_text() == "VALUE = 1\n"
    extra = env.site / "demo" / "planted.py"
    (env.site / "demo").chmod(0o755)
    extra.write_text("")
    third = store(tmp_path).for_bundle(bundle)  # a fresh worker process checks before use
    assert third is not None and third.built and not extra.exists()


def test_a_partial_environment_is_never_used(tmp_path: Path) -> None:
    data = make_wheel()
    bundle = bundle_with(tmp_path, (data, "demo"))
    s = store(tmp_path)
    put_all(s, data)
    env = s.ensure(bundle)
    assert env is not None
    (env.site.parent / "ENV.json").chmod(0o644)
    os.unlink(env.site.parent / "ENV.json")
    fresh = store(tmp_path)
    assert fresh.status(bundle)["ready"] is False
    made = fresh.ensure(bundle)
    assert made is not None and made.built and (made.site.parent / "ENV.json").is_file()


def _make_slowly(root: str, bundle: str) -> None:
    """In a child process: make the environment, stalling after the first file."""
    real = bundle_env.install_all

    def slow(*args: object, **kwargs: object) -> object:
        written = real(*args, **kwargs)  # type: ignore[arg-type]
        time.sleep(60)
        return written

    bundle_env.install_all = slow  # type: ignore[assignment]
    EnvStore(Path(root), BUILD, PYTHON_LOCK).ensure(Path(bundle))


def _make(root: str, bundle: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    env = EnvStore(Path(root), BUILD, PYTHON_LOCK).ensure(Path(bundle))
    out.put(env is not None and env.built)


def test_a_maker_killed_part_way_leaves_nothing_used_and_the_next_one_makes_it(
    tmp_path: Path,
) -> None:
    data = make_wheel()
    bundle = bundle_with(tmp_path, (data, "demo"))
    s = store(tmp_path)
    put_all(s, data)
    ctx = multiprocessing.get_context("fork")
    maker = ctx.Process(target=_make_slowly, args=(str(s.root), str(bundle)))
    maker.start()
    deadline = time.monotonic() + 30
    while not list(s.envs.glob(".*.tmp")):
        assert time.monotonic() < deadline and maker.is_alive()
        time.sleep(0.02)
    assert maker.pid is not None
    os.kill(maker.pid, signal.SIGKILL)  # mid-materialisation, holding the flock
    maker.join()
    assert s.status(bundle)["ready"] is False
    env = s.ensure(bundle)
    assert env is not None and env.built
    assert not list(s.envs.glob(".*.tmp"))  # the dead maker's leftovers are gone


def test_concurrent_processes_share_one_materialisation(tmp_path: Path) -> None:
    data = make_wheel()
    bundle = bundle_with(tmp_path, (data, "demo"))
    s = store(tmp_path)
    put_all(s, data)
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    makers = [ctx.Process(target=_make, args=(str(s.root), str(bundle), out)) for _ in range(4)]
    for m in makers:
        m.start()
    for m in makers:
        m.join(60)
    built = [out.get(timeout=5) for _ in makers]
    assert sorted(built) == [False, False, False, True]


def _pyc(site: Path, module: str) -> Path:
    import importlib.util

    return Path(importlib.util.cache_from_source(str(site / module)))


def test_an_environment_is_used_before_it_is_compiled_and_sealed_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_wheel(files={"demo/__init__.py": b"VALUE = 7\n"})
    bundle = bundle_with(tmp_path, (data, "demo"))
    s = store(tmp_path)
    put_all(s, data)
    monkeypatch.setattr(EnvStore, "compile_soon", lambda self, key: None)  # a compile not run
    env = s.ensure(bundle)
    assert env is not None and not _pyc(env.site, "demo/__init__.py").exists()
    out = subprocess.run(
        [sys.executable, "-I", "-B", "-c", f"import sys; sys.path.insert(0, {str(env.site)!r}); "
         "import demo; print(demo.VALUE)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout == "7\n"  # usable now, imported from source
    # while it is not compiled, a .pyc is the only file it may gain; one planted there
    # is not trusted: the compiler removes it and compiles the module itself
    planted = _pyc(env.site, "demo/__init__.py")
    planted.parent.mkdir()
    planted.write_bytes(b"planted")
    assert s.status(bundle)["ready"] is True
    other = env.site / "demo" / "planted.py"
    other.write_text("")
    assert store(tmp_path).status(bundle)["ready"] is False  # anything else: made again
    assert not env.site.parent.exists() or not other.exists()
    s2 = store(tmp_path)
    made = s2.ensure(bundle)
    assert made is not None and made.built
    planted = _pyc(made.site, "demo/__init__.py")
    planted.parent.mkdir()
    planted.write_bytes(b"planted before the compiler ran")
    monkeypatch.undo()
    s2.compile_soon(made.key)
    assert s2.wait_compiled(made.key, 60)
    assert planted.read_bytes()[:4] == importlib_magic()
    assert s2.verify_deep(made.key) == ""
    assert (made.site / "demo").stat().st_mode & 0o777 == 0o555  # sealed: read-only
    planted.parent.chmod(0o755)
    (planted.parent / "extra.cpython-311.pyc").write_bytes(b"")  # sealed: no more .pyc
    assert store(tmp_path).status(bundle)["ready"] is False
    assert not made.site.parent.exists()  # removed, to be made again


def importlib_magic() -> bytes:
    import importlib.util

    return importlib.util.MAGIC_NUMBER


def test_a_compile_that_died_is_done_by_the_next_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_wheel(files={"demo/__init__.py": b"VALUE = 1\n", "demo/more.py": b"X = 2\n"})
    bundle = bundle_with(tmp_path, (data, "demo"))
    s = store(tmp_path)
    put_all(s, data)
    with monkeypatch.context() as m:
        m.setattr(EnvStore, "compile_soon", lambda self, key: None)
        env = s.ensure(bundle)
    assert env is not None
    # what a compile killed part-way leaves: one .pyc done, one temporary
    done = _pyc(env.site, "demo/__init__.py")
    done.parent.mkdir()
    done.write_bytes(b"half a compile")
    (done.parent / f"{done.name}.123456").write_bytes(b"partial")
    later = store(tmp_path)  # another worker process finds it uncompiled: compiles it
    assert later.status(bundle)["ready"] is True
    assert later.wait_compiled(env.key, 60)
    assert not (done.parent / f"{done.name}.123456").exists()
    assert done.read_bytes()[:4] == importlib_magic()
    assert _pyc(env.site, "demo/more.py").is_file()
    assert later.verify_deep(env.key) == ""


def test_a_pyc_a_wheel_ships_is_kept_as_installed(tmp_path: Path) -> None:
    import importlib.util

    shipped_pyc = importlib.util.cache_from_source("demo/tool.py")
    data = make_wheel(
        files={
            "demo/__init__.py": b"VALUE = 1\n",
            "demo/tool.py": b"Y = 1\n",
            shipped_pyc: b"what the wheel ships",  # numpy 2.3.5 ships one
        }
    )
    bundle = bundle_with(tmp_path, (data, "demo"))
    s = store(tmp_path)
    put_all(s, data)
    env = s.ensure(bundle)
    assert env is not None and s.wait_compiled(env.key, 60)
    assert (env.site / shipped_pyc).read_bytes() == b"what the wheel ships"
    assert _pyc(env.site, "demo/__init__.py").is_file()
    assert s.verify_deep(env.key) == ""


def test_sealing_keeps_only_the_pycs_the_compiler_wrote(tmp_path: Path) -> None:
    import json

    data = make_wheel(files={"demo/__init__.py": b"A = 1\n", "demo/b.py": b"B = 2\n"})
    bundle = bundle_with(tmp_path, (data, "demo"))
    s = store(tmp_path)
    put_all(s, data)
    env = s.ensure(bundle)
    assert env is not None and s.wait_compiled(env.key, 60)
    final = env.site.parent
    marker = json.loads((final / "ENV.json").read_bytes())
    listed = {row[0]: row[1] for row in marker["files"]}
    a, b = (f"site/{p}" for p in ("demo/__pycache__/__init__.cpython-311.pyc",
                                   "demo/__pycache__/b.cpython-311.pyc"))  # fmt: skip
    assert a in listed and b in listed
    # as if the compiler had just written them and a task then replaced b's
    unsealed = {**marker, "compiled": False, "files": [r for r in marker["files"]
                                                       if r[0] not in (a, b)]}  # fmt: skip
    sealed = env_compile.seal(final / "site", unsealed, {a: listed[a], b: "0" * 64})
    assert sealed is not None and sealed["compiled"] is True
    kept = {row[0] for row in sealed["files"]}
    assert a in kept and b not in kept and not (final / b).exists()


def test_checks_while_it_compiles_find_it_ready(tmp_path: Path) -> None:
    """The compiler's .pyc files and their temporaries come and go under a check's walk."""
    files = {f"demo/m{i}.py": f"X = {i}\n".encode() * 50 for i in range(300)}
    data = make_wheel(files={"demo/__init__.py": b"", **files})
    bundle = bundle_with(tmp_path, (data, "demo"))
    maker = store(tmp_path)
    put_all(maker, data)
    env = maker.ensure(bundle)  # compiling in the background from here
    assert env is not None
    checks = 0
    while not maker.wait_compiled(env.key, 0):
        assert store(tmp_path).status(bundle)["ready"] is True  # a fresh walk each time
        checks += 1
    assert store(tmp_path).status(bundle)["ready"] is True
    assert maker.verify_deep(env.key) == "" and checks >= 1


def test_the_compiler_writes_what_py_compile_writes(tmp_path: Path) -> None:
    import py_compile

    source = tmp_path / "m.py"
    source.write_bytes(b"import os\nX = {'a', 'b'}\ndef f(y):\n    return [y for _ in X]\n")
    out = tmp_path / "m.pyc"
    py_compile.compile(
        str(source), cfile=str(out), invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH
    )
    assert env_compile.pyc_bytes(source.read_bytes(), str(source)) == out.read_bytes()


def test_the_seal_writing_env_json_is_not_taken_for_tampering(tmp_path: Path) -> None:
    """The seal renames a temporary onto ENV.json; a check walking meanwhile sees it.

    Seen under load: a check called the environment broken for
    ``.ENV.json.<pid>.<random>.tmp`` and removed it while it was being sealed."""
    data = make_wheel(files={"demo/__init__.py": b"VALUE = 1\n"})
    bundle = bundle_with(tmp_path, (data, "demo"))
    s = store(tmp_path)
    put_all(s, data)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(EnvStore, "compile_soon", lambda self, key: None)
        env = s.ensure(bundle)
    assert env is not None
    final = env.site.parent
    sealing = final / f".ENV.json.{os.getpid()}.abc123.tmp"
    sealing.write_bytes(b"{}")
    assert store(tmp_path).status(bundle)["ready"] is True
    sealing.unlink()
    stranger = final / ".ENV.json.tmp"  # not a temporary of the marker: not part of it
    stranger.write_bytes(b"{}")
    assert store(tmp_path).status(bundle)["ready"] is False
