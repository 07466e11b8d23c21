"""Compile sources to unchecked-hash ``.pyc`` bytes: run as a script by the *image's* python.

``python -P pyc_driver.py`` reads its jobs on stdin: one line of JSON, ``[[dfile, size],
...]``, then the sources' bytes one after the other; it writes one line of JSON,
``{"tag": cache_tag, "sizes": [size or -1, ...]}`` (-1: did not compile), then the
``.pyc`` bytes one after the other. No file is written: the bytes are what
``py_compile.compile(src, dfile=dfile, invalidation_mode=UNCHECKED_HASH)`` writes (the
same calls). Standard library only (it runs in the image's bare interpreter);
``pycompile`` drives it.
"""

import importlib.util
import json
import sys
import warnings
from importlib import _bootstrap_external


def compiled(source: bytes, dfile: str) -> bytes:
    """What py_compile writes for ``source`` named ``dfile``, unchecked-hash, optimize 0."""
    code = compile(source, dfile, "exec", dont_inherit=True, optimize=0)
    pyc: bytes = _bootstrap_external._code_to_hash_pyc(  # type: ignore[attr-defined]
        code, importlib.util.source_hash(source), False
    )
    return pyc


def main() -> int:
    warnings.simplefilter("ignore")
    stdin = sys.stdin.buffer
    jobs = json.loads(stdin.readline())
    outputs: list[bytes | None] = []
    for dfile, size in jobs:
        source = stdin.read(size)
        if len(source) != size:
            raise SystemExit(f"pyc_driver: {dfile}: {len(source)} of {size} bytes on stdin")
        try:
            outputs.append(compiled(source, dfile))
        except Exception:  # Python 2 test data in some packages: skipped, not shipped as pyc
            outputs.append(None)
    header = {
        "tag": sys.implementation.cache_tag,
        "sizes": [-1 if out is None else len(out) for out in outputs],
    }
    out = sys.stdout.buffer
    out.write(json.dumps(header).encode() + b"\n")
    for data in outputs:
        if data is not None:
            out.write(data)
    out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
