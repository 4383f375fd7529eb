"""nbval honours a marker such as ``# NBVAL_IGNORE_OUTPUT`` only when it is alone on its line:
a marker with an explanation beside it is silently ignored, and the cell's training-dependent
numbers are then compared verbatim (they differ between processors)."""

import json
from pathlib import Path

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
KNOWN = {"NBVAL_IGNORE_OUTPUT", "NBVAL_CHECK_OUTPUT", "NBVAL_RAISES_EXCEPTION", "NBVAL_SKIP"}


def markers(source: str) -> list[str]:
    return [line.strip() for line in source.splitlines() if "NBVAL_" in line and line.strip().startswith("#")]


def test_markers_are_alone_on_their_line():
    assert NOTEBOOKS
    bad = []
    for nb in NOTEBOOKS:
        for i, cell in enumerate(json.loads(nb.read_text())["cells"]):
            for line in markers("".join(cell["source"])):
                if line.lstrip("#").strip() not in KNOWN:
                    bad.append(f"{nb.name} cell {i}: {line!r}")
    assert not bad, "nbval ignores these markers (put the marker alone on its line):\n" + "\n".join(bad)


def test_the_check_recognises_a_marker_with_text_beside_it():
    assert markers("# NBVAL_IGNORE_OUTPUT  (why)\nx = 1")[0].lstrip("#").strip() not in KNOWN
    assert markers("# NBVAL_IGNORE_OUTPUT\n# (why)")[0].lstrip("#").strip() in KNOWN
