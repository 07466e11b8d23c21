"""Runtime settings, read by the process that uses them and checked against its own manifest.

A worker reads its settings from its own environment when it starts. Nothing
of it comes from the runner: the incident (docs/design.md §1) was a config object
built in an older runner image and pickled to the workers. A value that is
missing, empty, of the wrong type, or names an executor this image does not
contain stops the process with an error that lists the valid values; there is
no fallback.

The settings' names, defaults and meanings are in ``lockstep.core.settings``
(the one table, rendered into docs/reference/environment.md); this module reads and checks the
ones a worker and a scheduler use.

Each worker logs its settings once at start-up, then one line
``lockstep worker ready: build <id> version <v> executor <type> pid <pid>``;
the scheduler logs its own (``scheduler_settings()``) once at start-up too.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockstep.core import entrypoints
from lockstep.core.bounded import KEY_MAX, read_regular
from lockstep.core.errors import BadInput
from lockstep.core.limits import MAX_SECONDS, parse_seconds
from lockstep.core.settings import BUNDLE_DIR as BUNDLE_DIR_ENV
from lockstep.core.settings import (
    DEFAULT_RESULT_MAX_BYTES,
    DEFAULT_START_TIMEOUT,
    DEFAULT_TASK_TIMEOUT,
    DEFAULT_WARM_ENVIRONMENTS,
)
from lockstep.core.settings import EXECUTOR as EXECUTOR_ENV
from lockstep.core.settings import IMAGE as IMAGE_ENV
from lockstep.core.settings import MANIFEST as MANIFEST_ENV
from lockstep.core.settings import RESULT_MAX_BYTES as RESULT_MAX_BYTES_ENV
from lockstep.core.settings import ROLE as ROLE_ENV
from lockstep.core.settings import START_TIMEOUT as START_TIMEOUT_ENV
from lockstep.core.settings import TASK_TIMEOUT as TASK_TIMEOUT_ENV
from lockstep.core.settings import TLS_CA_FILE as TLS_CA_ENV
from lockstep.core.settings import TLS_CERT as TLS_CERT_ENV
from lockstep.core.settings import TLS_KEY as TLS_KEY_ENV
from lockstep.core.settings import WARM_ENVIRONMENTS as WARM_ENVIRONMENTS_ENV
from lockstep.manifest import BuildManifest, load_manifest, manifest_path

TLS_ENVS = (TLS_CA_ENV, TLS_CERT_ENV, TLS_KEY_ENV)


def default_bundle_dir() -> Path:
    """``lockstep-bundles`` under the temporary directory (``$TMPDIR``, else ``/tmp``)."""
    return Path(tempfile.gettempdir()) / "lockstep-bundles"


def image_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """``LOCKSTEP_IMAGE`` as set (None if unset or empty); informational, never validated."""
    env = os.environ if environ is None else environ
    return env.get(IMAGE_ENV) or None


def scheduler_settings(environ: Mapping[str, str] | None = None) -> str:
    """The scheduler's one start-up log line of its settings."""
    env = os.environ if environ is None else environ
    return (
        f"lockstep settings: {MANIFEST_ENV}={manifest_path(env)} "
        f"{IMAGE_ENV}={image_from_env(env) or '(unset)'} "
        f"{ROLE_ENV}={env.get(ROLE_ENV) or '(unset)'} {_tls_settings(env)}"
    )


def _tls_settings(env: Mapping[str, str]) -> str:
    return " ".join(f"{name}={env.get(name) or '(unset)'}" for name in TLS_ENVS)


@dataclass(frozen=True)
class TlsFiles:
    """The mutual-TLS files of this process (``LOCKSTEP_TLS_*``), checked readable and PEM."""

    ca_file: Path
    cert: Path
    key: Path

    @staticmethod
    def names() -> str:
        return ", ".join(TLS_ENVS)

    def dask_args(self) -> list[str]:
        """The ``dask scheduler``/``dask worker`` options for these files."""
        return [
            "--tls-ca-file",
            str(self.ca_file),
            "--tls-cert",
            str(self.cert),
            "--tls-key",
            str(self.key),
        ]

    def client_security(self) -> Any:
        """A ``distributed.Security`` for a client (runner, doctor): encryption required."""
        from distributed.security import Security

        return Security(
            tls_ca_file=str(self.ca_file),  # type: ignore[no-untyped-call]
            tls_client_cert=str(self.cert),
            tls_client_key=str(self.key),
            require_encryption=True,
        )


