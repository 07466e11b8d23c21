"""The Debian base as the assembly makes it: safe .deb unpacking, the real base layer, the
staged python and its .pyc files.

Tests that need the real base talk to the Debian mirror (``$LOCKSTEP_DEBIAN_MIRROR`` or the
project's); they skip when it is unreachable, and fail instead under
``LOCKSTEP_REQUIRE_ALL=1``. Downloaded .debs go to ``$LOCKSTEP_CACHE_DIR`` if set, so reruns
are fast. The Debian inputs themselves (versions, resolver, lock, fetch) are tested in
tests/inputs/test_debian.py.
"""

from __future__ import annotations

import json
import marshal
import os
import shutil
import stat
from pathlib import Path

import pytest

from lockstep.assembly.base import base_entries
from lockstep.assembly.deb import deb_entries
from lockstep.assembly.entries import Entry, make_layer
from lockstep.assembly.pycompile import compile_pycs
from lockstep.assembly.stage import StagedPython, materialize
from lockstep.core.errors import BadInput
from lockstep.core.platforms import ARM64
from lockstep.core.store import Cache
from lockstep.inputs.debian.fetch import fetch
from lockstep.inputs.debian.lock import read_lock
from lockstep.project import load_project
from tests.fixtures.debian import M, make_deb, mirror_reachable
from tests.fixtures.support import require, require_platform

ROOT = Path(__file__).resolve().parents[2]
PROJECT = load_project(ROOT)
MIRROR = PROJECT.mirror()

# ------------------------------------------------------------------ unpacking


def entries_by_path(deb: bytes, name: str = "demo") -> dict[str, Entry]:
    return {e.path: e for e in deb_entries(name, deb)}


def test_deb_entries_usr_merge_links_and_hardlinks() -> None:
    deb = make_deb(
        [
            M("./lib/", "dir", mode=0o755),
            M("./lib/x86_64-linux-gnu/libdemo.so.1.0", data=b"ELF", mode=0o644),
            M("./lib/x86_64-linux-gnu/libdemo.so.1", "symlink", target="libdemo.so.1.0"),
            M("./lib64/ld-demo.so", "symlink", target="/lib/x86_64-linux-gnu/libdemo.so.1.0"),
            M("./bin/demo", data=b"#!/bin/sh\n", mode=0o755),
            M("./bin/up", "symlink", target="../usr/share/demo"),
            M("./usr/bin/demo2", "hardlink", target="./bin/demo"),
            M("./usr/lib/ssl/certs", "symlink", target="/etc/ssl/certs"),
            M("./usr/share/demo/dot", "symlink", target="."),
        ]
    )
    got = entries_by_path(deb)
    assert got["usr/lib/x86_64-linux-gnu/libdemo.so.1.0"] == Entry.file(
        "usr/lib/x86_64-linux-gnu/libdemo.so.1.0", b"ELF"
    )
    assert got["usr/lib/x86_64-linux-gnu/libdemo.so.1"].target == "libdemo.so.1.0"
    assert got["usr/lib64/ld-demo.so"].target == "../lib/x86_64-linux-gnu/libdemo.so.1.0"
    assert got["usr/bin/up"].target == "../share/demo"  # was bin/../usr/share/demo
    assert got["usr/bin/demo"].mode == 0o755
    assert got["usr/bin/demo2"] == Entry.file("usr/bin/demo2", b"#!/bin/sh\n", 0o755)
    assert got["usr/lib/ssl/certs"].target == "../../../etc/ssl/certs"
    assert got["usr/share/demo/dot"].target == "."
    assert "" not in got and "." not in got
    assert all(not p.startswith(("bin", "lib")) for p in got)
    assert list(got) == sorted(got)


@pytest.mark.parametrize(
    "members, member",
    [
        ([M("./../etc/passwd", data=b"x")], "./../etc/passwd"),
        ([M("./usr/../../etc/passwd", data=b"x")], "./usr/../../etc/passwd"),
        ([M("/etc/passwd", data=b"x")], "/etc/passwd"),
        ([M("./usr/lib/evil", "symlink", target="../../../../etc")], "./usr/lib/evil"),
        ([M("./evil", "symlink", target="..")], "./evil"),
        (
            [
                M("./usr/share/link", "symlink", target="../lib"),
                M("./usr/share/link/x.so", data=b"x"),
            ],
            "./usr/share/link/x.so",
        ),
        ([M("./lib", "symlink", target="usr/lib"), M("./lib/x.so", data=b"x")], "./lib/x.so"),
        ([M("./dev/null", "chardev")], "./dev/null"),
        ([M("./run/fifo", "fifo")], "./run/fifo"),
        ([M("./usr/bin/x", "hardlink", target="./usr/bin/missing")], "./usr/bin/x"),
    ],
)
def test_unsafe_members_are_refused_naming_package_and_member(
    members: list[M], member: str
) -> None:
    with pytest.raises(BadInput) as err:
        deb_entries("evilpkg", make_deb(members))
    msg = str(err.value)
    assert "evilpkg" in msg and repr(member) in msg, msg
    assert err.value.exit_code == 2


