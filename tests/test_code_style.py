"""The code passes `ruff check` with the project's configuration (`[tool.ruff]` in pyproject.toml: verl's line
length, 120, and the rule set named there), so the habit is kept by CI rather than by memory."""

import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_configuration_is_verls_line_length():
    ruff = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]
    assert ruff["line-length"] == 120
    assert {"E", "F", "W", "I"} <= set(ruff["lint"]["select"])


def test_the_code_passes_ruff_check():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
