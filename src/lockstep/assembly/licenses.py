"""Licences: what a Debian ``copyright`` file or a wheel's ``METADATA`` says, as an SPDX
licence expression (a known SPDX id, or a ``LicenseRef-`` with its text).

Debian's DEP-5 short names and a few PyPI spellings and classifiers map to SPDX
ids; anything else becomes a ``LicenseRef-<name>``. Used by the SBOM (``sbom``).
"""

from __future__ import annotations

import email.message
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Debian's copyright short names (and a few PyPI spellings) -> SPDX licence ids.
_KNOWN = {
    "apache-2": "Apache-2.0",
    "apache-2.0": "Apache-2.0",
    "apache 2.0": "Apache-2.0",
    "artistic-2.0": "Artistic-2.0",
    "bsd-2-clause": "BSD-2-Clause",
    "bsd-3-clause": "BSD-3-Clause",
    "bsd-4-clause": "BSD-4-Clause",
    "cc0-1.0": "CC0-1.0",
    "expat": "MIT",
    "mit": "MIT",
    "gfdl-1.2+": "GFDL-1.2-or-later",
    "gfdl-1.3+": "GFDL-1.3-or-later",
    "gpl-1+": "GPL-1.0-or-later",
    "gpl-2": "GPL-2.0-only",
    "gpl-2+": "GPL-2.0-or-later",
    "gpl-3": "GPL-3.0-only",
    "gpl-3+": "GPL-3.0-or-later",
    "isc": "ISC",
    "lgpl-2": "LGPL-2.0-only",
    "lgpl-2+": "LGPL-2.0-or-later",
    "lgpl-2.1": "LGPL-2.1-only",
    "lgpl-2.1+": "LGPL-2.1-or-later",
    "lgpl-3": "LGPL-3.0-only",
    "lgpl-3+": "LGPL-3.0-or-later",
    "mpl-2.0": "MPL-2.0",
    "openssl": "OpenSSL",
    "psf-2": "PSF-2.0",
    "psf-2.0": "PSF-2.0",
    "python": "Python-2.0",
    "python-2.0": "Python-2.0",
    "sleepycat": "Sleepycat",
    "x11": "X11",
    "zlib": "Zlib",
}
_SPDX_IDS = frozenset(_KNOWN.values())
_CLASSIFIERS = {
    "License :: OSI Approved :: MIT License": "MIT",
    "License :: OSI Approved :: Apache Software License": "Apache-2.0",
    "License :: OSI Approved :: ISC License (ISCL)": "ISC",
    "License :: OSI Approved :: Python Software Foundation License": "PSF-2.0",
}
_OPERATORS = {"and": "AND", "or": "OR"}


def license_ref(name: str) -> str:
    return "LicenseRef-" + (re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-") or "unnamed")


@dataclass(frozen=True)
class License:
    """An SPDX licence expression and the texts of the ``LicenseRef-`` ids it uses."""

    expression: str  # "NOASSERTION" when nothing is known
    refs: Mapping[str, str]  # LicenseRef-… -> extracted text


NOASSERTION = License("NOASSERTION", {})


def expression_of(names: Iterable[str], texts: Mapping[str, str], where: str) -> License:
    """``A AND B``: every distinct licence name, each a known SPDX id or a LicenseRef.

    A Debian name may combine others (``GPL-2+ or Artistic``); ``and``/``or``
    become SPDX operators, anything not known becomes ``LicenseRef-<name>`` with
    its text from the copyright file (or a pointer to it)."""
    parts: list[str] = []
    refs: dict[str, str] = {}
    for name in sorted({n.strip() for n in names if n.strip()}):
        tokens = [t for t in re.split(r"[\s,]+", name) if t]
        if len(tokens) > 1 and all(
            t.lower() in _OPERATORS or t.lower() in _KNOWN or t in _SPDX_IDS for t in tokens
        ):
            words = [_OPERATORS.get(t.lower()) or _KNOWN.get(t.lower()) or t for t in tokens]
            if words[0] not in ("AND", "OR") and words[-1] not in ("AND", "OR"):
                parts.append("(" + " ".join(words) + ")")
                continue
        known = _KNOWN.get(name.lower()) or (name if name in _SPDX_IDS else None)
        if known:
            parts.append(known)
            continue
        ref = license_ref(name)
        refs[ref] = texts.get(name) or f"{name}: see {where}"
        parts.append(ref)
    if not parts:
        return NOASSERTION
    unique = sorted(set(parts))
    return License(" AND ".join(unique), refs)


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
    stanzas = paragraphs(text)
    names = [p["license"].split("\n", 1)[0] for p in stanzas if "files" in p and "license" in p]
    texts = {
        p["license"].split("\n", 1)[0].strip(): p["license"].partition("\n")[2]
        for p in stanzas
        if "files" not in p and "license" in p and "\n" in p["license"]
    }
    return expression_of(names, texts, where)


def wheel_license(meta: email.message.Message, where: str) -> License:
    """``License-Expression`` (PEP 639) if every id in it is known; else the ``License``
    field if it is one known name; else the classifiers; else a LicenseRef."""
    expression = (meta.get("License-Expression") or "").strip()
    if expression:
        tokens = re.findall(r"[A-Za-z0-9.+-]+", expression)
        if all(t in _SPDX_IDS or t in ("AND", "OR", "WITH") for t in tokens):
            return License(expression, {})
        return expression_of([expression], {}, where)
    field = (meta.get("License") or "").strip()
    if field and "\n" not in field and len(field) < 64:
        return expression_of([field], {}, where)
    classified = sorted(
        {
            _CLASSIFIERS.get(c, "")
            for c in meta.get_all("Classifier") or []
            if c.startswith("License")
        }
    )
    if classified and all(classified):
        return License(" AND ".join(classified), {})
    named = [
        c.rsplit("::", 1)[-1].strip()
        for c in meta.get_all("Classifier") or []
        if c.startswith("License")
    ]
    if named:
        return expression_of(named, {}, where)
    return NOASSERTION
