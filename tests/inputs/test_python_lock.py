"""The pinned Python packages of the image: the committed lock and the pex install.

Tests that need the package index skip (locally) or fail (``LOCKSTEP_REQUIRE_ALL=1``)
when it is unreachable. The install tests share one session cache
(``$LOCKSTEP_CACHE_DIR`` if set), so only the determinism test pays for a cold run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import ssl
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lockstep.assembly import thirdparty
from lockstep.assembly.entries import Entry, make_layer
from lockstep.assembly.layout import SITE_DIR
from lockstep.core.digests import sha256_digest
from lockstep.core.errors import BadInput, CheckFailed, ServiceFailed
from lockstep.core.store import Cache
from lockstep.inputs import build_inputs
from lockstep.inputs.python import fetch as pyfetch
from lockstep.inputs.python import lock as pylock
from lockstep.inputs.python import pex, platform
from lockstep.project import load_project
from tests.fixtures.support import require

ROOT = Path(__file__).resolve().parents[2]
PROJECT = load_project(ROOT)
LOCK = PROJECT.python_lock
PLATFORM = ROOT / "images/complete-platform.json"
SITE = SITE_DIR + "/"


def _index_reachable() -> bool:
    try:
        ctx = (
            ssl.create_default_context(cafile="/etc/ssl/certs/ca-certificates.crt")
            if Path("/etc/ssl/certs/ca-certificates.crt").exists()
            else None
        )
        with urllib.request.urlopen(pex.INDEX_URL + "distributed/", timeout=10, context=ctx):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def index() -> None:
    require(_index_reachable(), f"the package index ({pex.INDEX_URL}) is unreachable")


@dataclass
class Installs:
    cache: Path  # the warm cache the other tests share
    cold: list[Entry]
    warm: list[Entry]


def install(lock: Path, cache: Path) -> list[Entry]:
    """Every wheel of ``lock`` installed as the builder does (fetched, verified, unpacked)."""
    wheels = pylock.read_lock(lock)
    data = pyfetch.fetch_wheels(wheels, Cache(cache))
    return [e for w in wheels for e in thirdparty.wheel_entries(w, data[w.sha256])]


@pytest.fixture(scope="session")
def shared_cache(index: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``$LOCKSTEP_CACHE_DIR`` if set, else one cache for the whole session."""
    env = os.environ.get("LOCKSTEP_CACHE_DIR")
    return Path(env) if env else tmp_path_factory.mktemp("lockstep-cache")


@pytest.fixture(scope="session")
def installs(shared_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installs]:
    """One cold install (fresh cache, umask 077), then one warm (shared cache, umask 022)."""
    fresh = (
        tmp_path_factory.mktemp("cold-cache")
        if os.environ.get("LOCKSTEP_CACHE_DIR")
        else shared_cache
    )
    assert not (fresh / "blobs").exists()
    old = os.umask(0o077)
    try:
        cold = install(LOCK, fresh)
    finally:
        os.umask(0o022)
    try:
        warm = install(LOCK, shared_cache)
    finally:
        os.umask(old)
    yield Installs(shared_cache, cold, warm)


# ---------------------------------------------------------------- the committed lock


def test_committed_lock_is_strict_pinned_https_and_hashed() -> None:
    data = json.loads(LOCK.read_bytes())
    assert data["style"] == "strict"
    assert data["pip_version"] == pex.PIP_VERSION
    assert data["pex_version"] == pex.PEX_VERSION
    assert data["requirements"] == list(PROJECT.requirements)
    assert data["requirements"] == ["distributed==2026.8.0", "zlib-ng==1.1.0"]
    assert data["allow_builds"] is False
    amd, arm = data["locked_resolves"]  # one run, one resolve per platform
    assert amd["platform_tag"][-1].endswith("_x86_64")
    assert arm["platform_tag"][-1].endswith("_aarch64")
    versions = {r["project_name"]: r["version"] for r in amd["locked_requirements"]}
    # The complete platform of the real arm64 python: the same versions as amd64's.
    assert versions == {r["project_name"]: r["version"] for r in arm["locked_requirements"]}
    assert versions["distributed"] == "2026.8.0"
    assert {"dask", "tornado", "msgpack", "cloudpickle"} <= set(versions)
    for req in [*amd["locked_requirements"], *arm["locked_requirements"]]:
        assert req["artifacts"], req["project_name"]
        for art in req["artifacts"]:
            assert art["algorithm"] == "sha256"
            assert len(art["hash"]) == 64 and int(art["hash"], 16) >= 0
            assert art["url"].startswith("https://"), art["url"]
            assert art["url"].endswith(".whl")
    raw = LOCK.read_text()
    for bad in ("file:", "/opt/", "/tmp/", "/root/", "/home/"):
        assert bad not in raw
    assert len(pylock.read_lock(LOCK)) == len(versions)
    assert len(pylock.read_lock(LOCK, "linux/arm64")) == len(versions)


