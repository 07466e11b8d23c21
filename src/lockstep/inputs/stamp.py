"""Stamping: the git facts a stamped build records (commit, tag at HEAD, dirty) and the
commit's time, which becomes the images' ``created``. Never part of the build id.
"""

from __future__ import annotations

from pathlib import Path

from lockstep.core import vcs
from lockstep.manifest import Stamp

PURPOSE = "--stamp"


def git_stamp(root: Path) -> Stamp:
    """Commit, newest tag at HEAD and dirty flag of the work tree holding ``root``."""
    repo = vcs.open_repo(root, PURPOSE)
    commit = vcs.head_commit(repo)
    tags = vcs.tags_at(repo, commit)
    return Stamp(commit=commit, tag=tags[-1] if tags else None, dirty=vcs.is_dirty(repo))


def commit_time(root: Path, commit: str) -> str:
    """The committer time of ``commit`` in the repository holding ``root`` (RFC 3339, UTC)."""
    return vcs.commit_time(vcs.open_repo(root, PURPOSE), commit)
