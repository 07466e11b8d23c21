"""Running the pinned ``pex3`` in an environment no host configuration reaches.

``PEX_ROOT`` lives under the lockstep cache directory. A failed run keeps its
whole output in ``CACHE/logs/pex-WHAT.log`` and becomes one line that says
what to do.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from lockstep.core import reap
from lockstep.core.atomic import write_bytes
from lockstep.core.errors import BadInput, CheckFailed, LockstepError, ServiceFailed
from lockstep.core.progress import Progress, quiet
from lockstep.core.settings import SSL_CERT_FILE

PEX_VERSION = "2.105.2"
PIP_VERSION = "26.2.1"  # pex's default ("latest") pip is not served here
INDEX_URL = "https://pypi.org/simple/"
RELOCK = "lockstep lock python"
LOCK_HINT = f"run `{RELOCK}`"


@functools.cache
def pex3_argv() -> list[str]:
    """How to run the pinned ``pex3``: next to this interpreter, else on ``$PATH``.

    ``BadInput`` if there is none, or if it is not pex ``PEX_VERSION``.
    """
    fix = f"install the build extras (pip install 'lockstep[build]', which pins pex=={PEX_VERSION})"
    here = Path(sys.executable).parent / "pex3"
    if here.is_file() and os.access(here, os.X_OK):
        found = str(here)
        import importlib.metadata  # here only: a no-op build reads the locks, never runs pex

        try:
            version = importlib.metadata.version("pex")
        except importlib.metadata.PackageNotFoundError:
            version = ""
    else:
        which = shutil.which("pex3")
        if not which:
            raise BadInput(f"pex3 is not installed; {fix}")
        found = which
        proc = subprocess.run(
            [found, "--version"],
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        version = proc.stdout.strip()
    if version != PEX_VERSION:
        raise BadInput(
            f"{found} is pex {version or '(unknown version)'}, lockstep needs {PEX_VERSION}; {fix}"
        )
    return [found]


def pex_root(cache_dir: Path) -> Path:
    """pex's own cache (downloads, installed wheels, pip) inside the lockstep cache."""
    return cache_dir / "pex"


def pex_env(cache_dir: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment pex runs in: no host pip or pex configuration can reach it.

    pex runs pip with ``--isolated`` (no ``PIP_*`` variables, no user pip.conf);
    pip still reads machine-wide config files in that mode, so
    ``PIP_CONFIG_FILE=/dev/null`` turns every config file off, and pexrc files are
    ignored. ``PIP_*``/``PEX_*`` variables of the caller are dropped.
    """
    env = {
        k: v
        for k, v in (os.environ if base is None else base).items()
        if not k.startswith(("PIP_", "PEX_", "_PEX_"))
    }
    env.update(
        {
            "PEX_ROOT": str(pex_root(cache_dir)),
            "PEX_IGNORE_RCFILES": "true",
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_NO_INPUT": "1",
        }
    )
    return env


def ca_bundle() -> str | None:
    """The CA bundle the rest of the build trusts: Python's default (``$SSL_CERT_FILE``,
    else OpenSSL's), which the registry client and the mirror fetch use too. pex's pip
    would otherwise trust only its own bundled copy (certifi)."""
    import ssl  # here only: a no-op build reads the locks, never runs pex

    return ssl.get_default_verify_paths().cafile or None


def common_args(cache_dir: Path) -> list[str]:
    bundle = ca_bundle()
    return [
        *(["--cert", bundle] if bundle else []),
        "--pex-root",
        str(pex_root(cache_dir)),
        "--pip-version",
        PIP_VERSION,
        "--no-allow-pip-version-fallback",
        "--no-use-pip-config",
        "--no-pypi",
        "--index",
        INDEX_URL,
        "--no-build",  # wheels only: a build from an sdist is not reproducible
    ]


_HASH_MISMATCH = re.compile(
    r"Expected (\w+) hash of (\w+) when downloading (\S+) but hashed to (\w+)"
)
_NETWORK = re.compile(
    r"Max retries exceeded|Failed to establish a new connection|NewConnectionError|"
    r"Temporary failure in name resolution|Name or service not known|Network is unreachable|"
    r"Connection refused|ConnectTimeout|ReadTimeout|timed out|ProxyError|SSLError|"
    r"CERTIFICATE_VERIFY_FAILED|Could not fetch URL|HTTP error \d+|ConnectionError",
    re.IGNORECASE,
)
_CERTIFICATE = re.compile(
    r"CERTIFICATE_VERIFY_FAILED|certificate verify failed|SSLCertVerificationError", re.IGNORECASE
)
_UNRESOLVABLE = re.compile(
    r"(No matching distribution found for [^\n]+|"
    r"Could not find a version that satisfies the requirement [^\n]+|ResolutionImpossible)"
)


def _log_path(cache_dir: Path, what: str) -> Path:
    return cache_dir / "logs" / f"pex-{what}.log"


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def pex_error(what: str, output: str, log: Path) -> LockstepError:
    """Turn a failed pex run's output into one line that says what to do."""
    mismatch = _HASH_MISMATCH.search(output)
    if mismatch:
        algo, expected, project, actual = mismatch.groups()
        return CheckFailed(
            f"{what}: {project} does not match the lock: expected {algo} {expected}, "
            f"downloaded {actual}; the lock was edited or the index serves different bytes; "
            f"{LOCK_HINT} to re-lock (details: {log})"
        )
    # Before the resolver's verdict: pip ends a TLS or network failure with
    # "No matching distribution" too.
    if _CERTIFICATE.search(output):
        return ServiceFailed(
            f"{what}: the package index's TLS certificate is not trusted by the CA bundle "
            f"{ca_bundle() or '(none found)'}; if a proxy re-signs HTTPS, add its CA to that "
            f"bundle or set {SSL_CERT_FILE} to a bundle that has it (details: {log})"
        )
    network = _NETWORK.search(output)
    if network:
        return ServiceFailed(
            f"{what}: cannot reach the package index ({network.group(0)}); check the network "
            f"or proxy and retry (details: {log})"
        )
    unresolvable = _UNRESOLVABLE.search(output)
    if unresolvable:
        return BadInput(
            f"{what}: cannot resolve for the image's python: {unresolvable.group(1).strip()}; "
            f"fix requirements in [tool.lockstep] of pyproject.toml (details: {log})"
        )
    return ServiceFailed(f"{what}: pex failed: {last_line(output)} (details: {log})")


def run_pex(args: Sequence[str], cache_dir: Path, what: str, progress: Progress = quiet) -> str:
    """Run ``pex3 ARGS`` in the isolated environment; its stdout, or a one-line error.

    pex runs under ``lockstep.core.reap``: when this process dies, so does pex
    and everything it started.

    The whole output of a failed run is kept in ``CACHE/logs/pex-WHAT.log``.
    """
    argv = [*pex3_argv(), *args]
    progress(f"pex3 {args[0]} {args[1] if len(args) > 1 else ''}".rstrip())
    cache_dir.mkdir(parents=True, exist_ok=True)
    try:  # supervised: a build killed mid-way leaves no pex or pip running
        proc = subprocess.run(
            reap.supervised(argv),
            env=pex_env(cache_dir),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except OSError as exc:
        raise BadInput(
            f"cannot run {argv[0]} ({exc.strerror}); install the build extras (pex=={PEX_VERSION})"
        ) from exc
    if proc.returncode != 0:
        log = _log_path(cache_dir, what.replace(" ", "-"))
        output = f"$ {shlex.join(argv)}\n{proc.stdout}\n{proc.stderr}"
        write_bytes(log, output.encode())
        raise pex_error(what, output, log)
    return proc.stdout
