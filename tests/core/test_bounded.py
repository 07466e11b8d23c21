"""Issue #26 item 4: files from a user are read only if regular, and only up to a bound.

A FIFO as ``LOCKSTEP_MANIFEST`` hung the worker and the scheduler; ``/dev/zero`` grew
them to a MemoryError. Each must be one line and exit 2, at once.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lockstep.bundles.env import EnvRefused, read_bundle_lock
from lockstep.bundles.lockfile import LOCK_FILE
from lockstep.core.bounded import read_regular
from tests.fixtures.procs import ROOT, base_env, lockstep


def test_a_regular_file_within_the_bound_is_read(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 10)
    assert read_regular(tmp_path / "f", 10) == b"x" * 10


def test_a_larger_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 11)
    with pytest.raises(OSError, match="larger than 10 bytes"):
        read_regular(tmp_path / "f", 10)


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "directory"])
def test_a_special_file_is_refused(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "special"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        path = Path(kind)
    with pytest.raises(OSError, match="not a regular file"):
        read_regular(path, 1 << 20)


def special(tmp_path: Path, kind: str) -> Path:
    if kind == "fifo":
        os.mkfifo(tmp_path / "manifest.json")
        return tmp_path / "manifest.json"
    return Path("/dev/zero")


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
@pytest.mark.parametrize(
    "command",
    [
        ("scheduler", "--host", "127.0.0.1", "--no-dashboard"),
        ("worker", "tcp://127.0.0.1:1", "--host", "127.0.0.1"),
        ("runner", "tcp://127.0.0.1:1"),
    ],
)
def test_a_special_manifest_is_one_line_and_exit_2(
    tmp_path: Path, kind: str, command: tuple[str, ...]
) -> None:
    env = base_env(special(tmp_path, kind), "cold")
    done = subprocess.run(lockstep(*command), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr[-2000:]
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("lockstep: error:")]
    assert "not a regular file" in line and "manifest" in line, line


def test_a_special_job_spec_is_one_line_and_exit_2(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "job.toml")
    done = subprocess.run(
        lockstep("preflight", str(tmp_path / "job.toml")),
        env=base_env(None),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "job.toml: cannot read the job spec (not a regular file" in done.stderr


def _special_at(path: Path, kind: str) -> None:
    """A FIFO at ``path``, or a link there to ``/dev/zero``."""
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
@pytest.mark.parametrize("which", ["LOCKSTEP_TLS_CA_FILE", "LOCKSTEP_TLS_CERT", "LOCKSTEP_TLS_KEY"])
def test_a_special_tls_file_is_one_line_and_exit_2(tmp_path: Path, kind: str, which: str) -> None:
    tls = {}
    for name in ("LOCKSTEP_TLS_CA_FILE", "LOCKSTEP_TLS_CERT", "LOCKSTEP_TLS_KEY"):
        path = tmp_path / f"{name.lower()}.pem"
        if name == which:
            _special_at(path, kind)
        else:
            path.write_text("-----BEGIN CERTIFICATE-----\n")
        tls[name] = str(path)
    done = subprocess.run(
        lockstep("doctor", "--scheduler", "tls://127.0.0.1:1"),
        env=base_env(None, extra=tls),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("lockstep: error:")]
    assert f"{which}={tls[which]}: cannot read it (not a regular file" in line, line


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
@pytest.mark.parametrize("name", ["requirements.txt", "pyproject.toml"])
def test_a_special_requirements_file_is_one_line_and_exit_2(
    tmp_path: Path, kind: str, name: str
) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    _special_at(bundle / name, kind)
    done = subprocess.run(
        lockstep("bundle", "lock", str(bundle), "--project", str(ROOT)),
        env=base_env(None, extra={"LOCKSTEP_CACHE_DIR": str(tmp_path / "cache")}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("lockstep: error:")]
    assert f"{bundle / name}: cannot read it (not a regular file" in line, line


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_a_stored_bundle_s_special_lock_is_refused(tmp_path: Path, kind: str) -> None:
    _special_at(tmp_path / LOCK_FILE, kind)
    with pytest.raises(EnvRefused, match=f"{LOCK_FILE} of bundle .*: not a regular file"):
        read_bundle_lock(tmp_path)