def test_not_a_deb_is_refused() -> None:
    with pytest.raises(BadInput, match=r"demo: not a \.deb"):
        deb_entries("demo", b"PK\x03\x04")


# ------------------------------------------------------------------ the real base


@pytest.fixture(scope="module")
def online() -> str:
    require(mirror_reachable(MIRROR), f"the Debian mirror {MIRROR} is not reachable")
    return MIRROR


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("LOCKSTEP_CACHE_DIR")
    return Path(env) if env else tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def real_debs(online: str, cache_dir: Path) -> dict[str, bytes]:
    return fetch(read_lock(PROJECT.debian_lock).of("amd64"), online, Cache(cache_dir))


@pytest.fixture(scope="module")
def real_base(real_debs: dict[str, bytes]) -> list[Entry]:
    return base_entries(read_lock(PROJECT.debian_lock).of("amd64"), real_debs)


@pytest.fixture(scope="module")
def staged(real_base: list[Entry], tmp_path_factory: pytest.TempPathFactory) -> StagedPython:
    root = tmp_path_factory.mktemp("stage") / "root"
    materialize(real_base, root)
    return StagedPython(root)


def test_base_layer_is_reproducible_and_small(
    real_base: list[Entry], real_debs: dict[str, bytes]
) -> None:
    first = make_layer(real_base)
    again = make_layer(base_entries(read_lock(PROJECT.debian_lock).of("amd64"), dict(real_debs)))
    assert first.digest == again.digest and first.diff_id == again.diff_id
    assert 12_000_000 < first.size < 22_000_000, first.size
    paths = {e.path for e in real_base}
    assert not any(p.startswith(("usr/share/man/", "usr/share/info/")) for p in paths)
    assert all(
        e.path.endswith("/copyright")
        for e in real_base
        if e.path.startswith("usr/share/doc/") and e.kind != "dir"
    )
    libc_bin = {e.path for e in deb_entries("libc-bin", real_debs["libc-bin"]) if e.kind != "dir"}
    kept = libc_bin & paths
    assert kept and all(
        p.startswith("usr/lib/locale/C.utf8/")
        for p in kept
        if p != "usr/share/doc/libc-bin/copyright"
    ), kept
    assert "usr/lib/locale/C.utf8/LC_CTYPE" in paths
    assert not any(p.startswith(("bin/", "lib/", "lib64/", "sbin/")) for p in paths)
    by_path = {e.path: e for e in real_base}
    for top in ("bin", "sbin", "lib", "lib64"):
        assert by_path[top] == Entry.symlink(top, f"usr/{top}")
    for e in real_base:
        if e.kind == "symlink":
            assert not e.target.startswith("/"), e


