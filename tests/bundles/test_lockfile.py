"""A bundle's declared requirements and its lock, as plain data (no index, no pex)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lockstep.bundles.lockfile import (
    env_key,
    parse_lock,
    platforms_problem,
    read_declared,
    stale_problem,
)
from lockstep.core.digests import canonical_json, sha256_digest
from lockstep.core.wheels import parse_wheel_name, unsafe_member
from tests.fixtures.wheels import make_wheel, wheel_entry, write_lock


def test_requirements_from_pyproject_or_requirements_txt(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\ndependencies = ["numpy>=2,  <3", "scipy"]\n'
    )
    declared, problems = read_declared(tmp_path)
    assert problems == [] and declared is not None
    assert (declared.file, declared.requirements) == ("pyproject.toml", ("numpy>=2, <3", "scipy"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "requirements.txt").write_text("# deps\nnumpy==2.4.6  # pinned\n\nscipy\n")
    declared, problems = read_declared(other)
    assert declared is not None and declared.requirements == ("numpy==2.4.6", "scipy")
    none = tmp_path / "none"
    none.mkdir()
    assert read_declared(none) == (None, [])


@pytest.mark.parametrize(
    ("line", "what"),
    [
        ("demo @ git+https://github.com/x/demo", "URL or VCS"),
        ("git+https://github.com/x/demo#egg=demo", "URL or VCS"),
        ("https://files.example/demo-1.0.tar.gz", "URL or VCS"),
        ("./vendor/demo", "local path"),
        ("-e .", "pip option"),
        ("--index-url https://evil.example/simple", "pip option"),
    ],
)
def test_vcs_url_path_and_option_requirements_are_refused(
    tmp_path: Path, line: str, what: str
) -> None:
    (tmp_path / "requirements.txt").write_text(line + "\n")
    _, problems = read_declared(tmp_path)
    [(file, problem)] = problems
    assert file == str(tmp_path / "requirements.txt") and what in problem


def test_both_files_declaring_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\ndependencies = ["a"]\n')
    (tmp_path / "requirements.txt").write_text("b\n")
    declared, problems = read_declared(tmp_path)
    assert declared is None and "both pyproject.toml and requirements.txt" in problems[0][1]


def test_a_written_lock_reads_back_clean_and_stale_is_seen(tmp_path: Path) -> None:
    data = make_wheel()
    raw = write_lock(tmp_path, [wheel_entry(data)])
    lock, problems = parse_lock(raw, "x")
    assert problems == [] and lock is not None
    assert [w.project for w in lock.wheels] == ["demo"]
    declared, _ = read_declared(tmp_path)
    assert stale_problem(declared, lock) == ""
    (tmp_path / "requirements.txt").write_text("demo==1.0\nextra\n")
    declared, _ = read_declared(tmp_path)
    assert "older than the requirements" in stale_problem(declared, lock)
    assert env_key("sha256:" + "a" * 64, lock.digest) != env_key("sha256:" + "b" * 64, lock.digest)


def _edited(tmp_path: Path, **changes: str) -> list[str]:
    raw = write_lock(tmp_path, [wheel_entry(make_wheel())])
    body = json.loads(raw)
    [part] = body["platforms"].values()
    part["wheels"][0].update(changes)
    _, problems = parse_lock(json.dumps(body).encode(), "x")
    return problems


def test_hand_edits_sdists_vcs_and_other_platforms_are_problems(tmp_path: Path) -> None:
    problems = _edited(tmp_path, sha256="0" * 64)
    assert problems == [
        "its content_digest does not match its content: the lock was edited by hand"
    ]
    problems = _edited(
        tmp_path,
        filename="demo-1.0.tar.gz",
        url="https://files.example/demo-1.0.tar.gz",
    )
    assert any("is not a wheel (an sdist" in p for p in problems)
    problems = _edited(tmp_path, url="git+https://github.com/x/demo")
    assert any("is not https" in p for p in problems)
    mac = "demo-1.0-cp312-cp312-macosx_11_0_arm64.whl"
    problems = _edited(tmp_path, filename=mac, url=f"https://files.example/{mac}")
    assert any("is not for the image's platform" in p for p in problems)
    problems = _edited(tmp_path, project="tornado", version="6.6.1")
    assert any("the image provides tornado 6.6.1" in p for p in problems)


def test_one_lock_holds_each_platform_s_wheels_and_a_pure_wheel_once(tmp_path: Path) -> None:
    pure = wheel_entry(make_wheel("pure"), "pure")
    amd = wheel_entry(make_wheel("native", "1.0"), "native")
    arm = wheel_entry(make_wheel("native", "1.0", {"native/__init__.py": b"ARM = 1\n"}), "native")
    raw = write_lock(
        tmp_path, [], ("native", "pure"),
        platforms={"linux/arm64": [arm, pure], "linux/amd64": [amd, pure]},
    )  # fmt: skip
    lock, problems = parse_lock(raw, "x")
    assert problems == [] and lock is not None
    assert list(lock.platforms) == ["linux/amd64", "linux/arm64"]
    on_arm = lock.on("linux/arm64")
    assert on_arm is not None and [w.sha256 for w in on_arm.wheels] == [arm.sha256, pure.sha256]
    assert {w.sha256 for w in lock.wheels} == {amd.sha256, arm.sha256, pure.sha256}  # pure once
    assert lock.on("linux/s390x") is None
    # Preflight's line for a cluster with a platform the lock lacks names it and its workers.
    one = parse_lock(write_lock(tmp_path / "one", [amd], ("native",)), "x")[0]
    assert one is not None
    assert platforms_problem(one, {"linux/amd64": ["tcp://a:1"]}, "b") == ""
    mixed = {"linux/amd64": ["tcp://a:1"], "linux/arm64": ["tcp://b:2", "tcp://c:3"]}
    assert platforms_problem(one, mixed, "b") == (
        "locked for linux/amd64 only, but the cluster has worker(s) on linux/arm64 "
        "(linux/arm64: tcp://b:2, tcp://c:3); lock it for every platform of the image: run "
        "`lockstep bundle lock b` in a checkout of this build (or with --image of its index)"
    )


def test_a_lock_of_one_platform_by_an_older_lockstep_or_an_unknown_platform_is_refused(
    tmp_path: Path,
) -> None:
    old = {"schema": "lockstep.bundle-lock/v1", "wheels": []}
    lock, problems = parse_lock(json.dumps(old).encode(), "x")
    assert lock is None and problems == [
        "schema is 'lockstep.bundle-lock/v1', a lock of one platform by an older lockstep; "
        "lock it again for every platform (lockstep.bundle-lock/v2)"
    ]
    body = json.loads(write_lock(tmp_path, [wheel_entry(make_wheel())]))
    body["platforms"]["linux/s390x"] = body["platforms"].pop("linux/amd64")
    body.pop("content_digest")
    body["content_digest"] = sha256_digest(canonical_json(body))
    lock, problems = parse_lock(json.dumps(body).encode(), "x")
    assert lock is None and problems == [
        "linux/s390x: not a platform lockstep builds (linux/amd64, linux/arm64)"
    ]


def test_wheel_names_and_member_paths() -> None:
    name = parse_wheel_name(
        "numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"
    )
    assert name is not None and name.project == "numpy" and name.version == "2.4.6"
    assert name.tags == {
        "cp311-cp311-manylinux_2_27_x86_64",
        "cp311-cp311-manylinux_2_28_x86_64",
    }
    assert parse_wheel_name("numpy-2.4.6.tar.gz") is None
    assert unsafe_member("pkg/mod.py") == ""
    for bad in ("../x", "a/../../x", "/etc/passwd", "C:/x", "a\\b", "a//b"):
        assert unsafe_member(bad), bad
