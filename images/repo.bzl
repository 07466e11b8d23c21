"""@lockstep_project: what Bazel needs from pyproject.toml, made on this machine.

The rule runs the builder's Python environment (LOCKSTEP_PYTHON, named once in
.bazelrc) on `python -m lockstep.assembly.bazel describe`, which reads
pyproject.toml with the same code as `lockstep build` and prints project.bzl:
the declared source globs per Bazel package, the labels of the locks and of each
platform's complete-platform file, the image roles, the files of each image
target and base layer target (OUTPUTS, LOADS, BASES), and the python's absolute path. So
nothing about the images is written twice, and a broken builder environment is
one clear error before anything is built.

When LOCKSTEP_PYTHON names the workspace's own environment (a relative path,
.venv/bin/python as `make` makes it) and it does not exist, the rule creates
the same environment from the same lock, requirements/build.lock.txt
(tools/builder_env.py with the host's python3.11: a venv, the lock's files by
sha256 from PyPI, then lockstep itself), under the output base
(<output_base>/lockstep-builder/<key>, outside this repository's directory,
which Bazel re-creates whenever the rule runs again), and uses it. The rule
reads the lock, so a change of it runs the rule again, and a new lock is a new
environment. An absolute LOCKSTEP_PYTHON that does not exist is an error: it
names somebody's environment, which the rule does not guess.
"""

# Re-run when any of these change (Bazel watches every file read through a label).
_WATCHED = [
    "//:pyproject.toml",
    "//:requirements/build.lock.txt",
    "//:tools/builder_env.py",
    "//:src/lockstep/__init__.py",
    "//:src/lockstep/assembly/__init__.py",
    "//:src/lockstep/assembly/bazel.py",
    "//:src/lockstep/core/__init__.py",
    "//:src/lockstep/core/atomic.py",
    "//:src/lockstep/core/digests.py",
    "//:src/lockstep/core/entrypoints.py",
    "//:src/lockstep/core/errors.py",
    "//:src/lockstep/core/platforms.py",
    "//:src/lockstep/core/progress.py",
    "//:src/lockstep/core/reap.py",
    "//:src/lockstep/core/settings.py",
    "//:src/lockstep/deployment.py",
    "//:src/lockstep/inputs/__init__.py",
    "//:src/lockstep/inputs/declared.py",
    "//:src/lockstep/inputs/python/__init__.py",
    "//:src/lockstep/inputs/python/pex.py",
    "//:src/lockstep/manifest.py",
    "//:src/lockstep/project.py",
]

_FIX = ("create it (make .venv/bin/lockstep) or point LOCKSTEP_PYTHON at one (.bazelrc: " +
        "common --repo_env=LOCKSTEP_PYTHON=...; a relative one that does not exist is created " +
        "from requirements/build.lock.txt)")

_LOCK = "requirements/build.lock.txt"

def _one_line(result):
    lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("lockstep: error: ")]
    if errors:
        return errors[-1][len("lockstep: error: "):]
    return lines[-1] if lines else "exit status %d" % result.return_code

def _create_environment(rctx, root, value):
    """The builder's environment made from the lock under the output base; its python."""
    host = rctx.which("python3.11") or rctx.which("python3")
    if not host:
        fail("lockstep: error: LOCKSTEP_PYTHON=%s does not exist, and there is no " % value +
             "python3.11 (or python3) on PATH to create it from %s; install Python 3.11" % _LOCK)
    probe = rctx.execute([host, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
    version = probe.stdout.strip()
    if probe.return_code != 0 or version != "3.11":
        fail("lockstep: error: LOCKSTEP_PYTHON=%s does not exist, and %s, " % (value, host) +
             "which would create it from %s, is Python %s, not 3.11; " % (_LOCK, version or "?") +
             "put Python 3.11 first on PATH, or make .venv/bin/lockstep PYTHON=python3.11")
    base = rctx.path(".").dirname.dirname.get_child("lockstep-builder")
    rctx.report_progress("creating the builder's environment from %s (first time only)" % _LOCK)
    result = rctx.execute(
        [host, "-I", "%s/tools/builder_env.py" % root, "--project", str(root),
         "--lock", "%s/%s" % (root, _LOCK), "--base", str(base)],
        timeout = 3600,
        working_directory = str(root),
        quiet = True,
    )
    if result.return_code != 0:
        fail("lockstep: error: creating the builder's environment (LOCKSTEP_PYTHON=%s " % value +
             "does not exist) from %s: %s" % (_LOCK, _one_line(result)))
    return result.stdout.strip().splitlines()[-1]

def _lockstep_project_impl(rctx):
    root = rctx.path(Label("//:WORKSPACE")).dirname
    for watched in _WATCHED:
        rctx.read(Label(watched))
    value = rctx.os.environ.get("LOCKSTEP_PYTHON", "")
    if not value:
        fail("lockstep: error: LOCKSTEP_PYTHON is not set; the builder's Python environment " +
             "is named in .bazelrc; " + _FIX)
    python = value if value.startswith("/") else "%s/%s" % (root, value)
    if not rctx.path(python).exists:
        if value.startswith("/"):
            fail("lockstep: error: the builder's Python environment LOCKSTEP_PYTHON=%s does " % value +
                 "not exist (%s); %s" % (python, _FIX))
        python = _create_environment(rctx, root, value)
    result = rctx.execute(
        [python, "-P", "-s", "-m", "lockstep.assembly.bazel", "describe", "--project", str(root),
         "--python", python],
        environment = {"PYTHONPATH": "%s/src" % root, "PYTHONDONTWRITEBYTECODE": "1"},
        working_directory = str(root),
    )
    if result.return_code != 0:
        fail("lockstep: error: the builder's Python environment %s " % python +
             "(LOCKSTEP_PYTHON=%s) cannot describe the project: %s; %s" % (value, _one_line(result), _FIX))
    rctx.file("project.bzl", result.stdout)
    rctx.file("BUILD.bazel", 'exports_files(["project.bzl"])\n')

lockstep_project = repository_rule(
    implementation = _lockstep_project_impl,
    environ = ["LOCKSTEP_PYTHON"],
    local = True,
    doc = "pyproject.toml's facts for Bazel, from the builder's own project reader.",
)
