"""Git access: the facts the build stamps and the release checks, and the one git write
(an annotated tag). gitpython is imported only when a function needs it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lockstep.core.errors import BadInput

log = logging.getLogger(__name__)


def open_repo(root: Path, purpose: str) -> Any:
    """The git repository holding ``root``; BadInput naming ``purpose`` if there is none
    or it has no commit."""
    try:
        import git
    except ImportError as exc:
        raise BadInput(f"{purpose} needs gitpython; install lockstep[build]") from exc
    try:
        repo = git.Repo(root, search_parent_directories=True)
        repo.head.commit  # noqa: B018 - raises on a repository without commits
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, ValueError) as exc:
        raise BadInput(f"{root}: {purpose} needs a git work tree with at least one commit") from exc
    return repo


def head_commit(repo: Any) -> str:
    return str(repo.head.commit.hexsha)


def commit_time(repo: Any, commit: str) -> str:
    """The committer date of ``commit`` in UTC, RFC 3339 (``2024-05-01T12:00:00Z``)."""
    import datetime

    seconds = int(repo.commit(commit).committed_date)
    when = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def tags_at(repo: Any, commit: str) -> list[str]:
    """The names of the tags pointing at ``commit``, sorted."""
    return sorted(t.name for t in repo.tags if t.commit.hexsha == commit)


def is_dirty(repo: Any) -> bool:
    """Whether tracked files differ from HEAD (untracked files do not count)."""
    return bool(repo.is_dirty(untracked_files=False))


def changed_paths(repo: Any) -> tuple[list[str], list[str]]:
    """(tracked files changed against the index or HEAD, untracked files), each sorted."""
    changed = sorted(
        {d.a_path for d in repo.index.diff(None)} | {d.a_path for d in repo.index.diff("HEAD")}
    )
    return changed, sorted(repo.untracked_files)


def tag_commit(repo: Any, tag: str) -> str | None:
    """The commit ``tag`` points at, or None if there is no such tag."""
    ref = next((t for t in repo.tags if t.name == tag), None)
    return None if ref is None else str(ref.commit.hexsha)


def tag_message(repo: Any, tag: str) -> str | None:
    ref = next((t for t in repo.tags if t.name == tag), None)
    if ref is None or ref.tag is None:
        return None
    return str(ref.tag.message)


def create_tag(repo: Any, tag: str, commit: str, message: str) -> None:
    """The annotated tag; BadInput if git cannot make it (e.g. no committer identity)."""
    import git

    try:
        repo.create_tag(tag, ref=commit, message=message)
    except git.GitCommandError as exc:
        detail = (exc.stderr or "").strip().splitlines()
        raise BadInput(
            f"git could not create tag {tag} ({detail[-1] if detail else exc}); "
            "set user.name and user.email (git config) and run the release again"
        ) from exc
    log.debug("tagged %s at %s", tag, commit[:12])
