"""The git facts a release needs and the one git write it makes (the annotated tag)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lockstep.errors import BadInput, CheckFailed

log = logging.getLogger(__name__)

RELEASE_DIR = "release"


def tag_name(version: str) -> str:
    return f"v{version}"


def open_repo(root: Path) -> Any:
    """The git repository holding ``root``; BadInput if there is none or it has no commit."""
    try:
        import git
    except ImportError as exc:
        raise BadInput("releases need gitpython; install lockstep[build]") from exc
    try:
        repo = git.Repo(root, search_parent_directories=True)
        repo.head.commit  # noqa: B018 - raises on a repository without commits
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, ValueError) as exc:
        raise BadInput(
            f"{root}: not a git work tree with a commit; releases are made from a committed tree"
        ) from exc
    return repo


def head_commit(repo: Any) -> str:
    return str(repo.head.commit.hexsha)


def check_clean(repo: Any) -> None:
    """Refuse changed tracked files and untracked files outside ``release/``."""
    changed = sorted(
        {d.a_path for d in repo.index.diff(None)} | {d.a_path for d in repo.index.diff("HEAD")}
    )
    untracked = sorted(p for p in repo.untracked_files if not p.startswith(f"{RELEASE_DIR}/"))
    if changed or untracked:
        paths = [*changed, *untracked]
        more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
        raise CheckFailed(
            f"{repo.working_tree_dir}: the work tree is dirty ({', '.join(paths[:3])}"
            f"{more}); commit or stash the changes: a release is built only from a "
            "committed tree"
        )


def tag_commit(repo: Any, tag: str) -> str | None:
    """The commit ``tag`` points at, or None if there is no such tag."""
    ref = next((t for t in repo.tags if t.name == tag), None)
    return None if ref is None else str(ref.commit.hexsha)


def tag_message(repo: Any, tag: str) -> str | None:
    ref = next((t for t in repo.tags if t.name == tag), None)
    if ref is None or ref.tag is None:
        return None
    return str(ref.tag.message)


def check_tag_free(repo: Any, tag: str, commit: str) -> bool:
    """True if ``tag`` already points at ``commit`` (a re-run); CheckFailed if elsewhere."""
    existing = tag_commit(repo, tag)
    if existing is None:
        return False
    if existing != commit:
        raise CheckFailed(
            f"tag {tag} already exists at {existing[:12]}, not at HEAD "
            f"{commit[:12]}; a version is released once: bump [project] version "
            "in pyproject.toml, commit, and release that"
        )
    return True


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