def tls_from_env(environ: Mapping[str, str] | None = None) -> TlsFiles | None:
    """``LOCKSTEP_TLS_*`` of this process; None if none is set; ``BadInput`` (one line) if bad."""
    import ssl

    env = os.environ if environ is None else environ
    given = {name: env.get(name) for name in TLS_ENVS if env.get(name) is not None}
    if not given:
        return None
    missing = [name for name in TLS_ENVS if not given.get(name)]
    if missing:
        present = [name for name in TLS_ENVS if given.get(name)]
        shown = ", ".join(present) if present else "none of them has a value"
        raise BadInput(
            f"mutual TLS needs all of {TlsFiles.names()} or none; "
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} unset or "
            f"empty (set: {shown}); set all three to PEM files or unset all three"
        )
    paths = {name: Path(str(given[name])) for name in TLS_ENVS}
    pem: dict[str, bytes] = {}
    for name, path in paths.items():
        try:  # ssl would block on a FIFO and read /dev/zero for ever: check each first
            pem[name] = read_regular(path, KEY_MAX)
        except OSError as exc:
            raise BadInput(
                f"{name}={path}: cannot read it ({exc.strerror or exc}); mount the "
                "cluster's TLS Secret there or fix the path"
            ) from exc
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_verify_locations(cadata=pem[TLS_CA_ENV].decode("ascii"))
    except (ssl.SSLError, ValueError) as exc:
        raise BadInput(
            f"{TLS_CA_ENV}={paths[TLS_CA_ENV]}: not a PEM CA certificate "
            f"({exc}); point it at the cluster CA's certificate"
        ) from exc
    try:
        ctx.load_cert_chain(str(paths[TLS_CERT_ENV]), str(paths[TLS_KEY_ENV]))
    except (ssl.SSLError, ValueError) as exc:
        raise BadInput(
            f"{TLS_CERT_ENV}={paths[TLS_CERT_ENV]} and {TLS_KEY_ENV}="
            f"{paths[TLS_KEY_ENV]}: not a PEM certificate and its private key "
            f"({exc}); point them at this process's certificate and key"
        ) from exc
    return TlsFiles(paths[TLS_CA_ENV], paths[TLS_CERT_ENV], paths[TLS_KEY_ENV])


