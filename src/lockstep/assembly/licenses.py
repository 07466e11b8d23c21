"""Licences for the SBOM: what packages declare, as normalised SPDX licence expressions.

Parsing, validating and spelling is ``license-expression`` (the ScanCode project's
library, with the SPDX licence list): ``GPL-2.0+`` becomes ``GPL-2.0-or-later``,
``Ms-PL`` ``MS-PL``, ``bsd-3-clause`` ``BSD-3-Clause``, and ``AND``/``OR``/``WITH``
keep SPDX precedence. What it does not know becomes ``LicenseRef-<name>``, with the
licence's text when the package ships it (or a pointer to where it is said).

Two sources spell licences their own way:

- Debian's machine-readable copyright files (DEP-5) use SPDX-like short names with
  two rules of their own (copyright-format 1.0, "License specification"): a trailing
  ``+`` means "or any later version", and a version may drop its ``.0``
  (``GPL-2+``, ``Apache-2``); ``Expat`` is their name of the MIT licence. ``or``,
  ``and`` and commas join names.
- Wheels (core metadata): ``License-Expression`` (PEP 639) is an SPDX expression;
  else the ``License`` field if it is one short name; else the licence classifiers'
  names. A classifier without a version (``BSD License``) names no SPDX licence.
"""

from __future__ import annotations

import email.message
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

NOASSERTION_TEXT = "NOASSERTION"
# DEP-5's own short name for the MIT licence (copyright-format 1.0, short names table).
DEP5_EXPAT = "Expat"


@dataclass(frozen=True)
class License:
    """An SPDX licence expression and the texts of the ``LicenseRef-`` ids it uses."""

    expression: str  # "NOASSERTION" when nothing is known
    refs: Mapping[str, str]  # LicenseRef-… -> extracted text


NOASSERTION = License(NOASSERTION_TEXT, {})


@functools.cache
def _licensing() -> Any:
    from license_expression import get_spdx_licensing

    return get_spdx_licensing()


def license_ref(name: str) -> str:
    return "LicenseRef-" + (re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-") or "unnamed")


def _dep5_key(key: str) -> str:
    """A DEP-5 short name in the spelling license-expression knows: ``GPL-2+`` ->
    ``GPL-2.0+``, ``Apache-2`` -> ``Apache-2.0``, ``Expat`` -> ``MIT``."""
    if key.lower() == DEP5_EXPAT.lower():
        return "MIT"
    match = re.fullmatch(r"(.+-\d+)(\+?)", key)
    return f"{match.group(1)}.0{match.group(2)}" if match else key


def _known(key: str, dep5: bool) -> str | None:
    """The SPDX id of one licence or exception name, or None: as written, in the DEP-5
    spellings when ``dep5``, or with its spaces as hyphens (``Apache 2.0``)."""
    licensing = _licensing()
    for candidate in (_dep5_key(key) if dep5 else key, key.replace(" ", "-")):
        try:
            parsed = licensing.parse(candidate)
        except Exception:  # license-expression raises its own and builtins
            continue
        if parsed is not None and not licensing.unknown_license_keys(parsed):
            return str(parsed.render())
    return None


def normalise(text: str, texts: Mapping[str, str], where: str, *, dep5: bool = False) -> License:
    """``text`` (one licence name or an expression) as a normalised SPDX expression.

    Each name license-expression does not know (after the DEP-5 spellings when
    ``dep5``) becomes ``LicenseRef-<name>``, its text from ``texts`` or a pointer to
    ``where``; so does ``X WITH E`` unless both are known, and an expression that
    does not parse is one ``LicenseRef``."""
    from license_expression import ExpressionError, LicenseSymbol, LicenseWithExceptionSymbol

    licensing = _licensing()
    source = " ".join(text.replace(",", " ").split())
    if not source:
        return NOASSERTION
    refs: dict[str, str] = {}

    def ref_for(name: str) -> str:
        ref = license_ref(name)
        refs[ref] = texts.get(name) or f"{name}: see {where}"
        return ref

    whole = _known(source, dep5)
    if whole is not None:
        return License(whole, {})
    try:
        parsed = licensing.parse(source, validate=False)
        if parsed is None:
            return NOASSERTION
        subs = {}
        for symbol in licensing.license_symbols(parsed, unique=True, decompose=False):
            if isinstance(symbol, LicenseWithExceptionSymbol):
                lic = _known(symbol.license_symbol.key, dep5)
                exc = _known(symbol.exception_symbol.key, dep5)
                name = f"{symbol.license_symbol.key} WITH {symbol.exception_symbol.key}"
                known = f"{lic} WITH {exc}" if lic and exc else None
            else:
                name = symbol.key
                known = _known(name, dep5)
            subs[symbol] = LicenseSymbol(known or ref_for(name))
        rendered = str(parsed.subs(subs).render())
    except (ExpressionError, TypeError, ValueError):
        refs.clear()
        return License(ref_for(source), dict(refs))
    return License(rendered, refs)


def expression_of(names: Iterable[str], texts: Mapping[str, str], where: str) -> License:
    """``A AND B``: every distinct DEP-5 licence name (which may itself be an
    expression, ``GPL-2+ or Artistic``), each normalised."""
    found = [normalise(n, texts, where, dep5=True) for n in sorted({n.strip() for n in names})]
    parts = sorted({f.expression for f in found if f.expression != NOASSERTION_TEXT})
    if not parts:
        return NOASSERTION
    joined = " AND ".join(f"({p})" if " OR " in p and len(parts) > 1 else p for p in parts)
    return License(joined, {k: v for f in found for k, v in f.refs.items()})


def paragraphs(text: str) -> list[dict[str, str]]:
    """RFC 822-style paragraphs (Debian control and DEP-5 copyright files)."""
    out: list[dict[str, str]] = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
        if fields:
            out.append(fields)
    return out


def copyright_license(text: str, where: str) -> License:
    """The licences a DEP-5 (machine-readable) copyright file names; NOASSERTION for
    a free-form one (glibc, python3.11, krb5 in bookworm)."""
    if not text.startswith("Format:"):
        return NOASSERTION
    found = paragraphs(text)
    names = [p["license"].split("\n", 1)[0] for p in found if "files" in p and "license" in p]
    texts = {
        p["license"].split("\n", 1)[0].strip(): p["license"].partition("\n")[2]
        for p in found
        if "files" not in p and "license" in p and "\n" in p["license"]
    }
    return expression_of(names, texts, where)


def wheel_license(meta: email.message.Message, where: str) -> License:
    """``License-Expression`` (PEP 639); else the ``License`` field if it is one short
    line; else the licence classifiers' last components, joined with AND."""
    expression = (meta.get("License-Expression") or "").strip()
    if expression:
        return normalise(expression, {}, where)
    field = (meta.get("License") or "").strip()
    if field and "\n" not in field and len(field) < 64:
        return normalise(field, {}, where)
    named = sorted(
        {
            c.rsplit("::", 1)[-1].strip().removesuffix(" License")
            for c in meta.get_all("Classifier") or []
            if c.startswith("License ::") and c.count("::") >= 2
        }
    )
    if not named:
        return NOASSERTION
    found = [normalise(n, {}, where) for n in named]
    return License(
        " AND ".join(sorted({f.expression for f in found})),
        {k: v for f in found for k, v in f.refs.items()},
    )
