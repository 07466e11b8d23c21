"""Runtime settings, read by the process that uses them and checked against its own manifest.

A worker reads its settings from its own environment when it starts. Nothing
of it comes from the runner: the incident (DESIGN.md §1) was a config object
built in an older runner image and pickled to the workers. A value that is
missing, empty, of the wrong type, or names an executor this image does not
contain stops the process with an error that lists the valid values; there is
no fallback.

The settings (``SETTINGS`` below is their one source; ``settings_table()``
renders the README's Markdown table from it):

- ``LOCKSTEP_MANIFEST`` (scheduler, worker, runner; default
  ``/etc/lockstep/manifest.json``): path of this process's build manifest;
  outside an image it must be set.
- ``LOCKSTEP_EXECUTOR`` (worker; required, no default): the executor type for
  this worker's tasks, one of the manifest's ``executors``
  (``cold``, ``direct``, ``isolated_warm``); anything else stops the worker.
- ``LOCKSTEP_EXECUTOR_START_TIMEOUT`` (worker; default ``30``): seconds, a
  number > 0, to wait for the executor's child process to say it is ready.
- ``LOCKSTEP_TASK_TIMEOUT`` (worker; default ``3600``): seconds, a number > 0,
  a task may run unless its call (a job's ``task_timeout``) says otherwise;
  then its process group is killed and the task fails (``direct``: the task
  fails and the worker retires, ``lockstep.runtime.executors.direct``).
- ``LOCKSTEP_RESULT_MAX_BYTES`` (worker; default ``67108864``, 64 MiB): the
  largest value (pickled) a task may return; a larger one fails that task.
- ``LOCKSTEP_BUNDLE_DIR`` (worker; default ``<tempdir>/lockstep-bundles``):
  where the worker caches job bundles by digest; must be writable (the images
  run with a read-only root and a tmpfs ``/tmp``).
- ``LOCKSTEP_IMAGE`` (scheduler, worker; optional, unset by default): the image
  reference the deployment pulled (``HOST/REPO/lockstep-worker@sha256:…``).
  Only informational: never validated, answered in ``lockstep_identity`` so
  ``lockstep doctor`` can show it.

Each worker logs its settings once at start-up, then one line
``lockstep worker ready: build <id> version <v> executor <type> pid <pid>``;
the scheduler logs its own (``scheduler_settings()``) once at start-up too.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

from lockstep.errors import BadInput
from lockstep.manifest import MANIFEST_ENV, MANIFEST_PATH, BuildManifest, load_manifest

EXECUTOR_GROUP = "lockstep.executors"
EXECUTOR_ENV = "LOCKSTEP_EXECUTOR"
START_TIMEOUT_ENV = "LOCKSTEP_EXECUTOR_START_TIMEOUT"
DEFAULT_START_TIMEOUT = 30.0
BUNDLE_DIR_ENV = "LOCKSTEP_BUNDLE_DIR"
BUNDLE_DIR_DEFAULT = "<tempdir>/lockstep-bundles"
IMAGE_ENV = "LOCKSTEP_IMAGE"
TASK_TIMEOUT_ENV = "LOCKSTEP_TASK_TIMEOUT"
DEFAULT_TASK_TIMEOUT = 3600.0
RESULT_MAX_BYTES_ENV = "LOCKSTEP_RESULT_MAX_BYTES"
DEFAULT_RESULT_MAX_BYTES = 64 * 1024 * 1024


def default_bundle_dir() -> Path:
    """``lockstep-bundles`` under the temporary directory (``$TMPDIR``, else ``/tmp``)."""
    return Path(tempfile.gettempdir()) / "lockstep-bundles"


@dataclass(frozen=True)
class Setting:
    """One environment variable: who reads it, its default, what it means."""

    name: str
    read_by: str
    default: str | None  # None: no default (see ``required``)
    meaning: str
    required: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting(
        MANIFEST_ENV,
        "scheduler, worker, runner",
        MANIFEST_PATH,
        "path of this process's build manifest; outside an image it must be set",
    ),
    Setting(
        EXECUTOR_ENV,
        "worker",
        None,
        "executor type for this worker's tasks: one of the manifest's `executors`; "
        "anything else stops the worker",
        required=True,
    ),
    Setting(
        START_TIMEOUT_ENV,
        "worker",
        str(DEFAULT_START_TIMEOUT).removesuffix(".0"),
        "seconds (a number > 0) to wait for the executor's child process to say it is ready",
    ),
    Setting(
        TASK_TIMEOUT_ENV,
        "worker",
        str(DEFAULT_TASK_TIMEOUT).removesuffix(".0"),
        "seconds (a number > 0) a task may run when its job sets no `task_timeout`; then "
        "its process group is killed and the task fails (under `direct` the worker also "
        "retires, as a thread cannot be killed)",
    ),
    Setting(
        RESULT_MAX_BYTES_ENV,
        "worker",
        str(DEFAULT_RESULT_MAX_BYTES),
        "the largest value (pickled, in bytes; an integer > 0) a task may return; a "
        "larger one fails that task",
    ),
    Setting(
        BUNDLE_DIR_ENV,
        "worker",
        BUNDLE_DIR_DEFAULT,
        "where the worker caches job bundles by digest (`<tempdir>` is `$TMPDIR`, else "
        "`/tmp`); must be writable",
    ),
    Setting(
        IMAGE_ENV,
        "scheduler, worker",
        None,
        "the image reference the deployment pulled, e.g. "
        "`HOST/REPO/lockstep-worker@sha256:…`; only informational (never validated): "
        "logged at start-up and shown by `lockstep doctor`",
    ),
)


def settings_table() -> str:
    """The README's settings table, as Markdown, from ``SETTINGS``."""
    rows = ["| variable | read by | default | meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        if s.default is not None:
            default = f"`{s.default}`"
        else:
            default = "none: required" if s.required else "unset"
        rows.append(f"| `{s.name}` | {s.read_by} | {default} | {s.meaning} |")
    return "\n".join(rows)


def image_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """``LOCKSTEP_IMAGE`` as set (None if unset or empty); informational, never validated."""
    env = os.environ if environ is None else environ
    return env.get(IMAGE_ENV) or None


def scheduler_settings(environ: Mapping[str, str] | None = None) -> str:
    """The scheduler's one start-up log line of its settings."""
    env = os.environ if environ is None else environ
    return (
        f"lockstep settings: {MANIFEST_ENV}={env.get(MANIFEST_ENV) or MANIFEST_PATH} "
        f"{IMAGE_ENV}={image_from_env(env) or '(unset)'}"
    )


def registered_executors() -> dict[str, str]:
    """The executor registry of this installation: name -> ``module:attr``, from entry points."""
    return {ep.name: ep.value for ep in entry_points(group=EXECUTOR_GROUP)}


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

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, manifest: BuildManifest | None = None
    ) -> RuntimeConfig:
        """Read this process's environment; ``BadInput`` naming the variable and valid values.

        ``manifest`` defaults to this process's own (``$LOCKSTEP_MANIFEST``).
        """
        env = os.environ if environ is None else environ
        path = Path(env.get(MANIFEST_ENV) or MANIFEST_PATH)
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
            f"{IMAGE_ENV}={self.image or '(unset)'}"
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
    registry = registered_executors()
    if value not in registry:
        raise BadInput(
            f"{EXECUTOR_ENV}={value}: the manifest lists it but this installation "
            f"registers no {EXECUTOR_GROUP} entry point {value!r} (it has: "
            f"{', '.join(sorted(registry)) or 'none'}); the image is inconsistent, "
            "rebuild it"
        )
    return value


def _positive_seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        shown = repr(raw) if raw else "'' (empty)"
        raise BadInput(
            f"{name}={shown} is not a number of seconds > 0; unset it for the "
            f"default ({default:g}) or set a number such as 30"
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
