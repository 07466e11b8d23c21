"""The release build: both images, stamped with the commit and the release tag.

The release tag is created only at the end of a release, so at build time git
knows no tag at HEAD, while at verify time the worktree sits at the tag. So
that both builds stamp the same bytes, the stamp names the release tag
explicitly in both: ``{"commit": HEAD, "tag": "v<version>", "dirty": false}``.
"""

from __future__ import annotations

from pathlib import Path

from lockstep.build.builder import Builder, BuildResult, Progress, git_stamp
from lockstep.build.cache import Cache
from lockstep.manifest import Stamp
from lockstep.project import ROLES, Project


def release_stamp(root: Path, tag: str) -> Stamp:
    """The stamp of a release of the work tree at ``root``, to be tagged ``tag``."""
    found = git_stamp(root)
    return Stamp(commit=found.commit, tag=tag, dirty=found.dirty)


def build_stamped(
    project: Project, cache: Cache, out_dir: Path, stamp: Stamp, progress: Progress
) -> BuildResult:
    """Both images of ``project`` with exactly ``stamp``, archives in ``out_dir``."""
    return Builder(project, cache, progress).build(ROLES, out_dir, stamp=stamp)
