"""The build manifest contract (docs/design.md §4.1), with fixed vectors."""

from __future__ import annotations

import hashlib
import json

import pytest

from lockstep.core.digests import canonical_json
from lockstep.core.errors import BadInput
from lockstep.manifest import BuildManifest, Stamp, compute_build_id, load_manifest

INPUTS = {
    "sources": "sha256:aa",
    "python_lock": "sha256:bb",
    "debian_lock": "sha256:cc",
    "builder": "lockstep-build/1",
}
# Written by hand, not by the code under test: keys sorted, no whitespace.
CANONICAL = (
    '{"builder":"lockstep-build/1","debian_lock":"sha256:cc",'
    '"python_lock":"sha256:bb","sources":"sha256:aa"}'
)


def make(**kw: object) -> BuildManifest:
    args: dict[str, object] = dict(
        name="lockstep",
        version="0.1.0",
        inputs=INPUTS,
        executors=("isolated_warm", "cold", "direct"),
        python="3.11.2",
    )
    args.update(kw)
    return BuildManifest(**args)  # type: ignore[arg-type]


def test_canonical_json_vector() -> None:
    assert canonical_json(INPUTS) == CANONICAL.encode()
    assert canonical_json({"é": [1, "ü"]}) == '{"é":[1,"ü"]}'.encode()


def test_build_id_is_sha256_of_canonical_inputs() -> None:
    expected = "sha256:" + hashlib.sha256(CANONICAL.encode()).hexdigest()
    assert compute_build_id(INPUTS) == expected
    assert make().build_id == expected


def test_build_id_ignores_stamp_and_executor_order() -> None:
    a = make()
    b = make(stamp=Stamp("abc", "v0.1.0", False), executors=("direct", "cold", "isolated_warm"))
    assert a.build_id == b.build_id
    assert a.executors == ("cold", "direct", "isolated_warm")


def test_round_trip_through_json() -> None:
    m = make(stamp=Stamp("0" * 40, None, True))
    again = BuildManifest.from_json(m.to_json())
    assert again == m
    data = json.loads(m.to_json())
    assert data["schema"] == "lockstep.manifest/v1"
    assert data["protocol"] == 1
    assert data["stamp"] == {"commit": "0" * 40, "tag": None, "dirty": True}
    assert m.to_json() == canonical_json(data)


def test_the_platform_is_named_but_is_no_input() -> None:
    arm, amd = make(platform="linux/arm64"), make(platform="linux/amd64")
    assert arm.build_id == amd.build_id == make().build_id
    assert json.loads(arm.to_json())["platform"] == "linux/arm64"
    assert BuildManifest.from_json(arm.to_json()) == arm
    assert "platform" not in json.loads(make().to_json())  # a manifest that names none


@pytest.mark.parametrize(
    "change, what",
    [
        ({"build_id": "sha256:" + "0" * 64}, "does not match its inputs"),
        ({"schema": "other/v9"}, "schema"),
        ({"executors": "cold"}, "executors"),
        ({"inputs": {"sources": "sha256:aa"}}, "inputs"),
        ({"version": 1}, "version"),
        ({"stamp": {"commit": 1}}, "stamp"),
        ({"platform": ["linux/arm64"]}, "platform"),
    ],
)
def test_corrupt_manifests_are_refused(change: dict[str, object], what: str) -> None:
    data = json.loads(make().to_json())
    data.update(change)
    with pytest.raises(BadInput, match=what):
        BuildManifest.from_dict(data, "m.json")


def test_load_manifest_errors_name_the_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "none.json"
    with pytest.raises(BadInput, match=str(missing)):
        load_manifest(missing)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BadInput, match="not valid JSON"):
        load_manifest(bad)
    good = tmp_path / "good.json"
    good.write_bytes(make().to_json())
    assert load_manifest(good) == make()
