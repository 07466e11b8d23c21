"""Compile sources to unchecked-hash ``.pyc`` files: run as a script by the *image's* python.

``python -P pyc_driver.py JOBS.json``: the file holds ``{"jobs": [[source, dfile,
output], ...]}``; prints ``{"tag": cache_tag, "failed": [index, ...]}``. Standard
library only (it runs in the image's bare interpreter); ``pycompile`` drives it.
"""

import json
import py_compile
import sys
import warnings


def main(job_file: str) -> int:
    warnings.simplefilter("ignore")
    with open(job_file, encoding="utf-8") as f:
        jobs = json.load(f)["jobs"]
    failed = []
    for i, (src, dfile, out) in enumerate(jobs):
        try:
            py_compile.compile(
                src,
                cfile=out,
                dfile=dfile,
                doraise=True,
                optimize=0,
                invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
            )
        except Exception:  # Python 2 test data in some packages: skipped, not shipped as pyc
            failed.append(i)
    print(json.dumps({"tag": sys.implementation.cache_tag, "failed": failed}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
