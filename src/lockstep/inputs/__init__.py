"""The pinned inputs of a build: declared sources, the Debian lock, the Python lock.

Locking (resolving against the mirror or the index) and fetching locked
files (verified by size and sha256) live here; nothing here assembles an
image (that is ``lockstep.assembly``).
"""
