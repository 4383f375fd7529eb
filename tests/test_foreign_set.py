"""benchmarks/foreign_set.py: lines typeset by matplotlib, with its own crop or cropped to the ink."""

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "foreign_set.py"


def _make(out: Path, crop: str) -> list[tuple[str, str]]:
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--n", "6", "--seed", "4",
                    "--crop", crop], check=True, capture_output=True, text=True)
    return [tuple(line.rstrip("\n").split("\t")) for line in open(out / "labels.txt")]


def _ink_fraction(path: Path) -> float:
    grey = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    rows = np.flatnonzero((np.abs(grey - np.median(grey)) > 40).any(axis=1))
    return (rows[-1] - rows[0] + 1) / grey.shape[0]


def test_ink_crop_keeps_the_lines_and_cuts_the_empty_rows(tmp_path):
    page = _make(tmp_path / "page", "page")
    ink = _make(tmp_path / "ink", "ink")
    assert page == ink and len(page) == 6  # the same lines, the same fonts
    for rel, _ in page:
        a, b = Image.open(tmp_path / "page" / rel), Image.open(tmp_path / "ink" / rel)
        assert b.width == a.width and b.height < a.height
        assert _ink_fraction(tmp_path / "ink" / rel) > 0.75 > _ink_fraction(tmp_path / "page" / rel)
