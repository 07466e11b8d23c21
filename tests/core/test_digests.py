"""Digests with fixed vectors: each expected value is written out, not computed by the code."""

from __future__ import annotations

import pytest

from lockstep.core.digests import (
    TreeFile,
    canonical_json,
    hex_of,
    is_digest,
    of_hex,
    sha256_digest,
    tree_digest,
)

EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"  # sha256 of b""


def test_canonical_json_sorts_keys_without_whitespace() -> None:
    assert canonical_json({"b": [1, {"d": 2, "c": "é"}], "a": None}) == (
        '{"a":null,"b":[1,{"c":"é","d":2}]}'.encode()
    )


def test_sha256_strings() -> None:
    assert sha256_digest(b"") == "sha256:" + EMPTY
    assert of_hex(EMPTY) == "sha256:" + EMPTY
    assert hex_of("sha256:" + EMPTY) == EMPTY
    assert is_digest("sha256:" + EMPTY)


@pytest.mark.parametrize(
    "bad",
    ["sha256:abc", "md5:" + EMPTY, EMPTY, "sha256:" + EMPTY.upper(), "sha256:" + "g" * 64, ""],
)
def test_malformed_digests_are_refused(bad: str) -> None:
    assert not is_digest(bad)
    with pytest.raises(ValueError, match="not a sha256 digest"):
        hex_of(bad)


def test_tree_digest_covers_path_exec_bit_and_content_only() -> None:
    files = [TreeFile("b.py", False, b""), TreeFile("a/x.sh", True, b"")]
    # sha256sum of '[["a/x.sh","x","<EMPTY>"],["b.py","-","<EMPTY>"]]' (EMPTY spelled out).
    expected = "sha256:49aa6579274cb75c323b1539ee6f01087e076666115418ec71dae831983c94b1"
    assert tree_digest(files) == expected
    assert tree_digest(reversed(files)) == expected  # order does not matter
    assert tree_digest([files[0], TreeFile("a/x.sh", False, b"")]) != expected  # exec bit does
    assert tree_digest([files[0], TreeFile("a/x.sh", True, b"\n")]) != expected  # content does
