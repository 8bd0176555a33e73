"""sha256 verification of input files against a table of known upstream versions.

A file is *known* when its path ends with one of the table's keys (a path relative to a
``/path/to/shared/data``-style root, e.g. ``gsm8k/test.jsonl``, or a vendored file name). A known file whose
hash differs is a :class:`ChecksumMismatchError` naming the file and both hashes; an unknown file is
accepted with a warning printed to stderr. Hashes come from ``/path/to/shared/data/PROVENANCE.json`` and
``data_prep/vendor/PROVENANCE.json``. Check the shared copy by hand with::

    cd /path/to/shared/data && sha256sum -c SHA256SUMS
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from data_prep.errors import ChecksumMismatchError

KNOWN_SHA256: dict[str, str] = {
    # /path/to/shared/data layout (PROVENANCE.json there: repo, commit, path, licence)
    "aime24/test.jsonl": "af2b8bd2aa911b6333ad0df32f3ca05c7ae8ed10f1731f4372c8ae26990bf7ac",
    "aime24_ttrl/test.json": "f52c531f6919731115b491d056be701e760e115d4b1cd5b57f48de2251a85d66",
    "math500/test.jsonl": "35dc41080a3680858b27fa7e0533d2d547825316fc5dafe5d316f4ccc5a06132",
    "minerva_math/test.jsonl": "0e656b430d3a0a1dab6aa853f453ba3805e28e2cabe4fc72486a897cc09d8ba2",
    "gsm8k/test.jsonl": "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14",
    "gsm8k/train.jsonl": "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465",
    "simplerl_zoo/level3to5_train.parquet": "a6ce0b30da9d3be80b0bd8b2925c8707aec6f627af3628c5439241a3b22e7c13",
    "simplerl_zoo/level3to5_test.parquet": "127daa21c7ecf85aa9a04c9acf9e1420246d8b4f458885a00805d50994304b3a",
    "mmlu_pro/test_v2024-05.jsonl": "de3e252c059914c90d06ceebad992cf4721de926a3d32ce2d4e00c24a972dd79",
    # data_prep/vendor (PROVENANCE.json there)
    "aime24_ttrl_test.json": "f52c531f6919731115b491d056be701e760e115d4b1cd5b57f48de2251a85d66",
    "gsm8k_test_first64.jsonl": "136119d82ee01bfc771615e7b057ddab785aa51bf733fdb407d08068a3c1244c",
    "gsm8k_train_first256.jsonl": "69b32f0b4fdd63722f59664a5ce6f95ee2d65ff87af98d05330dcdc3a0cf096e",
}

VERIFIED = "sha256 ok"
UNKNOWN = "unknown file"


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def known_key(path: str | Path) -> str | None:
    """The longest table key that the path ends with (whole path components only), or None."""
    posix = Path(path).resolve().as_posix()
    matches = [key for key in KNOWN_SHA256 if posix == key or posix.endswith("/" + key)]
    return max(matches, key=len) if matches else None


def verify_file(path: str | Path) -> str:
    """Check ``path`` against the table; returns VERIFIED or UNKNOWN, raises ChecksumMismatchError."""
    key = known_key(path)
    if key is None:
        print(f"warning: {path}: not in data_prep's known-sha256 table; accepted unverified", file=sys.stderr)
        return UNKNOWN
    actual = sha256_file(path)
    expected = KNOWN_SHA256[key]
    if actual != expected:
        raise ChecksumMismatchError(str(path), expected, actual)
    return VERIFIED
