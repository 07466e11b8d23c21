"""@lockstep_project: what Bazel needs from pyproject.toml, made on this machine (no fetch).

The rule runs the builder's Python environment (LOCKSTEP_PYTHON, named once in
.bazelrc) on `python -m lockstep.assembly.bazel describe`, which reads
pyproject.toml with the same code as `lockstep build` and prints project.bzl:
the declared source globs per Bazel package, the labels of the locks and the
complete-platform file, the image roles, and the python's absolute path. So
nothing about the images is written twice, and a missing or broken builder
environment is one clear error before anything is built.
"""

# Re-run when any of these change (Bazel watches every file read through a label).
_WATCHED = [
    "//:pyproject.toml",
    "//:src/lockstep/__init__.py",
    "//:src/lockstep/assembly/__init__.py",
    "//:src/lockstep/assembly/bazel.py",
    "//:src/lockstep/core/__init__.py",
    "//:src/lockstep/core/atomic.py",
    "//:src/lockstep/core/digests.py",
    "//:src/lockstep/core/errors.py",
    "//:src/lockstep/core/progress.py",
    "//:src/lockstep/core/reap.py",
    "//:src/lockstep/core/registry.py",
    "//:src/lockstep/core/settings.py",
    "//:src/lockstep/inputs/__init__.py",
    "//:src/lockstep/inputs/debian/__init__.py",
    "//:src/lockstep/inputs/debian/lock.py",
    "//:src/lockstep/inputs/declared.py",
    "//:src/lockstep/inputs/python/__init__.py",
    "//:src/lockstep/inputs/python/pex.py",
    "//:src/lockstep/manifest.py",
    "//:src/lockstep/project.py",
]

_FIX = ("create it (python3 -m venv .venv && .venv/bin/pip install -e '.[build]') or " +
        "point LOCKSTEP_PYTHON at one (.bazelrc: common --repo_env=LOCKSTEP_PYTHON=...; " +
        "a relative path is relative to the workspace)")

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
        fail("lockstep: error: the builder's Python environment LOCKSTEP_PYTHON=%s does not " % value +
             "exist (%s); %s" % (python, _FIX))
    result = rctx.execute(
        [python, "-P", "-s", "-m", "lockstep.assembly.bazel", "describe", "--project", str(root),
         "--python", python],
        environment = {"PYTHONPATH": "%s/src" % root, "PYTHONDONTWRITEBYTECODE": "1"},
        working_directory = str(root),
    )
    if result.return_code != 0:
        lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        fail("lockstep: error: the builder's Python environment LOCKSTEP_PYTHON=%s " % value +
             "cannot describe the project: %s; %s" % (lines[-1] if lines else result.return_code, _FIX))
    rctx.file("project.bzl", result.stdout)
    rctx.file("BUILD.bazel", 'exports_files(["project.bzl"])\n')

lockstep_project = repository_rule(
    implementation = _lockstep_project_impl,
    environ = ["LOCKSTEP_PYTHON"],
    local = True,
    doc = "pyproject.toml's facts for Bazel, from the builder's own project reader.",
)