@dataclass(frozen=True)
class RuntimeConfig:
    """A worker's settings, validated against the manifest of the image it runs in."""

    manifest: BuildManifest
    manifest_path: Path
    executor: str
    start_timeout: float
    bundle_dir: Path = field(default_factory=default_bundle_dir)
    image: str | None = None  # LOCKSTEP_IMAGE: informational only
    task_timeout: float = DEFAULT_TASK_TIMEOUT
    result_max_bytes: int = DEFAULT_RESULT_MAX_BYTES
    role: str | None = None  # LOCKSTEP_ROLE, set by the image: informational only
    tls: TlsFiles | None = None  # LOCKSTEP_TLS_*: mutual TLS, or None
    warm_environments: int = DEFAULT_WARM_ENVIRONMENTS  # LOCKSTEP_WARM_ENVIRONMENTS

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, manifest: BuildManifest | None = None
    ) -> RuntimeConfig:
        """Read this process's environment; ``BadInput`` naming the variable and valid values.

        ``manifest`` defaults to this process's own (``$LOCKSTEP_MANIFEST``).
        """
        env = os.environ if environ is None else environ
        path = manifest_path(env)
        if manifest is None:
            manifest = load_manifest(path)
        return cls(
            manifest=manifest,
            manifest_path=path,
            executor=_executor(env, manifest),
            start_timeout=_positive_seconds(env, START_TIMEOUT_ENV, DEFAULT_START_TIMEOUT),
            bundle_dir=_bundle_dir(env),
            image=image_from_env(env),
            task_timeout=_positive_seconds(env, TASK_TIMEOUT_ENV, DEFAULT_TASK_TIMEOUT),
            result_max_bytes=_positive_int(env, RESULT_MAX_BYTES_ENV, DEFAULT_RESULT_MAX_BYTES),
            role=env.get(ROLE_ENV) or None,
            tls=tls_from_env(env),
            warm_environments=_count(env, WARM_ENVIRONMENTS_ENV, DEFAULT_WARM_ENVIRONMENTS),
        )

    def describe(self) -> str:
        """One log line of every setting and where its value came from."""
        return (
            f"lockstep settings: {MANIFEST_ENV}={self.manifest_path} "
            f"{EXECUTOR_ENV}={self.executor} "
            f"{START_TIMEOUT_ENV}={self.start_timeout:g} "
            f"{TASK_TIMEOUT_ENV}={self.task_timeout:g} "
            f"{RESULT_MAX_BYTES_ENV}={self.result_max_bytes} "
            f"{BUNDLE_DIR_ENV}={self.bundle_dir} "
            f"{WARM_ENVIRONMENTS_ENV}={self.warm_environments} "
            f"{IMAGE_ENV}={self.image or '(unset)'} "
            f"{ROLE_ENV}={self.role or '(unset)'} "
            + (
                _tls_settings(
                    {
                        TLS_CA_ENV: str(self.tls.ca_file),
                        TLS_CERT_ENV: str(self.tls.cert),
                        TLS_KEY_ENV: str(self.tls.key),
                    }
                )
                if self.tls
                else _tls_settings({})
            )
        )


def _bundle_dir(env: Mapping[str, str]) -> Path:
    raw = env.get(BUNDLE_DIR_ENV)
    if raw is None:
        return default_bundle_dir()
    if not raw or not os.path.isabs(raw):
        shown = repr(raw) if raw else "'' (empty)"
        raise BadInput(
            f"{BUNDLE_DIR_ENV}={shown} is not an absolute path; unset it for the "
            f"default ({default_bundle_dir()}) or set a writable directory"
        )
    return Path(raw)


def _executor(env: Mapping[str, str], manifest: BuildManifest) -> str:
    valid = ", ".join(manifest.executors) or "(none: the manifest lists no executors)"
    build = f"build {manifest.build_id} version {manifest.version}"
    found = entrypoints.registered()
    lacking = sorted(set(manifest.executors) - set(found))
    if lacking:  # a manifest that is not this code's: never join a cluster with it
        raise BadInput(
            f"the manifest of {build} lists executor(s) {', '.join(lacking)} that this "
            f"installation does not contain (its {entrypoints.GROUP} entry points: "
            f"{', '.join(sorted(found)) or 'none'}); the manifest does not belong to this "
            "image's code: rebuild the image"
        )
    value = env.get(EXECUTOR_ENV)
    if value is None:
        raise BadInput(
            f"{EXECUTOR_ENV} is not set; set it to one of the executors of {build}: {valid}"
        )
    if value not in manifest.executors:
        shown = repr(value) if value else "'' (empty)"
        raise BadInput(
            f"{EXECUTOR_ENV}={shown} is not an executor of {build}; valid values: {valid}"
        )
    return value


def _positive_seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None:
        return default
    value = parse_seconds(raw)
    if value is None:
        shown = repr(raw) if raw else "'' (empty)"
        raise BadInput(
            f"{name}={shown} is not a number of seconds > 0 and at most {MAX_SECONDS:g}; "
            f"unset it for the default ({default:g}) or set a number such as 30"
        )
    return value


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or int(text) <= 0 or int(text) >= 2**63:
        shown = repr(raw) if raw else "'' (empty)"
        raise BadInput(
            f"{name}={shown} is not a whole number of bytes > 0; unset it for the "
            f"default ({default}) or set one such as {default}"
        )
    return int(text)


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) <= 1000:
        shown = repr(raw) if raw else "'' (empty)"
        raise BadInput(
            f"{name}={shown} is not a whole number from 1 to 1000; unset it for the "
            f"default ({default}) or set one such as {default}"
        )
    return int(text)
