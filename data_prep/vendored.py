"""Small data files shipped inside the package, for demos on machines without a shared data root.

They live in ``data_prep/vendor/`` with a ``PROVENANCE.json`` (source repository, commit, path, rows,
sha256, licence) and the upstream licences in ``vendor/licenses/``. Convert them with::

    python -m data_prep gsm8k --src vendor --out data/gsm8k_demo
    python -m data_prep aime24_ttrl --src vendor --out data/aime24
"""

from __future__ import annotations

from pathlib import Path

VENDOR_DIR = Path(__file__).resolve().parent / "vendor"

VENDORED_FILES: dict[str, str] = {
    "aime24_ttrl_test": "aime24_ttrl_test.json",  # all 30 rows of TTRL's AIME-TTT test.json
    "gsm8k_test_first64": "gsm8k_test_first64.jsonl",  # first 64 rows of GSM8K test.jsonl
    "gsm8k_train_first256": "gsm8k_train_first256.jsonl",  # first 256 rows of GSM8K train.jsonl
    "provenance": "PROVENANCE.json",
    "license_ttrl": "licenses/TTRL_LICENSE",
    "license_gsm8k": "licenses/grade-school-math_LICENSE",
}


def vendored_path(name: str) -> Path:
    """Path of a vendored file by key (``"gsm8k_test_first64"``) or file name (``"gsm8k_test_first64.jsonl"``).

    >>> vendored_path("aime24_ttrl_test").name
    'aime24_ttrl_test.json'
    """
    relative = VENDORED_FILES.get(name)
    if relative is None and name in VENDORED_FILES.values():
        relative = name
    if relative is None:
        raise ValueError(f"unknown vendored file {name!r}; known: {', '.join(sorted(VENDORED_FILES))}")
    path = VENDOR_DIR / relative
    if not path.is_file():
        raise FileNotFoundError(
            f"vendored file {path} is missing: the installed data_prep lacks its package data "
            "(setuptools package-data for data_prep must include 'vendor/**/*')"
        )
    return path
