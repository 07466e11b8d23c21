"""The Debian inputs: versions, resolver, lock file, verified fetch, the real mirror's closure.

How the assembly unpacks them into the base layer is tests/assembly/test_debian_base.py.
Tests using ``indexes`` talk to the Debian mirror
(``$LOCKSTEP_DEBIAN_MIRROR`` or the project's); they skip when it is
unreachable, and fail instead under ``LOCKSTEP_REQUIRE_ALL=1``.
"""

from __future__ import annotations

import hashlib
import json
import lzma
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lockstep.core.errors import BadInput, CheckFailed, ServiceFailed
from lockstep.core.store import Cache
from lockstep.inputs.debian.fetch import fetch
from lockstep.inputs.debian.lock import (
    SUITES,
    DebianLock,
    DebianLocks,
    DebPackage,
    Suite,
    read_lock,
    write_lock,
)
from lockstep.inputs.debian.mirror import security_mirror
from lockstep.inputs.debian.resolve import fetch_index, resolve, resolve_from_indexes
from lockstep.inputs.debian.versions import compare_versions
from lockstep.project import load_project
from tests.fixtures.debian import LoopbackMirror, M, make_deb, mirror_reachable
from tests.fixtures.support import require

ROOT = Path(__file__).resolve().parents[2]
PROJECT = load_project(ROOT)
MIRROR = PROJECT.mirror()

# docs/design.md §6: the closure of python3.11, first alternatives, no dpkg.
PYTHON_CLOSURE = sorted(
    str.split("""
gcc-12-base libbz2-1.0 libc6 libcom-err2 libcrypt1 libdb5.3 libexpat1 libffi8 libgcc-s1
libgssapi-krb5-2 libk5crypto3 libkeyutils1 libkrb5-3 libkrb5support0 liblzma5 libncursesw6
libnsl2 libpython3.11-minimal libpython3.11-stdlib libreadline8 libsqlite3-0 libssl3 libtinfo6
libtirpc-common libtirpc3 libuuid1 media-types python3.11 python3.11-minimal readline-common
zlib1g""")
)


# ------------------------------------------------------------------ versions


@pytest.mark.parametrize(
    "a, b, want",
    [
        ("1.0", "1.0", 0),
        ("1.0", "1.0-0", 0),
        ("1.0-1", "1.0-2", -1),
        ("1.0~rc1", "1.0", -1),
        ("1.0~rc1", "1.0~rc1", 0),
        ("1.0~~", "1.0~", -1),
        ("1.0~", "1.0", -1),
        ("1.0", "1.0a", -1),
        ("1.0a", "1.0+", -1),  # letters sort before other characters
        ("1.0+b1", "1.0.1", -1),  # '+' < '.'? no: both non-letters, ord('+') < ord('.')
        ("1:1.0", "2.0", 1),
        ("0:1.0", "1.0", 0),
        ("1.10", "1.9", 1),
        ("1.002", "1.2", 0),
        ("2.36-9+deb12u14", "2.36-9+deb12u9", 1),
        ("3.11.2-6+deb12u9", "3.11.2-6+deb12u8", 1),
        ("20250419~deb12u2", "20230311+deb12u1", 1),
        ("3.0.22-1~deb12u2", "3.0.22-1", -1),
        ("1:1.2.13.dfsg-1", "1.2.13.dfsg-2", 1),
        ("1.2-3-4", "1.2-3-5", -1),  # revision is after the last hyphen
        ("a", "b", -1),
        ("", "0", 0),
    ],
)
def test_compare_versions(a: str, b: str, want: int) -> None:
    assert compare_versions(a, b) == want
    assert compare_versions(b, a) == -want


# ------------------------------------------------------------------ resolver (offline)


def stanza(name: str, version: str = "1.0", arch: str = "amd64", **fields: str) -> str:
    body = {
        "Package": name,
        "Version": version,
        "Architecture": arch,
        "Filename": f"pool/main/{name[0]}/{name}/{name}_{version}_{arch}.deb",
        "Size": "100",
        "SHA256": hashlib.sha256(name.encode()).hexdigest(),
        "Description": "demo\n continuation line: not a field",
    }
    body.update({k.replace("_", "-"): v for k, v in fields.items()})
    return "".join(f"{k}: {v}\n" for k, v in body.items())


def index(*stanzas: str) -> str:
    return "\n".join(stanzas)


