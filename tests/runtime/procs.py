"""Real lockstep/Dask processes on 127.0.0.1 for the runtime tests.

Every process is started here, logs to its own file, and is stopped by the
pid we started (terminate, then kill). Builds are told apart by manifest
files: ``write_manifest(dir, "a")`` and ``"b"`` differ only in their sources digest.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from lockstep.manifest import BuildManifest

HERE = Path(__file__).resolve().parent  # on the workers' PYTHONPATH: task modules live here
ALL_EXECUTORS = ("cold", "direct", "isolated_warm")


def make_manifest(
    tag: str, version: str = "0.1.0", executors: Sequence[str] = ALL_EXECUTORS
) -> BuildManifest:
    digest = "sha256:" + (tag.encode().hex() * 64)[:64]
    return BuildManifest(
        name="lockstep",
        version=version,
        inputs={
            "builder": "lockstep-build/1",
            "debian_lock": "sha256:" + "d" * 64,
            "python_lock": "sha256:" + "e" * 64,
            "sources": digest,
        },
        executors=tuple(executors),
        python="3.11.2",
    )


def write_manifest(directory: Path, tag: str, **kwargs: object) -> tuple[Path, BuildManifest]:
    manifest = make_manifest(tag, **kwargs)  # type: ignore[arg-type]
    path = directory / f"manifest-{tag}.json"
    path.write_bytes(manifest.to_json())
    return path, manifest


def base_env(
    manifest: Path | None, executor: str | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCKSTEP_", "DASK_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    if manifest is not None:
        env["LOCKSTEP_MANIFEST"] = str(manifest)
    if executor is not None:
        env["LOCKSTEP_EXECUTOR"] = executor
    env.update(extra or {})
    return env


class Proc:
    """One subprocess with its output in ``log``."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.args = list(args)
        self.log = log
        self._out = log.open("wb")
        self.popen = subprocess.Popen(
            self.args,
            env=dict(env),
            stdout=self._out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=log.parent,
        )
        self.pid = self.popen.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """The first match of ``pattern`` in the log; fails if the process exits or times out."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.text())
            if found:
                return found
            if self.popen.poll() is not None:
                raise AssertionError(
                    f"{self.args} exited {self.popen.returncode} before "
                    f"{pattern!r}:\n{self.text()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} after {timeout} s:\n{self.text()[-4000:]}")
            time.sleep(0.05)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.args} still running after {timeout} s:\n{self.text()[-4000:]}"
            ) from None

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._out.close()


def lockstep(*args: str) -> list[str]:
    return [sys.executable, "-m", "lockstep", *args]


def start_scheduler(
    workdir: Path, manifest: Path, name: str = "scheduler", *, env: Mapping[str, str] | None = None
) -> tuple[Proc, str]:
    """``lockstep scheduler`` on an ephemeral port; ``(proc, address)``."""
    sched_file = workdir / f"{name}.json"
    proc = Proc(
        lockstep(
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(sched_file),
        ),
        base_env(manifest, extra=env),
        workdir / f"{name}.log",
    )
    proc.wait_for(r"lockstep scheduler ready", timeout=60)
    deadline = time.monotonic() + 30
    while not sched_file.exists():
        assert time.monotonic() < deadline, proc.text()
        time.sleep(0.05)
    address = json.loads(sched_file.read_text())["address"]
    return proc, str(address)


def start_worker(
    workdir: Path,
    address: str,
    manifest: Path | None,
    executor: str | None,
    name: str,
    *,
    nanny: bool = False,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Proc:
    """``lockstep worker`` (not waited for)."""
    args = lockstep(
        "worker",
        address,
        "--host",
        "127.0.0.1",
        "--nthreads",
        "1",
        "--no-dashboard",
        "--name",
        name,
        "--nanny" if nanny else "--no-nanny",
        "--local-directory",
        str(workdir / f"{name}-space"),
        *extra_args,
    )
    return Proc(args, base_env(manifest, executor, env), workdir / f"{name}.log")
