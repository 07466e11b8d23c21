"""The documentation is true: a short README whose tour runs, a site that builds strict,
reference pages generated from the code, and every command block either run or marked.

The tour test clones the committed tree and runs the README's ``console`` blocks in it,
then each guide's, checking every command's output against its page
(``tests.fixtures.docs`` says how output is matched).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema

from tests.fixtures.build import ROOT, Built, clone
from tests.fixtures.docs import RECORDED, RUN, Step, blocks, matches, run_session, steps
from tests.fixtures.engine import DockerEngine
from tests.fixtures.registry import OciRegistry
from tests.fixtures.support import require, require_platform
from tests.oci.test_client_tls import make_pki

README = ROOT / "README.md"
DOCS = ROOT / "docs"
MKDOCS = ROOT / ".venv" / "docs" / "bin" / "mkdocs"
SCHEMA = DOCS / "reference" / "result.schema.json"
# The pages whose console blocks the tour test runs, in this order, in one scratch clone.
GUIDES_RUN = ("building", "local-cluster", "bundles", "releasing")
RUN_PAGES = (README, *(DOCS / "guides" / f"{name}.md" for name in GUIDES_RUN))
PAGES = (README, *sorted(DOCS.rglob("*.md")))
LINK = re.compile(r"\]\(([^)\s]+)\)")
# The short build id the pages show (the README's build, on the commit they were last run on
# by hand): in a command (a layout's ref name) it stands for the clone's build.
SHOWN_BUILD = "3a7571aae785"


def test_readme_fits_on_a_few_screens() -> None:
    lines = README.read_text().count("\n")
    assert lines < 200, f"README.md has {lines} lines; move detail into docs/"


def test_reference_pages_are_generated_from_the_code() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "reference.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


def test_site_builds_in_strict_mode(tmp_path: Path) -> None:
    require(MKDOCS.exists(), f"{MKDOCS} is missing; run make (requirements/docs.lock.txt)")
    proc = subprocess.run(
        [str(MKDOCS), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "result.schema.json").exists()


def _anchors(page: Path) -> set[str]:
    """The ids MkDocs (Python-Markdown's toc) gives the page's headings."""
    ids = set()
    for block_free in _outside_fences(page.read_text()):
        if m := re.match(r"#+\s+(.*)", block_free):
            text = re.sub(r"[^\w\s-]", "", m.group(1).replace("`", "")).strip().lower()
            ids.add(re.sub(r"[-\s]+", "-", text))
    return ids


def _outside_fences(text: str) -> list[str]:
    inside, kept = False, []
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside
        elif not inside:
            kept.append(line)
    return kept


def test_readme_links_resolve() -> None:
    """MkDocs checks the site's links; the README is outside it, so here."""
    for target in LINK.findall("\n".join(_outside_fences(README.read_text()))):
        if "://" in target:
            continue
        path, _, anchor = target.partition("#")
        page = ROOT / path
        assert page.exists(), f"README.md links to {target}, which does not exist"
        if anchor:
            assert anchor in _anchors(page), f"README.md links to {target}: no such heading"


def test_every_command_block_is_run_or_marked_recorded() -> None:
    """A block with a ``$`` prompt is ``console`` (run by the tour test) or ``recorded``."""
    for page in PAGES:
        for block in blocks(page.read_text()):
            where = f"{page.relative_to(ROOT)}:{block.line}"
            if block.has_prompt:
                assert block.info in (RUN, RECORDED), (
                    f"{where}: a block of commands is ```{RUN} (run by tests/test_docs.py) "
                    f"or ```{RECORDED} (shown, not run: say why before it), not {block.info!r}"
                )
            if block.info == RUN:
                assert page in RUN_PAGES, f"{where}: a {RUN} block on a page no test runs"


# Every block the tests do not run (its page, the start of its first command) and why: each
# needs what the tests may not use (they reach only 127.0.0.1 and the package index).
NOT_RUN = (
    (
        "bundles.md",
        "cat examples/numpy/",
        "its output names the numpy PyPI has today, and it rewrites the committed lock",
    ),
    ("kubernetes.md", "kubectl ", "needs a Kubernetes cluster"),
    ("local-cluster.md", "kubectl ", "needs a Kubernetes cluster"),
    ("local-cluster.md", "apt-get install", "installs and registers qemu: it changes the machine"),
    (
        "releasing.md",
        "cosign verify",
        "cosign is not installable here (not on PyPI, Debian or npm)",
    ),
    ("releasing.md", "make lock-builder", "pip-compile resolves on PyPI and rewrites the locks"),
)


def test_every_recorded_block_says_why_it_is_not_run() -> None:
    """A ``recorded`` block is one that cannot run here, and NOT_RUN says why in one line."""
    used = set()
    for page in PAGES:
        for block in blocks(page.read_text()):
            if block.info != RECORDED:
                continue
            first = next(line[2:] for line in block.lines if line.startswith("$ "))
            why = [
                n
                for n, (name, start, _) in enumerate(NOT_RUN)
                if page.name == name and first.startswith(start)
            ]
            assert why, (
                f"{page.relative_to(ROOT)}:{block.line}: a recorded block that NOT_RUN in "
                "tests/test_docs.py does not explain; run it (```console) or say why it cannot run"
            )
            used.update(why)
    stale = [NOT_RUN[n] for n in range(len(NOT_RUN)) if n not in used]
    assert not stale, f"NOT_RUN explains blocks that are not there: {stale}"


def test_output_patterns() -> None:
    digest = "sha256:" + "ab" * 32
    shown = ("…", f"build {digest} in 0.25 s", "ok")
    assert matches(shown, f"log\nlog\nbuild sha256:{'cd' * 32} in 12.5 s\nok\n")
    assert matches(shown, f"build {digest}   in 1.0 s\nok\n")
    assert not matches(shown, f"build sha256:{'cd' * 31} in 1.0 s\nok\n")
    assert not matches(shown, f"build {digest} in 1.0 s\nok\nmore\n")
    assert not matches(("ok",), "not ok\n")
    assert matches(("tagged v0.1.0 at b9c1d905bb56",), "tagged v0.1.0 at 0123456789ab\n")
    assert matches((f"{'ab' * 32}  -",), f"{'cd' * 32}  -\n")  # sha256sum
    assert not matches((f"{'ab' * 32}  -",), f"{'cd' * 31}  -\n")


def test_steps_read_commands_output_and_status(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text("```console\n$ a \\\n  --b\nout\n$ c\n[exit 2]\n```\n```recorded\n$ d\n```\n")
    assert steps(page) == [
        Step("p.md:2", "a  --b", ("out",), 0),
        Step("p.md:5", "c", (), 2),
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scratch_clone(dest: Path) -> Path:
    """A fresh clone, with what `make` adds to a checkout (ignored by git, so the tree stays
    clean for a release): the environment ``.venv`` (the pages run ``.venv/bin/zizmor``, and
    Bazel's builder is ``.venv/bin/python``) and the npm verifiers of ``tests/node``."""
    root = clone(dest)
    (root / ".venv").symlink_to(Path(sys.executable).parent.parent)
    node_modules = ROOT / "tests" / "node" / "node_modules"
    if node_modules.is_dir():
        (root / "tests" / "node" / "node_modules").symlink_to(node_modules)
    # .gitignore's `.venv/` and `node_modules/` match directories, not links to them
    with (root / ".git" / "info" / "exclude").open("a") as exclude:
        exclude.write("/.venv\n/tests/node/node_modules\n")
    return root


def session_env(root: Path, cache: Path, docker_host: str, private: Path) -> dict[str, str]:
    """The pages' shell environment: ``.venv/bin`` on PATH, the session's cache, the
    suite's private Docker engine, and podman's and Bazel's state under ``private`` (never
    the machine's): a storage.conf (podman wants a run root under 50 characters) and a
    user.bazelrc in the clone (ignored by git) with Bazel's output root there, and a host
    worker's bundle directory."""
    private.mkdir(parents=True, exist_ok=True)
    run_root = Path(tempfile.mkdtemp(prefix="ls-pm-"))
    (private / "podman-runroot").write_text(str(run_root))
    storage = private / "storage.conf"
    storage.write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{private / "podman"}"\n'
        f'runroot = "{run_root}"\n'
    )
    (root / "user.bazelrc").write_text(
        f"startup --output_user_root={private / 'bazel'} --max_idle_secs=600\n"
    )
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "LOCKSTEP_CACHE_DIR": str(cache),  # the session's downloads and layers
        # a host worker's bundles and environments (numpy's: 64 MB) go with the run's
        # scratch, not to the machine's <tempdir>/lockstep-bundles
        "LOCKSTEP_BUNDLE_DIR": str(private / "bundles"),
        "PYTHONUNBUFFERED": "1",  # stdout and stderr in the order a terminal shows them
        "GIT_COMMITTER_NAME": "Tour",
        "GIT_COMMITTER_EMAIL": "tour@example.invalid",
        "GIT_AUTHOR_NAME": "Tour",
        "GIT_AUTHOR_EMAIL": "tour@example.invalid",
        "DOCKER_HOST": docker_host,
        "CONTAINERS_STORAGE_CONF": str(storage),
        "NO_COLOR": "1",  # the pages show plain text; a CI runner (CI=true) turns colour on
    }
    for name in ("LOCKSTEP_MANIFEST", "FORCE_COLOR", "CLICOLOR_FORCE"):
        env.pop(name, None)
    return env


def substitutions(registry: str, tls_registry: str) -> dict[str, str]:
    """What the pages' addresses stand for here: ports that may be taken on a shared machine
    are free ones, and the registries are the suite's."""
    port, http_port = _free_port(), _free_port()
    return {
        "127.0.0.1:8786": f"127.0.0.1:{port}",
        "--port 8786": f"--port {port}",
        "127.0.0.1:18788": f"127.0.0.1:{http_port}",
        "127.0.0.1:5000": registry,
        "127.0.0.1:5443": tls_registry,
    }


def built_here(root: Path) -> str:
    """The short id of the build in the clone's ``out/`` (what ``SHOWN_BUILD`` stands for)."""
    return str(json.loads((root / "out" / "manifest.json").read_text())["build_id"])[7:19]


def shutdown(root: Path, env: dict[str, str], private: Path) -> None:
    """Stop what the pages left outside their shell: Bazel's server, podman's run root."""
    if shutil.which("bazel"):
        subprocess.run(["bazel", "shutdown"], cwd=root, env=env, capture_output=True, timeout=120)
    with contextlib.suppress(OSError):
        shutil.rmtree((private / "podman-runroot").read_text(), ignore_errors=True)


def test_the_tour_and_the_guides_run_on_a_scratch_clone(
    tmp_path: Path, built: Built, registry_running: OciRegistry, docker_engine: DockerEngine
) -> None:
    """The README's ten-minute tour end to end on a fresh clone (build, a local cluster, a
    job, a release), then the guides' console blocks in the same clone."""
    for tool in ("podman", "skopeo", "bazel", "node", "openssl"):
        require(shutil.which(tool) is not None, f"{tool} is not installed (the guides run it)")
    require_platform("linux/arm64")  # local-cluster.md runs an arm64 worker under qemu
    root = scratch_clone(tmp_path / "lockstep")
    private = tmp_path / "private"
    env = session_env(root, built.cache, docker_engine.host, private)
    tls = OciRegistry.start_new(tls=make_pki(tmp_path / "pki"))
    subs = substitutions(registry_running.address, tls.address)
    try:
        for page in RUN_PAGES:
            page_steps = steps(page)
            assert page_steps or page is not README, "the README's tour has no console block"
            for outcome in run_session(page_steps, root, env, subs):
                assert outcome.ok, outcome.explain()
            if page is README:
                subs[SHOWN_BUILD] = built_here(root)
    finally:
        shutdown(root, env, private)
        tls.close()
    document = json.loads((root / "out" / "result.json").read_text())
    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(document)