@pytest.mark.parametrize("name, machine", [("linux/amd64", "x86_64"), ("linux/arm64", "aarch64")])
def test_committed_platform_is_the_image_python_without_host_facts(name: str, machine: str) -> None:
    path = PROJECT.complete_platform_of(name)
    data = json.loads(path.read_bytes())
    assert set(data) == {"marker_environment", "compatible_tags"}
    markers = data["marker_environment"]
    assert markers["python_full_version"] == "3.11.2"
    assert markers["implementation_name"] == "cpython"
    assert markers["platform_machine"] == machine
    assert not set(markers) & platform.HOST_MARKERS
    assert data["compatible_tags"][0] == f"cp311-cp311-manylinux_2_36_{machine}"
    assert not any(t.startswith("cp311-cp311-manylinux_2_37") for t in data["compatible_tags"])
    assert path.read_bytes() == platform.platform_json(data)


def test_a_lock_without_a_platform_s_resolve_says_to_relock(tmp_path: Path) -> None:
    data = json.loads(LOCK.read_bytes())
    data["locked_resolves"] = data["locked_resolves"][:1]
    path = tmp_path / "python.lock.json"
    path.write_text(json.dumps(data))
    with pytest.raises(BadInput, match=r"no resolve for linux/arm64.*lockstep lock python"):
        build_inputs.PythonInput.read_all(path, ("linux/amd64", "linux/arm64"))
    data["locked_resolves"] *= 2
    path.write_text(json.dumps(data))
    with pytest.raises(BadInput, match="two locked resolves for linux/amd64"):
        pylock.read_lock(path)


def test_lock_digest() -> None:
    python = build_inputs.PythonInput.read(LOCK)
    assert python.digest == sha256_digest(LOCK.read_bytes())
    assert python.wheels == tuple(pylock.read_lock(LOCK))
    assert sha256_digest(b"") == (
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    with pytest.raises(BadInput, match="lockstep lock python"):
        build_inputs.PythonInput.read(ROOT / "no-such.lock.json")


def test_normalize_platform_drops_path_and_kernel() -> None:
    inspected = {
        "path": "/somewhere/bin/python3.11",
        "compatible_tags": ["cp311-cp311-linux_x86_64", "py3-none-any", "cp311-cp311-linux_x86_64"],
        "marker_environment": {
            "sys_platform": "linux",
            "platform_release": "6.1.0",
            "platform_version": "#1 SMP",
            "os_name": "posix",
        },
    }
    out = platform.normalize_platform(inspected)
    assert out == {
        "marker_environment": {"os_name": "posix", "sys_platform": "linux"},
        "compatible_tags": ["cp311-cp311-linux_x86_64", "py3-none-any"],
    }
    with pytest.raises(ServiceFailed):
        platform.normalize_platform({"path": "x"})


# ---------------------------------------------------------------- bad locks


def _lock_with(tmp_path: Path, edit: str) -> Path:
    data = json.loads(LOCK.read_bytes())
    art = data["locked_resolves"][0]["locked_requirements"][0]["artifacts"][0]
    if edit == "file-url":
        art["url"] = "file:///opt/wheels/" + art["url"].rsplit("/", 1)[-1]
    elif edit == "no-hash":
        art["algorithm"] = "md5"
    elif edit == "sha256":
        art["hash"] = art["hash"][:-6] + (
            "000000" if not art["hash"].endswith("000000") else "111111"
        )
    path = tmp_path / "python.lock.json"
    path.write_text(json.dumps(data))
    return path


def test_missing_lock_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=r"no\.lock\.json.*lockstep lock python"):
        install(tmp_path / "no.lock.json", tmp_path / "cache")


