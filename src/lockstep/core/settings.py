"""Every environment variable lockstep reads or sets: the one table of their names.

``SETTINGS`` is the only source of these names; ``settings_table()`` renders
docs/reference/environment.md and docs/design.md §4.4 from it (tests keep them
equal). Each setting is read by the process that uses it: the worker's through
``lockstep.runtime.config``, the build's where the build reads it. Nothing here parses a value.
"""

from __future__ import annotations

from dataclasses import dataclass

MANIFEST = "LOCKSTEP_MANIFEST"
EXECUTOR = "LOCKSTEP_EXECUTOR"
START_TIMEOUT = "LOCKSTEP_EXECUTOR_START_TIMEOUT"
TASK_TIMEOUT = "LOCKSTEP_TASK_TIMEOUT"
RESULT_MAX_BYTES = "LOCKSTEP_RESULT_MAX_BYTES"
BUNDLE_DIR = "LOCKSTEP_BUNDLE_DIR"
WARM_ENVIRONMENTS = "LOCKSTEP_WARM_ENVIRONMENTS"
IMAGE = "LOCKSTEP_IMAGE"
ROLE = "LOCKSTEP_ROLE"
CACHE_DIR = "LOCKSTEP_CACHE_DIR"
DEBIAN_MIRROR = "LOCKSTEP_DEBIAN_MIRROR"
PYTHON = "LOCKSTEP_PYTHON"
REQUIRE_ALL = "LOCKSTEP_REQUIRE_ALL"
TLS_CA_FILE = "LOCKSTEP_TLS_CA_FILE"
TLS_CERT = "LOCKSTEP_TLS_CERT"
TLS_KEY = "LOCKSTEP_TLS_KEY"
HEALTH_SOCKET = "LOCKSTEP_HEALTH_SOCKET"
SSL_CERT_FILE = "SSL_CERT_FILE"  # OpenSSL's own name; lockstep's build honours it everywhere
DOCKER_CONFIG = "DOCKER_CONFIG"  # Docker's own name: the directory of config.json

