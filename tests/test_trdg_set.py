"""benchmarks/trdg_set.py: the check set drawn by TRDG (an optional package, absent in CI)."""

import importlib.util
import random
import re
import string
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "trdg_set.py"
spec = importlib.util.spec_from_file_location("trdg_set", SCRIPT)
trdg_set = importlib.util.module_from_spec(spec)
spec.loader.exec_module(trdg_set)


def test_texts_are_words_codes_and_numbers_of_the_charset():
    rnd = random.Random(0)
    words = ["apple", "zebra", "quartz"]
    texts = [trdg_set.line_text(rnd, words) for _ in range(400)]
    allowed = set(string.digits + string.ascii_letters)
    assert all(t and set(t) <= allowed for t in texts)
    assert {"apple", "Apple", "APPLE"} & set(texts) and any(t.isdigit() for t in texts)
    assert any(re.fullmatch(r"(Apple|Zebra|Quartz)[0-9]+", t) for t in texts)  # a word, a number
    assert [trdg_set.line_text(random.Random(0), words) for _ in range(1)] == texts[:1]


def test_without_trdg_it_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "trdg", None)  # import trdg -> ImportError
    with pytest.raises(SystemExit, match="pip install trdg"):
        trdg_set.import_trdg()
    # and the script writes nothing before it knows it can draw
    run = subprocess.run([sys.executable, "-c", (
        "import sys, runpy; sys.modules['trdg'] = None; "
        f"sys.argv = ['trdg_set.py', '--out', r'{tmp_path / 'out'}']; "
        f"runpy.run_path(r'{SCRIPT}', run_name='__main__')")], capture_output=True, text=True)
    assert run.returncode != 0 and "pip install trdg" in run.stderr
    assert not (tmp_path / "out").exists()