def test_malformed_lock_is_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "python.lock.json"
    bad.write_text("{not json")
    with pytest.raises(BadInput, match=r"python\.lock\.json: not valid JSON.*lockstep lock"):
        install(bad, tmp_path / "cache")
    bad.write_text("{}")
    with pytest.raises(BadInput, match="not a pex lock"):
        install(bad, tmp_path / "cache")


@pytest.mark.parametrize(
    ("edit", "message"), [("file-url", "is not https"), ("no-hash", "has no sha256")]
)
def test_lock_with_local_url_or_without_sha256_is_refused(
    tmp_path: Path, edit: str, message: str
) -> None:
    with pytest.raises(BadInput, match=message):
        install(_lock_with(tmp_path, edit), tmp_path / "cache")


def test_missing_platform_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=r"complete-platform\.json: cannot read"):
        platform.read_platform(tmp_path / "complete-platform.json")


def test_pex_errors_become_one_line() -> None:
    log = Path("/cache/logs/x.log")
    err = pex.pex_error(
        "venv create",
        "1. toolz 1.2 from https://x/toolz.whl\n    Expected sha256 "
        "hash of aaaa when downloading toolz but hashed to bbbb.",
        log,
    )
    assert isinstance(err, CheckFailed) and "\n" not in str(err)
    assert "toolz" in str(err) and "aaaa" in str(err) and "lockstep lock python" in str(err)
    err = pex.pex_error("lock create", "ERROR: No matching distribution found for nope==9", log)
    assert isinstance(err, BadInput) and "nope==9" in str(err)
    err = pex.pex_error("lock create", "Max retries exceeded with url: /simple/x/", log)
    assert isinstance(err, ServiceFailed) and "network" in str(err)


def test_pex_env_ignores_host_pip_config(tmp_path: Path) -> None:
    env = pex.pex_env(
        tmp_path,
        {
            "PIP_FIND_LINKS": "/opt/wheels",
            "PEX_PYTHON": "x",
            "PIP_EXTRA_INDEX_URL": "file:///opt/pypi/simple",
            "HOME": "/h",
        },
    )
    assert env["PIP_CONFIG_FILE"] == os.devnull
    assert env["PEX_IGNORE_RCFILES"] == "true"
    assert env["PEX_ROOT"] == str(tmp_path / "pex")
    assert "PIP_FIND_LINKS" not in env and "PIP_EXTRA_INDEX_URL" not in env
    assert "PEX_PYTHON" not in env and env["HOME"] == "/h"


# ---------------------------------------------------------------- the install


def test_install_is_deterministic_cold_and_warm(installs: Installs) -> None:
    assert [e.path for e in installs.cold] == [e.path for e in installs.warm]
    assert make_layer(installs.cold).digest == make_layer(installs.warm).digest