MANIFEST_PATH = "/etc/lockstep/manifest.json"  # where every image carries its manifest
DEFAULT_START_TIMEOUT = 30.0
DEFAULT_TASK_TIMEOUT = 3600.0
DEFAULT_RESULT_MAX_BYTES = 64 * 1024 * 1024
BUNDLE_DIR_DEFAULT = "<tempdir>/lockstep-bundles"
DEFAULT_WARM_ENVIRONMENTS = 4
DEFAULT_MIRROR = "http://deb.debian.org/debian"


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
        CACHE_DIR,
        "build, lock, release, Bazel",
        "`$XDG_CACHE_HOME/lockstep`, else `~/.cache/lockstep`",
        "the content-addressed download and layer cache",
    ),
    Setting(
        DEBIAN_MIRROR,
        "build, `lock debian`, `lock platform`",
        f"`[tool.lockstep] debian_mirror`, else `{DEFAULT_MIRROR}`",
        "the Debian mirror; the security archive is its sibling `…/debian-security`",
    ),
    Setting(
        SSL_CERT_FILE,
        "build, lock, release",
        "OpenSSL's default bundle",
        "the CA bundle the build host trusts, for the package index (pex is given it as "
        "`--cert`), the Debian mirror and registries; a TLS-intercepting proxy's CA goes "
        "in it",
    ),
    Setting(
        DOCKER_CONFIG,
        "release, bundle push/pull/inspect, runner, worker",
        "~/.docker",
        "Docker's: the directory of the `config.json` with registry credentials; workers "
        "pulling bundles get it from the Secret `lockstep-registry-auth`",
    ),
    Setting(
        MANIFEST,
        "scheduler, worker, runner",
        MANIFEST_PATH,
        "path of this process's build manifest; outside an image it must be set, e.g. to the "
        "`out/manifest.json` that `lockstep build` writes",
    ),
    Setting(
        EXECUTOR,
        "worker",
        None,
        "the executor for this worker's tasks: one of the manifest's `executors` "
        "(`cold`, `direct`, `isolated_warm`); anything else stops the worker with the "
        "list of valid values",
        required=True,
    ),
    Setting(
        BUNDLE_DIR,
        "worker",
        BUNDLE_DIR_DEFAULT,
        "where the worker caches job bundles by digest (`<tempdir>` is `$TMPDIR`, else "
        "`/tmp`), their wheels by sha256 and their environments by (build, lock); must "
        "be writable",
    ),
    Setting(
        WARM_ENVIRONMENTS,
        "worker",
        str(DEFAULT_WARM_ENVIRONMENTS),
        "how many bundle environments an `isolated_warm` or `cold` worker keeps processes "
        "for (a whole number > 0); beyond it the idle processes of the least recently "
        "used environment are stopped",
    ),
    Setting(
        START_TIMEOUT,
        "worker",
        str(DEFAULT_START_TIMEOUT).removesuffix(".0"),
        "seconds (a number > 0) to wait for the executor's child process to say it is ready",
    ),
    Setting(
        TASK_TIMEOUT,
        "worker",
        str(DEFAULT_TASK_TIMEOUT).removesuffix(".0"),
        "seconds (a number > 0) a task may run when its job sets no `task_timeout`; then "
        "its process group is killed and the task fails (under `direct` the worker also "
        "retires, as a thread cannot be killed)",
    ),
    Setting(
        RESULT_MAX_BYTES,
        "worker",
        str(DEFAULT_RESULT_MAX_BYTES),
        "the largest value (pickled, in bytes; an integer > 0) a task may return; a "
        "larger one fails that task",
    ),
    Setting(
        HEALTH_SOCKET,
        "scheduler, worker",
        None,
        "a Unix socket path (the deployment files: `/tmp/lockstep-health.sock`) where the "
        "process answers its Kubernetes probes (`live`, `ready`) from its event loop; "
        "unset: no probe socket",
    ),
    Setting(
        IMAGE,
        "scheduler, worker",
        None,
        "the image reference the deployment pulled, e.g. "
        "`HOST/REPO/lockstep-worker@sha256:…`; only informational (never validated): "
        "logged at start-up and shown by `lockstep doctor`",
    ),
    Setting(
        TLS_CA_FILE,
        "scheduler, worker, runner, doctor",
        None,
        "PEM file of the CA that signs the cluster's certificates: with "
        f"`{TLS_CERT}` and `{TLS_KEY}` (all three or none) turns on mutual TLS; "
        "then only `tls://` addresses and only peers with a certificate of this CA",
    ),
    Setting(
        TLS_CERT,
        "scheduler, worker, runner, doctor",
        None,
        "PEM file of this process's certificate, signed by that CA",
    ),
    Setting(
        TLS_KEY,
        "scheduler, worker, runner, doctor",
        None,
        "PEM file of this process's private key (matching the certificate)",
    ),
    Setting(
        ROLE,
        "scheduler, worker",
        "set by each image's config",
        "`runner` or `worker`: which image the process runs in; informational, logged at start-up",
    ),
    Setting(
        PYTHON,
        "Bazel (`@lockstep_project`, the image actions)",
        "`.venv/bin/python`, set in `.bazelrc`",
        "the builder's Python environment (a venv with `lockstep[build]`); relative to "
        "the workspace",
    ),
    Setting(
        REQUIRE_ALL,
        "tests",
        None,
        '`1` turns "part not installed" skips into failures (set by `.ci/run`)',
    ),
)


def settings_table() -> str:
    """The settings table of the docs, as Markdown, from ``SETTINGS``."""
    rows = ["| variable | read by | default | meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        if s.default is None:
            default = "none: required" if s.required else "unset"
        elif " " in s.default:  # prose (with its own `code` where it names values)
            default = s.default
        else:
            default = f"`{s.default}`"
        rows.append(f"| `{s.name}` | {s.read_by} | {default} | {s.meaning} |")
    return "\n".join(rows)