def test_resolver_closure_rules() -> None:
    main = index(
        stanza("app", Depends="liba (>= 2), libb | libc, virt, multi:any", Pre_Depends="libc6"),
        stanza("liba", "2.0"),
        stanza("libb", Depends="dpkg (>= 1.0)"),
        stanza("libc", "9.0"),  # second alternative: never taken
        stanza("libc6", "2.36-9+deb12u1", Depends="libgcc-s1"),
        stanza("libgcc-s1"),
        stanza("prov-z", Provides="virt (= 1)"),
        stanza("prov-a", Provides="virt"),
        stanza("multi", "1.0", "all"),
        stanza("dpkg"),
        stanza("armonly", arch="arm64"),
    )
    security = index(stanza("libc6", "2.36-9+deb12u14", Depends="libgcc-s1"), stanza("liba", "1.9"))
    lock = resolve_from_indexes({SUITES[0]: main, SUITES[1]: "", SUITES[2]: security}, ["app"])
    assert lock.names() == ["app", "liba", "libb", "libc6", "libgcc-s1", "multi", "prov-a"]
    assert lock.get("libc6").version == "2.36-9+deb12u14"
    assert lock.get("libc6").archive == "debian-security"
    assert lock.get("liba").version == "2.0" and lock.get("liba").suite == "bookworm"
    assert lock.get("multi").arch == "all"
    assert lock.roots == ("app",)
    with pytest.raises(BadInput, match="'armonly'"):
        resolve_from_indexes({SUITES[0]: main}, ["armonly"])


def test_resolver_prefers_a_provider_already_chosen() -> None:
    main = index(
        stanza("app", Depends="virt"),
        stanza("prov-a", Provides="virt"),
        stanza("prov-z", Provides="virt"),
    )
    lock = resolve_from_indexes({SUITES[0]: main}, ["prov-z", "app"])
    assert lock.names() == ["app", "prov-z"]


def test_security_mirror_url() -> None:
    assert (
        security_mirror("http://deb.debian.org/debian") == "http://deb.debian.org/debian-security"
    )
    assert (
        security_mirror("http://127.0.0.1:8080/debian/") == "http://127.0.0.1:8080/debian-security"
    )
    assert (
        security_mirror("http://example.invalid/archive/debian/20240101T000000Z")
        == "http://example.invalid/archive/debian-security/20240101T000000Z"
    )


def serve_suites(server: LoopbackMirror, texts: dict[Suite, dict[str, str]]) -> None:
    """Each suite's ``Packages.xz`` per architecture, and a ``Release`` listing them."""
    for suite, by_arch in texts.items():
        release = "Origin: Debian\nSHA256:\n"
        for arch, text in by_arch.items():
            data = lzma.compress(text.encode())
            path = f"main/binary-{arch}/Packages.xz"
            server.put(f"{suite.archive}/dists/{suite.suite}/{path}", data)
            release += f" {hashlib.sha256(data).hexdigest()} {len(data)} {path}\n"
        server.put(f"{suite.archive}/dists/{suite.suite}/Release", release.encode())


def test_resolve_reads_the_three_indexes_from_the_mirror(tmp_path: Path) -> None:
    server = LoopbackMirror(tmp_path)
    try:
        serve_suites(
            server,
            {
                SUITES[0]: {"amd64": index(stanza("app", Depends="libx"), stanza("libx", "1.0"))},
                SUITES[1]: {"amd64": index(stanza("libx", "1.0+b1"))},
                SUITES[2]: {"amd64": index(stanza("libx", "1.0~sec1"))},
            },
        )
        lock = resolve(server.mirror, ["app"]).of("amd64")
        assert lock.get("libx").version == "1.0+b1"
        assert lock.get("libx").suite == "bookworm-updates"
        (
            tmp_path / "debian-security/dists/bookworm-security/main/binary-amd64/Packages.xz"
        ).unlink()
        with pytest.raises(ServiceFailed, match="debian-security/dists/bookworm-security"):
            resolve(server.mirror, ["app"])
    finally:
        server.stop()


def test_every_architecture_is_resolved_from_one_snapshot(tmp_path: Path) -> None:
    server = LoopbackMirror(tmp_path)
    try:
        texts = {
            suite: {
                arch: index(stanza("app", arch=arch, Depends="libx"), stanza("libx", arch=arch))
                for arch in ("amd64", "arm64")
            }
            for suite in SUITES
        }
        serve_suites(server, texts)
        locks = resolve(server.mirror, ["app"], ("amd64", "arm64"))
        assert locks.arches == ("amd64", "arm64")
        assert locks.of("arm64").get("libx").filename.endswith("_arm64.deb")
        assert [k for k, _ in locks.snapshot] == [
            "debian-security/bookworm-security",
            "debian/bookworm",
            "debian/bookworm-updates",
        ]
        # The mirror moves between reading a Release and an index: the run fails, loudly.
        moved = lzma.compress(index(stanza("app", "2.0", arch="arm64")).encode())
        server.put("debian/dists/bookworm/main/binary-arm64/Packages.xz", moved)
        with pytest.raises(ServiceFailed, match="is not the one its Release lists"):
            resolve(server.mirror, ["app"], ("amd64", "arm64"))
    finally:
        server.stop()