def test_install_contents(installs: Installs) -> None:
    entries = installs.warm
    paths = {e.path for e in entries}
    assert all(p.startswith(SITE) for p in paths)
    rel = {p[len(SITE) :] for p in paths}
    tops = {r.split("/")[0] for r in rel}
    for name in ("distributed", "dask", "tornado", "msgpack"):
        assert name in tops
    assert "distributed-2026.8.0.dist-info" in tops
    assert "distributed-2026.8.0.dist-info/entry_points.txt" in rel
    assert "dask-2026.8.0.dist-info/entry_points.txt" in rel
    assert "bin" not in tops
    assert not any("__pycache__" in r or r.endswith(".pyc") for r in rel)
    assert not any(r.endswith(("/direct_url.json", "/INSTALLER")) for r in rel)
    for e in entries:
        assert e.kind == "file" and e.mode in (0o644, 0o755), (e.path, oct(e.mode))
        if e.path.endswith("/RECORD"):
            assert b"bin/" not in e.data
    sos = {r: e for e in entries if (r := e.path[len(SITE) :]).endswith(".so")}
    assert "msgpack/_cmsgpack.cpython-311-x86_64-linux-gnu.so" in sos
    assert any(r.startswith("tornado/") for r in sos)
    for r, e in sos.items():
        # cp311 extensions, or the stable ABI (tornado, psutil ship abi3 wheels).
        assert r.endswith((".cpython-311-x86_64-linux-gnu.so", ".abi3.so")), r
        assert e.data[:4] == b"\x7fELF" and e.data[18:20] == b"\x3e\x00", r  # x86-64
        assert e.mode == 0o755, r
    wheels = [w.filename for w in pylock.read_lock(LOCK)]
    binary = [w for w in wheels if not w.endswith("-none-any.whl")]
    assert binary and all("manylinux" in w and "x86_64" in w for w in binary)
    assert all("-cp311-" in w or "-abi3-" in w for w in binary)


def test_edited_lock_sha256_is_a_clear_error(installs: Installs, tmp_path: Path) -> None:
    edited = _lock_with(tmp_path, "sha256")
    with pytest.raises(CheckFailed) as info:
        install(edited, tmp_path / "fresh-cache")
    message = str(info.value)
    assert "\n" not in message
    assert "the lock says" in message and "lockstep lock python" in message
    assert "refusing it" in message
    # The bytes that did not match were kept nowhere (other wheels may have been fetched).
    original = json.loads(LOCK.read_bytes())["locked_resolves"][0]["locked_requirements"][0]
    real = Cache(tmp_path / "fresh-cache").blob_path(f"sha256:{original['artifacts'][0]['hash']}")
    assert not real.exists()


