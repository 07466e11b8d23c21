"""The tests' scratch trees carry nothing of the checkout they are made from but its commit.

A user's checkout gets a release tag (the README's ``lockstep release 0.1.0``),
edited files and earlier builds' outputs; ``tests.fixtures.build.clone`` makes
every scratch tree the suite builds or releases from, so none of that may reach
one. The proof runs on a copy of this checkout given all three, never on the
checkout itself.
"""

from __future__ import annotations

from pathlib import Path

from lockstep.inputs.stamp import git_stamp
from lockstep.manifest import Stamp
from tests.fixtures.build import clone, git


def test_a_scratch_tree_has_no_tag_edit_or_output_of_its_checkout(tmp_path: Path) -> None:
    user = clone(tmp_path / "user")  # the user's checkout, made from this one
    git(user, "-c", "user.name=U", "-c", "user.email=u@example.invalid", "tag", "-a", "v0.1.0",
        "-m", "release 0.1.0")  # fmt: skip
    git(user, "tag", "light")
    readme = (user / "README.md").read_text()
    (user / "README.md").write_text(readme + "\nan edit\n")
    (user / "out").mkdir()
    (user / "out" / "worker.tar").write_bytes(b"an earlier build")
    (user / "release").mkdir(exist_ok=True)
    (user / "release" / "0.1.0.json").write_text("{}\n")
    head = git(user, "rev-parse", "HEAD")
    assert git_stamp(user) == Stamp(commit=head, tag="v0.1.0", dirty=True)  # the state is there

    scratch = clone(tmp_path / "scratch", source=user)

    assert git(scratch, "tag", "--list") == ""
    assert git(scratch, "status", "--porcelain", "--ignored") == ""
    assert (scratch / "README.md").read_text() == readme
    assert not (scratch / "out").exists()
    assert not (scratch / "release" / "0.1.0.json").exists()
    assert git_stamp(scratch) == Stamp(commit=head, tag=None, dirty=False)
    # and a later fetch from the checkout brings no tag either
    git(scratch, "fetch", "-q", "origin")
    assert git(scratch, "tag", "--list") == ""
