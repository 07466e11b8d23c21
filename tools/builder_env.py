"""Create the builder's locked Python environment (what `make` makes as .venv), for Bazel.

Run by the repository rule @lockstep_project (images/repo.bzl) with the host's
python3.11 when the environment named by LOCKSTEP_PYTHON does not exist:

    python3.11 tools/builder_env.py --project ROOT --lock requirements/build.lock.txt --base DIR

It makes DIR/<key>/ (key: sha256 of the lock, the interpreter's path and version) as
a venv of this interpreter, installs exactly the lock into it (`pip install
--require-hashes --no-deps`, PyPI only: no pip configuration file, find-links or
extra index of this machine takes part), then lockstep itself (`-e ROOT --no-deps
--no-build-isolation --no-index`, like `make`), and prints the environment's python
on stdout. An environment is complete once its marker is written; an incomplete one
(a killed run) is made again, and environments of other keys (an older lock) are
removed. lockstep itself is installed again when pyproject.toml changed (its entry
points). Standard library only: nothing else exists yet. Errors are one line,
`lockstep: error: …`, and exit 2 (bad input) or 3 (PyPI failed).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

MARKER = "lockstep-builder-env.json"
# The PIP_* variables that say how to reach PyPI, not what to install or from where.
KEEP_PIP = {"PIP_CERT", "PIP_CLIENT_CERT", "PIP_DEFAULT_TIMEOUT", "PIP_RETRIES", "PIP_PROXY"}
INDEX = "https://pypi.org/simple"


class Failed(Exception):
    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def pip_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in KEEP_PIP}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    env.pop("PYTHONPATH", None)
    return env


def pip(python: Path, *args: str, what: str, code: int) -> None:
    proc = subprocess.run(
        [str(python), "-m", "pip", *args], env=pip_env(), capture_output=True, text=True
    )
    if proc.returncode != 0:
        lines = [line.strip() for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR:")] or lines or ["no output"]
        raise Failed(f"{what} failed: {errors[-1]}", code)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def create(project: Path, lock: Path, base: Path) -> Path:
    if sys.version_info[:2] != (3, 11):
        raise Failed(
            f"the host's python {sys.executable} is Python "
            f"{sys.version_info[0]}.{sys.version_info[1]}, not 3.11, which {lock.name} is for; "
            "install python3.11 (or put it first on PATH), or run make PYTHON=python3.11 "
            "and build again"
        )
    if not lock.is_file():
        raise Failed(f"the builder's lock {lock} does not exist")
    interpreter = os.path.realpath(sys.executable)
    key = hashlib.sha256(f"{sha256(lock)}\n{interpreter}\n{sys.version}".encode()).hexdigest()[:16]
    env = base / key
    python = env / "bin" / "python"
    marker = env / MARKER
    base.mkdir(parents=True, exist_ok=True)
    for other in base.iterdir():
        if other.name != key and other.is_dir():
            shutil.rmtree(other)
    if not marker.is_file():
        shutil.rmtree(env, ignore_errors=True)
        print(f"lockstep: creating the builder's environment {env} from {lock}", file=sys.stderr)
        venv.EnvBuilder(with_pip=True, clear=True).create(env)
        pip(
            python,
            *("install", "--quiet", "--require-hashes", "--no-deps", "--index-url", INDEX),
            *("-r", str(lock)),
            what=f"installing {lock} from PyPI",
            code=3,
        )
    project_digest = sha256(project / "pyproject.toml")
    recorded = marker.read_text() if marker.is_file() else ""
    if project_digest not in recorded:
        pip(
            python,
            *("install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"),
            *("-e", str(project)),
            what=f"installing lockstep from {project}",
            code=2,
        )
        marker.write_text(
            f'{{"lock": "sha256:{sha256(lock)}", "pyproject": "sha256:{project_digest}", '
            f'"python": "{interpreter}"}}\n'
        )
    return python


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--lock", type=Path, required=True)
    parser.add_argument("--base", type=Path, required=True)
    args = parser.parse_args()
    try:
        python = create(args.project.resolve(), args.lock.resolve(), args.base)
    except Failed as exc:
        print(f"lockstep: error: {exc}", file=sys.stderr)
        return exc.code
    print(python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