def test_a_tampered_cached_wheel_is_discarded_and_fetched_again(
    installs: Installs, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(installs.cache / "blobs", cache / "blobs")
    wheel = next(w for w in pylock.read_lock(LOCK) if w.project == "toolz")
    cached = Cache(cache).blob_path(f"sha256:{wheel.sha256}")
    cached.write_bytes(cached.read_bytes() + b"tampered")
    assert install(LOCK, cache) == installs.warm
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == wheel.sha256


def _toolz(installs: Installs) -> tuple[pylock.LockedWheel, bytes]:
    wheel = next(w for w in pylock.read_lock(LOCK) if w.project == "toolz")
    return wheel, Cache(installs.cache).get_blob(f"sha256:{wheel.sha256}") or b""


def _rewrite(data: bytes, change: dict[str, bytes | None], extra: dict[str, bytes]) -> bytes:
    """A copy of a wheel with members changed (None: removed) and added, RECORD untouched."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if info.filename in change:
                if change[info.filename] is not None:
                    dst.writestr(info, change[info.filename] or b"")
            else:
                dst.writestr(info, src.read(info))
        for name, content in extra.items():
            dst.writestr(name, content)
    return out.getvalue()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("content", r"member toolz/__init__\.py does not have the hash its RECORD lists"),
        ("unlisted", r"member toolz/extra\.py is not listed with a hash in its RECORD"),
        ("missing", r"its RECORD lists toolz/__init__\.py, which it does not contain"),
        ("escape", r"member '\.\./\.\./etc/evil' has an empty, '\.' or '\.\.' path part"),
    ],
)
def test_a_wheel_that_disagrees_with_its_record_is_refused(
    installs: Installs, case: str, message: str
) -> None:
    """The bytes matched the lock, but what is inside is checked too (a lock of a bad wheel)."""
    wheel, data = _toolz(installs)
    if case == "content":
        bad = _rewrite(data, {"toolz/__init__.py": b"TAMPERED = True\n"}, {})
    elif case == "unlisted":
        bad = _rewrite(data, {}, {"toolz/extra.py": b"x = 1\n"})
    elif case == "missing":
        bad = _rewrite(data, {"toolz/__init__.py": None}, {})
    else:
        bad = _rewrite(data, {}, {"../../etc/evil": b"x"})
    with pytest.raises(CheckFailed, match=message):
        thirdparty.wheel_entries(wheel, bad)


def test_lock_create_records_only_https_and_pins(shared_cache: Path, tmp_path: Path) -> None:
    """A fresh lock on this machine (whose pip config adds local find-links and file://
    indexes) records only https URLs, with sha256, for the image's platform."""
    written = pylock.lock(PROJECT, shared_cache, into=tmp_path)
    out = tmp_path / "python.lock.json"
    assert written[0] == out
    raw = out.read_text()
    assert "file:" not in raw and "/opt/" not in raw and str(tmp_path) not in raw
    wheels = pylock.read_lock(out)
    assert any(w.project == "distributed" and w.version == "2026.8.0" for w in wheels)
    assert all(w.url.startswith("https://") for w in wheels)
    data = json.loads(raw)
    assert [r["platform_tag"] for r in data["locked_resolves"]] == [
        ["cp311", "cp311", "manylinux_2_36_x86_64"],
        ["cp311", "cp311", "manylinux_2_36_aarch64"],
    ]
    # the runner's own lock, made with the shared pins as constraints, for every platform:
    # pyarrow alone on each
    assert written == [out, tmp_path / "python-runner.lock.json"]
    for name in PROJECT.platforms:
        own = pylock.read_lock(written[1], name)
        shared = pylock.read_lock(out, name)
        assert [(w.project, w.version) for w in pylock.role_only(shared, own, "x")] == [
            ("pyarrow", "26.0.1")
        ]


def test_a_roles_lock_adds_its_own_wheels_and_must_agree_with_the_shared_lock(
    tmp_path: Path,
) -> None:
    """The committed runner lock adds pyarrow only, on every platform (another wheel on
    each); a role lock holding a shared project as another wheel (made against another
    shared lock) is refused, naming the file."""
    shared_inputs = build_inputs.PythonInput.read_all(PROJECT.python_lock, PROJECT.platforms)
    by_platform = build_inputs.read_roles(PROJECT, shared_inputs)
    assert list(by_platform) == list(PROJECT.platforms)
    for inputs in by_platform.values():
        assert [w.project for w in inputs["runner"].wheels] == ["pyarrow"]
        assert set(inputs) == {"runner"}
    pyarrow = {p: inputs["runner"].wheels[0].sha256 for p, inputs in by_platform.items()}
    assert len(set(pyarrow.values())) == len(pyarrow)  # a binary wheel: one per platform
    data = json.loads((ROOT / "images/python-runner.lock.json").read_text())
    shared = json.loads((ROOT / "images/python.lock.json").read_text())
    tornado = next(
        r for r in shared["locked_resolves"][0]["locked_requirements"]
        if r["project_name"] == "tornado"
    )  # fmt: skip
    other = {**tornado, "version": "6.0", "artifacts": [
        {**tornado["artifacts"][0], "hash": "0" * 64}
    ]}  # fmt: skip
    (amd64,) = [r for r in data["locked_resolves"] if r["platform_tag"][-1].endswith("_x86_64")]
    amd64["locked_requirements"].append(other)
    bad = tmp_path / "python-runner.lock.json"
    bad.write_text(json.dumps(data))
    shared_wheels = pylock.read_lock(PROJECT.python_lock)
    with pytest.raises(
        BadInput, match=r"python-runner\.lock\.json: tornado 6\.0 is not the shared"
    ):
        pylock.role_only(shared_wheels, pylock.read_lock(bad), str(bad))


def test_missing_pex_is_bad_input(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python3"))
    monkeypatch.setenv("PATH", str(tmp_path))
    pex.pex3_argv.cache_clear()
    try:
        with pytest.raises(BadInput, match=r"pex3 is not installed.*lockstep\[build\]"):
            pylock.lock(PROJECT, tmp_path / "cache", into=tmp_path)
    finally:
        pex.pex3_argv.cache_clear()


# ---------------------------------------------------------------- the CA bundle


def test_a_certificate_failure_says_so_and_names_the_setting() -> None:
    out = (
        "WARNING: Retrying ... SSLError(SSLCertVerificationError(1, '[SSL: "
        "CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer "
        "certificate'))\nERROR: No matching distribution found for six==1.16.0"
    )
    err = pex.pex_error("lock create", out, Path("/cache/logs/x.log"))
    assert isinstance(err, ServiceFailed) and "\n" not in str(err)
    assert "TLS certificate is not trusted" in str(err) and "SSL_CERT_FILE" in str(err)


def _lock_six(cache: Path, out: Path) -> None:
    pex.run_pex(
        [
            "lock",
            "create",
            *pex.common_args(cache),
            "--style",
            "strict",
            "--complete-platform",
            str(PLATFORM),
            "--output",
            str(out),
            "six==1.16.0",
        ],
        cache,
        "lock create",
    )


def test_pex_trusts_the_same_ca_bundle_as_the_rest_of_the_build(
    index: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only SSL_CERT_FILE names a bundle (pip's own variables are gone): pex gets it, and a
    bundle without the index's CA is a one-line certificate error naming the setting. On
    this kind of machine PyPI is re-signed by a local CA that only the system bundle has."""
    system = ssl.get_default_verify_paths().openssl_cafile
    for name in ("REQUESTS_CA_BUNDLE", "PIP_CERT", "CURL_CA_BUNDLE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", system)
    _lock_six(tmp_path / "cache-a", tmp_path / "six.lock.json")
    assert [w.project for w in pylock.read_lock(tmp_path / "six.lock.json")] == ["six"]

    stranger = tmp_path / "stranger-ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=not the index's CA", "-keyout", str(tmp_path / "k.pem"), "-out", str(stranger)],
        check=True, capture_output=True,
    )  # fmt: skip
    monkeypatch.setenv("SSL_CERT_FILE", str(stranger))
    with pytest.raises(ServiceFailed, match="SSL_CERT_FILE") as info:
        _lock_six(tmp_path / "cache-b", tmp_path / "none.lock.json")
    assert str(stranger) in str(info.value)
    assert not (tmp_path / "none.lock.json").exists()


def test_lock_python_reads_the_committed_platform_and_builds_no_base(tmp_path: Path) -> None:
    """Before, ``lock python`` built the base layer (fetching every .deb) to ask the image's
    python for the platform file; it now takes the committed file. An empty cache and an
    unreachable mirror: the platform file's problem is the first thing said (exit 2)."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "images", tmp_path / "images")
    (tmp_path / "images/complete-platform.json").write_text("{}")
    proc = subprocess.run(
        [sys.executable, "-m", "lockstep", "lock", "python"],
        cwd=tmp_path,
        env={
            **os.environ,
            "LOCKSTEP_CACHE_DIR": str(tmp_path / "cache"),
            "LOCKSTEP_DEBIAN_MIRROR": "http://127.0.0.1:9/debian",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "complete-platform.json" in proc.stderr and "lockstep lock platform" in proc.stderr
    assert not (tmp_path / "cache/blobs").exists()  # not a .deb fetched, no layer made


def test_the_shared_pins_constrain_each_platform_to_its_own_version() -> None:
    """The role lock's constraints: one pin for a project every platform locks alike, a
    pin per platform (by machine) where they differ or one platform lacks it."""

    def wheel(project: str, version: str) -> pylock.LockedWheel:
        return pylock.LockedWheel(project, version, f"https://x/{project}.whl", "0" * 64)

    locks = {
        "linux/amd64": [wheel("numpy", "2.3.0"), wheel("toolz", "1.2.0"), wheel("x86only", "1")],
        "linux/arm64": [wheel("numpy", "2.2.6"), wheel("toolz", "1.2.0")],
    }
    assert pylock.pins(locks).splitlines() == [
        'numpy==2.3.0; platform_machine == "x86_64"',
        'numpy==2.2.6; platform_machine == "aarch64"',
        "toolz==1.2.0",
        'x86only==1; platform_machine == "x86_64"',
    ]