def test_unreachable_mirror_is_a_service_failure_naming_the_url() -> None:
    with pytest.raises(ServiceFailed) as err:
        resolve("http://127.0.0.1:9/debian", ["python3.11"])
    url = "http://127.0.0.1:9/debian/dists/bookworm/Release"
    assert url in str(err.value)
    assert err.value.exit_code == 3


# ------------------------------------------------------------------ lock file


def sample_lock() -> DebianLock:
    pkgs = tuple(
        DebPackage(
            n,
            "1.0-1",
            "amd64",
            "debian",
            "bookworm",
            f"pool/main/{n[0]}/{n}/{n}_1.0-1_amd64.deb",
            1234,
            hashlib.sha256(n.encode()).hexdigest(),
        )
        for n in ("zlib1g", "libc6")
    )
    return DebianLock(packages=tuple(sorted(pkgs, key=lambda p: p.name)), roots=("libc6",))


def test_lock_round_trip_is_stable(tmp_path: Path) -> None:
    lock = DebianLocks((sample_lock(),), (("debian/bookworm", "sha256:" + "a" * 64),))
    path = tmp_path / "images" / "debian.lock.json"
    write_lock(path, lock)
    first = path.read_bytes()
    assert read_lock(path) == lock
    write_lock(path, read_lock(path))
    assert path.read_bytes() == first
    data = json.loads(first)
    assert data["schema"] == "lockstep.debian-lock/v2"
    assert [p["name"] for p in data["packages"]["amd64"]] == ["libc6", "zlib1g"]
    assert data["suites"][2] == {"archive": "debian-security", "suite": "bookworm-security"}
    assert data["snapshot"] == {"debian/bookworm": "sha256:" + "a" * 64}
    assert lock.of("amd64").digest.startswith("sha256:")
    with pytest.raises(BadInput, match=r"no packages for arm64 .*lockstep lock debian"):
        lock.of("arm64")


@pytest.mark.parametrize(
    "content, fragment",
    [
        (None, "cannot read"),
        (b"{not json", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b'{"schema": "other"}', "schema"),
    ],
)
def test_bad_lock_file_is_bad_input(tmp_path: Path, content: bytes | None, fragment: str) -> None:
    path = tmp_path / "debian.lock.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(BadInput) as err:
        read_lock(path)
    msg = str(err.value)
    assert str(path) in msg and fragment in msg and "lockstep lock debian" in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    "field, value",
    [
        ("sha256", "abc"),
        ("size", -1),
        ("size", "12"),
        ("filename", "../../etc/passwd"),
        ("name", ""),
    ],
)
def test_lock_with_a_bad_package_field_is_bad_input(
    tmp_path: Path, field: str, value: object
) -> None:
    data = DebianLocks((sample_lock(),)).to_dict()
    data["packages"]["amd64"][0][field] = value
    path = tmp_path / "debian.lock.json"
    path.write_text(json.dumps(data))
    with pytest.raises(BadInput, match="lockstep lock debian"):
        read_lock(path)


def test_committed_lock_matches_the_project() -> None:
    locks = read_lock(PROJECT.debian_lock)
    assert locks.arches == ("amd64", "arm64")  # every platform of the project
    for lock in locks.locks:
        assert lock.roots == tuple(sorted(PROJECT.debian_packages))
        assert set(PYTHON_CLOSURE) <= set(lock.names())
        assert "dpkg" not in lock.names() and "debconf" not in lock.names()
    # One snapshot: the same names and versions on both architectures.
    amd, arm = ({p.name: p.version for p in locks.of(a).packages} for a in ("amd64", "arm64"))
    assert amd == arm and len(locks.snapshot) == 3
    assert PROJECT.debian_lock.read_bytes() == locks.to_json()  # canonical on disk


# ------------------------------------------------------------------ fetch (loopback mirror)


@dataclass
class Served:
    server: LoopbackMirror
    lock: DebianLock
    debs: dict[str, bytes]
    cache: Cache


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = LoopbackMirror(tmp_path / "www")
    debs: dict[str, bytes] = {}
    pkgs = []
    for name, archive, suite in [
        ("alpha", "debian", "bookworm"),
        ("beta", "debian-security", "bookworm-security"),
    ]:
        data = make_deb([M(f"./usr/share/{name}/file", data=name.encode() * 100)])
        filename = f"pool/main/{name[0]}/{name}/{name}_1.0_all.deb"
        server.put(f"{archive}/{filename}", data)
        debs[name] = data
        pkgs.append(
            DebPackage(
                name,
                "1:1.0",
                "all",
                archive,
                suite,
                filename,
                len(data),
                hashlib.sha256(data).hexdigest(),
            )
        )
    try:
        yield Served(
            server,
            DebianLock(tuple(pkgs), roots=("alpha", "beta")),
            debs,
            Cache(tmp_path / "cache"),
        )
    finally:
        server.stop()


