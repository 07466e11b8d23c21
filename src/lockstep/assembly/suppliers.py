"""Suppliers for the SBOM: who distributes each package, as SPDX actors (Person or Organization).

SPDX 2.3 §7.5 (PackageSupplier): ``Person: NAME (EMAIL)`` or ``Organization: NAME
(EMAIL)``, the email optional; the NTIA minimum elements want one for every
component. Where it comes from:

- a ``.deb``: ``Organization: Debian`` (the archive it was fetched from);
- a wheel: its core metadata, the maintainer first, else the author — a name from
  ``Maintainer``/``Author`` or the display name of the first address of
  ``Maintainer-email``/``Author-email``, and that address — as ``Person:`` (the core
  metadata fields name people); with neither, ``Organization: <host>`` of the index
  the lock fetched it from;
- lockstep's own app and images: ``[project] maintainers``, else ``authors``
  (PEP 621), likewise; else the host of ``[project.urls] Source``.
"""

from __future__ import annotations

import email.message
import email.utils
import re
import urllib.parse
from collections.abc import Iterable

DEBIAN = "Organization: Debian"


def _clean(text: str) -> str:
    """A name without the characters the SPDX actor syntax gives a meaning to."""
    return " ".join(re.sub(r"[()<>\"]", " ", text).split())


def actor(kind: str, name: str, address: str = "") -> str:
    """``Person: NAME (EMAIL)`` / ``Organization: NAME``."""
    name = _clean(name)
    return f"{kind}: {name} ({address})" if address else f"{kind}: {name}"


def from_people(names: str, addresses: str) -> str | None:
    """``Person: …`` from one pair of core-metadata fields (``Author``, ``Author-email``),
    or None if both are empty."""
    pairs = [(n.strip(), a.strip()) for n, a in email.utils.getaddresses([addresses])]
    pairs = [(n, a) for n, a in pairs if n or "@" in a]
    name = _clean(names)
    if name:
        return actor("Person", name, next((a for _, a in pairs if "@" in a), ""))
    if pairs:
        first_name, first_address = pairs[0]
        return actor("Person", first_name or first_address, first_address)
    return None


def wheel_supplier(meta: email.message.Message, url: str) -> str:
    """The supplier of a wheel (see the module doc)."""
    for names, addresses in (("Maintainer", "Maintainer-email"), ("Author", "Author-email")):
        found = from_people(meta.get(names) or "", meta.get(addresses) or "")
        if found:
            return found
    return index_supplier(url)


def index_supplier(url: str) -> str:
    return actor("Organization", urllib.parse.urlsplit(url).hostname or "NOASSERTION")


def project_supplier(people: Iterable[tuple[str, str]], source_url: str) -> str:
    """The supplier of lockstep's own app and images: the first PEP 621 entry (name,
    email) of maintainers-then-authors, else the source URL's host."""
    for name, address in people:
        found = from_people(name, address)
        if found:
            return found
    return index_supplier(source_url) if source_url else "NOASSERTION"
