"""The release build: both images, stamped with the commit and the release tag.

The release tag is created only at the end of a release, so at build time git
knows no tag at HEAD, while at verify time the worktree sits at the tag. So
that both builds stamp the same bytes, the stamp names the release tag
explicitly in both: ``{"commit": HEAD, "tag": "v<version>", "dirty": false}``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from lockstep.build import builder as builder_module
from lockstep.build.builder import Builder, BuildResult, Progress
from lockstep.build.cache import Cache
from lockstep.manifest import Stamp
from lockstep.project import ROLES, Project


@contextlib.contextmanager
def _stamp_as(stamp: Stamp) -> Iterator[None]:
    # Builder.build(stamp=True) asks git_stamp(); until it takes a Stamp value,
    # this swaps in the release's stamp for the one build call.
    original = builder_module.git_stamp
    builder_module.git_stamp = lambda root: stamp
    try:
        yield
    finally:
        builder_module.git_stamp = original


def release_stamp(root: Path, tag: str) -> Stamp:
    """The stamp of a release of the work tree at ``root``, to be tagged ``tag``."""
    found = builder_module.git_stamp(root)
    return Stamp(commit=found.commit, tag=tag, dirty=found.dirty)


def build_stamped(project: Project, cache: Cache, out_dir: Path, stamp: Stamp,
                  progress: Progress) -> BuildResult:
    """Both images of ``project`` with exactly ``stamp``, archives in ``out_dir``."""
    with _stamp_as(stamp):
        return Builder(project, cache, progress).build(ROLES, out_dir, stamp=True)