def test_staged_python_is_debians_and_has_the_batteries(staged: StagedPython) -> None:
    assert staged.check().startswith("3.11.2 ")
    code = """
import json, sys, ssl, sqlite3, asyncio, zoneinfo, locale, datetime, os
locale.setlocale(locale.LC_ALL, "C.UTF-8")
ctx = ssl.create_default_context()
paris = datetime.datetime(2024, 7, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
print(json.dumps({
    "version": sys.version.split()[0],
    "executable": sys.executable,
    "prefix": sys.prefix,
    "paris": paris.utcoffset().total_seconds(),
    "cas": ctx.cert_store_stats()["x509_ca"],
    "sqlite": sqlite3.sqlite_version,
    "loop": asyncio.run(asyncio.sleep(0, result="ok")),
    "encoding": sys.getfilesystemencoding(),
}))
"""
    proc = staged.run(["-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    root = str(staged.root)
    assert facts["version"] == "3.11.2"
    assert facts["executable"].startswith(root) and facts["prefix"] == root + "/usr"
    assert facts["paris"] == 7200
    assert facts["cas"] > 100
    assert facts["loop"] == "ok" and facts["encoding"] == "utf-8"
    maps = staged.run(
        ["-c", "import ssl, sqlite3; print(open('/proc/self/maps').read())"],
        capture_output=True,
        text=True,
    ).stdout
    libs = {line.split()[-1] for line in maps.splitlines() if ".so" in line}
    assert libs and all(lib.startswith(root) for lib in libs), libs


def test_materialised_base_files(staged: StagedPython) -> None:
    root = staged.root
    assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
    passwd = (root / "etc/passwd").read_text().splitlines()
    assert "nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin" in passwd
    assert passwd[0].startswith("root:x:0:0:")
    assert "nonroot:x:65532:" in (root / "etc/group").read_text().splitlines()
    bundle = (root / "etc/ssl/certs/ca-certificates.crt").read_bytes()
    assert bundle.count(b"-----BEGIN CERTIFICATE-----") > 100
    assert os.readlink(root / "usr/bin/python3") == "python3.11"
    assert "localhost" in (root / "etc/hosts").read_text()
    assert os.readlink(root / "bin") == "usr/bin"
    # Absolute targets were rewritten to relative ones that resolve inside the root.
    assert (root / "usr/lib/ssl/cert.pem").resolve() == (
        root / "etc/ssl/certs/ca-certificates.crt"
    ).resolve()
    assert (root / "usr/lib64/ld-linux-x86-64.so.2").resolve().is_relative_to(root.resolve())
    assert (root / "var/lib/dpkg/status.d/libc6").read_text().startswith("Package: libc6\n")


def test_pycs_are_deterministic_and_name_image_paths(
    staged: StagedPython, real_base: list[Entry]
) -> None:
    first = compile_pycs(staged, real_base)
    second = compile_pycs(staged, list(reversed(real_base)))  # another temp dir, other order
    assert first == second
    sources = [e for e in real_base if e.kind == "file" and e.path.endswith(".py")]
    assert len(first) >= len(sources) - 5
    pyc = {e.path: e for e in first}["usr/lib/python3.11/json/__pycache__/__init__.cpython-311.pyc"]
    assert int.from_bytes(pyc.data[4:8], "little") == 0b01  # hash-based, unchecked
    code = marshal.loads(pyc.data[16:])
    assert code.co_filename == "/usr/lib/python3.11/json/__init__.py"
    assert str(staged.root).encode() not in pyc.data
    # A subset, compiled alone, gives the same bytes as in the full batch.
    subset = [e for e in sources if "/asyncio/" in e.path]
    alone = {e.path: e for e in compile_pycs(staged, subset)}
    assert alone and all(
        pyc_entry == {e.path: e for e in first}[p] for p, pyc_entry in alone.items()
    )


def test_broken_sources_are_skipped(staged: StagedPython) -> None:
    out = compile_pycs(
        staged,
        [
            Entry.file("app/good.py", b"x = 1\n"),
            Entry.file("app/py2.py", b"print 'hello'\n"),
            Entry.file("app/data.txt", b"x"),
            Entry.symlink("app/alias.py", "good.py"),
        ],
    )
    assert sorted(e.path for e in out) == [
        "app/__pycache__/alias.cpython-311.pyc",
        "app/__pycache__/good.cpython-311.pyc",
    ]


def test_image_python_uses_the_pycs(
    real_base: list[Entry], staged: StagedPython, tmp_path: Path
) -> None:
    pycs = compile_pycs(staged, real_base)
    root = tmp_path / "root"
    materialize([*real_base, *pycs], root)
    # Unchecked pycs are trusted: a broken source behind one is never read.
    source = root / "usr/lib/python3.11/json/__init__.py"
    source.chmod(0o644)
    source.write_text("raise SystemExit('source was read')\n")
    proc = StagedPython(root).run(
        ["-c", "import json, asyncio; print(json.dumps([1]))"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[1]"
    assert not any(root.rglob("*.pyc.*"))  # nothing written into the root
    shutil.rmtree(root)


# -- arm64: the same base from the arm64 packages, run under emulation -------------------------


@pytest.fixture(scope="module")
def arm64_base(online: str, cache_dir: Path) -> list[Entry]:
    lock = read_lock(PROJECT.debian_lock).of("arm64")
    return base_entries(lock, fetch(lock, online, Cache(cache_dir)))


def test_the_arm64_base_has_its_loader_and_no_lib64(
    arm64_base: list[Entry], real_base: list[Entry], tmp_path: Path
) -> None:
    """The per-platform facts of core/platforms: the loader where arm64's libc6 puts it, no
    ``lib64`` link (amd64's loader needs it), glibc's gconv dropped from arm64's libdir."""
    paths = {e.path: e for e in arm64_base}
    assert "lib64" not in paths and "lib64" in {e.path for e in real_base}
    assert not any(p.startswith("usr/lib/aarch64-linux-gnu/gconv/") for p in paths)
    assert any(p.startswith("usr/lib/aarch64-linux-gnu/") for p in paths)
    root = tmp_path / "root"
    materialize(arm64_base, root)
    assert (root / ARM64.loader).resolve().is_relative_to(root.resolve())
    require_platform(ARM64.name)
    staged = StagedPython(root, ARM64)
    assert staged.check().startswith("3.11.2 ")
    code = "import ssl, sqlite3, ctypes, bz2, lzma, platform; print(platform.machine())"
    proc = staged.run(["-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "aarch64", proc.stderr
