"""References, one grammar: registry targets, pinned image references, a spec's bundle
reference and the pin check of deployment files."""

from __future__ import annotations

import pytest

from lockstep.bundles.artifact import parse_bundle_reference
from lockstep.core.errors import BadInput
from lockstep.oci.reference import (
    ReferenceRefused,
    is_loopback,
    looks_like_reference,
    parse_pinned,
    parse_target,
    pin_problem,
)

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("ref", "problem"),
    [
        (f"r.io/a/b@{D}", None),
        (f"127.0.0.1:5000/a/b:1.0@{D}", None),
        ("r.io/a/b:latest", "uses the tag :latest and no digest"),
        ("127.0.0.1:5000/a/b", "has no tag and no digest (it means :latest)"),
        ("r.io/a/b@sha256:abc", "has a malformed digest 'sha256:abc' (expected sha256:<64 hex>)"),
        ("{{ runner_image }}", "is a template placeholder, not a reference"),
        ("", "is empty"),
        (None, "is empty"),
    ],
)
def test_pin_problem(ref: object, problem: str | None) -> None:
    assert pin_problem(ref) == problem


def test_targets_and_references() -> None:
    t = parse_target("127.0.0.1:5000/team/sim")
    assert (t.host, t.repository) == ("127.0.0.1:5000", "team/sim")
    assert t.pinned("lockstep-worker", D) == f"127.0.0.1:5000/team/sim/lockstep-worker@{D}"
    for bad in ("127.0.0.1:5000", "127.0.0.1:5000/Team", "/x", "a b/c"):
        with pytest.raises(BadInput, match="use HOST"):
            parse_target(bad)
    p = parse_pinned(f"r.io:443/a/b:tag@{D}")
    assert (p.host, p.name, p.digest) == ("r.io:443", "a/b", D)
    with pytest.raises(BadInput, match="not pinned"):
        parse_pinned("r.io/a/b:latest")
    assert is_loopback("127.0.0.1:5000") and is_loopback("localhost") and is_loopback("[::1]:80")
    assert not is_loopback("registry.example.com:5000") and not is_loopback("10.0.0.1")


@pytest.mark.parametrize("host", ["a..b:5000", "r.io:", "r.io:123456", "[::1", "r_io"])
def test_one_host_grammar_for_targets_pins_and_bundle_references(host: str) -> None:
    """A host the grammar refuses is refused as a release target, an image pin and a
    bundle reference alike (once two grammars that disagreed)."""
    with pytest.raises(BadInput, match="use HOST"):
        parse_target(f"{host}/team")
    with pytest.raises(BadInput, match="not pinned by digest"):
        parse_pinned(f"{host}/team/x@{D}")
    with pytest.raises(ReferenceRefused, match="HOST/REPO@sha256"):
        parse_bundle_reference(f"{host}/team@{D}")


def test_a_bundle_reference_says_how_to_pin_it() -> None:
    assert str(parse_bundle_reference(f"127.0.0.1:5000/team/sir:v1@{D}")) == (
        f"127.0.0.1:5000/team/sir@{D}"
    )
    with pytest.raises(ReferenceRefused, match="names the tag :v1, which can move"):
        parse_bundle_reference("127.0.0.1:5000/team/sir:v1")
    with pytest.raises(ReferenceRefused, match="has no digest"):
        parse_bundle_reference("127.0.0.1:5000/team/sir")
    assert looks_like_reference("localhost/x") and looks_like_reference("r.io:5000/x")
    assert not looks_like_reference("bundle/dir") and not looks_like_reference("./x/y")