def test_fetch_downloads_verifies_and_caches(served: Served) -> None:
    lines: list[str] = []
    got = fetch(served.lock, served.server.mirror, served.cache, progress=lines.append)
    assert got == served.debs
    assert len(lines) == 2 and all(line.startswith("fetched ") for line in lines)
    served.server.stop()  # the second fetch must not need the mirror
    lines.clear()
    assert fetch(served.lock, served.server.mirror, served.cache, lines.append) == served.debs
    assert lines == []


def test_tampered_cache_entry_is_refused_and_fetched_again(served: Served) -> None:
    fetch(served.lock, served.server.mirror, served.cache)
    pkg = served.lock.get("alpha")
    path = served.cache.blob_path(pkg.digest)
    tampered = bytearray(path.read_bytes())
    tampered[-10] ^= 0xFF
    path.write_bytes(bytes(tampered))
    lines: list[str] = []
    got = fetch(served.lock, served.server.mirror, served.cache, progress=lines.append)
    assert got["alpha"] == served.debs["alpha"]
    assert any("alpha" in line and "corrupt" in line for line in lines), lines
    assert path.read_bytes() == served.debs["alpha"]  # healed


def test_tampered_cache_entry_with_the_mirror_down_is_an_error(served: Served) -> None:
    fetch(served.lock, served.server.mirror, served.cache)
    path = served.cache.blob_path(served.lock.get("beta").digest)
    path.write_bytes(b"!<arch>\nnot the package")
    served.server.stop()
    with pytest.raises(ServiceFailed) as err:
        fetch(served.lock, served.server.mirror, served.cache)
    msg = str(err.value)
    assert "beta" in msg and "corrupt" in msg and "\n" not in msg
    assert not path.exists()


@pytest.mark.parametrize("bad", ["size", "sha256"])
def test_mirror_serving_other_bytes_is_refused_and_not_cached(served: Served, bad: str) -> None:
    pkg = served.lock.get("beta")
    data = served.debs["beta"]
    other = data + b"\0" if bad == "size" else data[:-1] + bytes([data[-1] ^ 1])
    served.server.put(f"{pkg.archive}/{pkg.filename}", other)
    with pytest.raises(CheckFailed) as err:
        fetch(served.lock, served.server.mirror, served.cache)
    msg = str(err.value)
    assert "beta" in msg and "expected" in msg
    if bad == "size":
        assert f"expected {pkg.size}" in msg
    else:
        assert pkg.sha256 in msg and hashlib.sha256(other).hexdigest() in msg
    assert served.cache.get_blob(pkg.digest) is None
    assert served.cache.get_blob("sha256:" + hashlib.sha256(other).hexdigest()) is None


def test_missing_deb_says_to_relock(served: Served) -> None:
    pkg = served.lock.get("alpha")
    (served.server.root / pkg.archive / pkg.filename).unlink()
    with pytest.raises(ServiceFailed) as err:
        fetch(served.lock, served.server.mirror, served.cache)
    msg = str(err.value)
    assert "alpha" in msg and "404" in msg and "lockstep lock debian" in msg
    assert "LOCKSTEP_DEBIAN_MIRROR" in msg and "snapshot" in msg
    assert err.value.exit_code == 3


# ------------------------------------------------------------------ the real mirror


@pytest.fixture(scope="module")
def online() -> str:
    require(mirror_reachable(MIRROR), f"the Debian mirror {MIRROR} is not reachable")
    return MIRROR


@pytest.fixture(scope="module")
def indexes(online: str) -> dict[Suite, str]:
    return {s: fetch_index(online, s, "amd64") for s in SUITES}


def test_python311_closure_is_the_31_packages(indexes: dict[Suite, str]) -> None:
    lock = resolve_from_indexes(indexes, ["python3.11"], exclude=("dpkg",))
    assert lock.names() == PYTHON_CLOSURE
    assert len(lock.packages) == 31
    assert resolve_from_indexes(indexes, ["python3.11"]).names() == PYTHON_CLOSURE
    everything = resolve_from_indexes(indexes, list(PROJECT.debian_packages))
    assert set(everything.names()) - set(PYTHON_CLOSURE) == {
        "ca-certificates",
        "libc-bin",
        "libstdc++6",  # the runner's pyarrow links it
        "openssl",
        "tzdata",
    }
