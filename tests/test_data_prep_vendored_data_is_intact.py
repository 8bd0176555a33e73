"""The data vendored in data_prep/vendor/ (for README demos without a shared data root) is intact, documented,
licensed and converts. Run:
    .venv/bin/python -m pytest tests/test_data_prep_vendored_data_is_intact.py -q
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from data_prep import KNOWN_SHA256, VENDORED_FILES, sha256_file, vendored_path
from data_prep.cli import main
from data_prep.vendored import VENDOR_DIR

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BTRANS_SHARED_DATA", REPO.parent / "shared" / "data"))
PROVENANCE = json.loads(vendored_path("provenance").read_text())


def test_every_vendored_name_resolves_to_a_file():
    for name, relative in VENDORED_FILES.items():
        assert vendored_path(name) == VENDOR_DIR / relative and vendored_path(name).is_file()
        assert vendored_path(relative) == vendored_path(name)
    with pytest.raises(ValueError, match="unknown vendored file 'gsm8k'; known: "):
        vendored_path("gsm8k")


def test_provenance_matches_the_vendored_bytes_and_names_a_licence_file():
    vendored_data = {"aime24_ttrl_test.json", "gsm8k_test_first64.jsonl", "gsm8k_train_first256.jsonl"}
    assert {entry["file"] for entry in PROVENANCE} == vendored_data
    for entry in PROVENANCE:
        path = VENDOR_DIR / entry["file"]
        assert sha256_file(path) == entry["sha256"] == KNOWN_SHA256[entry["file"]]
        assert path.stat().st_size == entry["bytes"]
        rows = json.loads(path.read_text()) if path.suffix == ".json" else path.read_text().splitlines()
        assert len(rows) == entry["rows"]
        assert entry["repo"] and len(entry["commit"]) == 40 and entry["path"] and entry["license"]
        assert (VENDOR_DIR / entry["license_file"]).read_text().startswith("MIT License")


def test_every_file_under_vendor_is_covered_by_the_package_data_globs():
    """setuptools expands package-data patterns with glob(recursive=True) relative to the package folder."""
    tomllib = pytest.importorskip("tomllib")
    pyproject = REPO / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip("no pyproject.toml beside tests/")
    config = tomllib.loads(pyproject.read_text())
    patterns = config.get("tool", {}).get("setuptools", {}).get("package-data", {}).get("data_prep", [])
    package = VENDOR_DIR.parent
    covered = {Path(p) for pattern in patterns for p in glob.glob(str(package / pattern), recursive=True)}
    files = {p for p in VENDOR_DIR.rglob("*") if p.is_file()}
    missing = sorted(p.relative_to(package).as_posix() for p in files - covered)
    assert not missing, f"pyproject.toml package-data for data_prep {patterns} misses {missing}"


@pytest.mark.skipif(not (SHARED / "PROVENANCE.json").is_file(), reason=f"shared data not found at {SHARED}")
def test_vendored_files_are_exact_prefixes_of_the_shared_files():
    assert vendored_path("aime24_ttrl_test").read_bytes() == (SHARED / "aime24_ttrl" / "test.json").read_bytes()
    prefixes = (("gsm8k_test_first64", "gsm8k/test.jsonl", 64), ("gsm8k_train_first256", "gsm8k/train.jsonl", 256))
    for name, shared, n in prefixes:
        lines = (SHARED / shared).read_bytes().split(b"\n")
        assert vendored_path(name).read_bytes() == b"\n".join(lines[:n]) + b"\n"


def test_demo_commands_convert_the_vendored_data(tmp_path, capsys):
    assert main(["gsm8k", "--src", "vendor", "--out", str(tmp_path / "gsm8k"), "--no-progress"]) == 0
    assert main(["aime24_ttrl", "--src", "vendor", "--out", str(tmp_path / "aime24"), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err  # all vendored files are sha256-verified
    assert captured.out.count("sha256 ok") == 3
    assert pq.read_metadata(tmp_path / "gsm8k" / "train.parquet").num_rows == 256
    test = pq.read_table(tmp_path / "gsm8k" / "test.parquet").to_pylist()
    assert len(test) == 64 and test[0]["reward_model"]["ground_truth"] == "18"
    aime = pq.read_table(tmp_path / "aime24" / "test.parquet").to_pylist()
    assert len(aime) == 30 and aime[1]["reward_model"]["ground_truth"] == "25"
    assert main(["math500", "--src", "vendor", "--out", str(tmp_path / "m")]) == 1
    assert "no vendored data for 'math500'" in capsys.readouterr().err
