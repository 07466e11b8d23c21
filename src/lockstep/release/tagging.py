"""What a release takes from git: a clean tree, a free tag, and the stamp that names it.

The release tag is created only at the end of a release, so at build time git
knows no tag at HEAD, while at verify time the worktree sits at the tag. So
that both builds stamp the same bytes, the stamp names the release tag
explicitly in both: ``{"commit": HEAD, "tag": "v<version>", "dirty": false}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lockstep.assembly.builder import Builder, PlatformsResult, read_inputs
from lockstep.core import vcs
from lockstep.core.errors import CheckFailed
from lockstep.core.progress import Progress
from lockstep.core.store import Cache
from lockstep.inputs.stamp import git_stamp
from lockstep.manifest import Stamp
from lockstep.project import ROLES, Project

RELEASE_DIR = "release"


def tag_name(version: str) -> str:
    return f"v{version}"


def check_clean(repo: Any) -> None:
    """Refuse changed tracked files and untracked files outside ``release/``."""
    changed, untracked = vcs.changed_paths(repo)
    untracked = [p for p in untracked if not p.startswith(f"{RELEASE_DIR}/")]
    if changed or untracked:
        paths = [*changed, *untracked]
        more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
        raise CheckFailed(
            f"{repo.working_tree_dir}: the work tree is dirty ({', '.join(paths[:3])}"
            f"{more}); commit or stash the changes: a release is built only from a "
            "committed tree"
        )


def check_tag_free(repo: Any, tag: str, commit: str) -> bool:
    """True if ``tag`` already points at ``commit`` (a re-run); CheckFailed if elsewhere."""
    existing = vcs.tag_commit(repo, tag)
    if existing is None:
        return False
    if existing != commit:
        raise CheckFailed(
            f"tag {tag} already exists at {existing[:12]}, not at HEAD "
            f"{commit[:12]}; a version is released once: bump [project] version "
            "in pyproject.toml, commit, and release that"
        )
    return True


def release_stamp(root: Path, tag: str) -> Stamp:
    """The stamp of a release of the work tree at ``root``, to be tagged ``tag``."""
    found = git_stamp(root)
    return Stamp(commit=found.commit, tag=tag, dirty=found.dirty)


def build_stamped(
    project: Project, cache: Cache, stamp: Stamp, progress: Progress
) -> PlatformsResult:
    """Both images of ``project`` for every platform it declares, with exactly ``stamp``,
    and each role's image index, as values (nothing written)."""
    return Builder(cache, progress).build_platforms(read_inputs(project, stamp), ROLES)
