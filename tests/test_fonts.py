import os
import shutil
import subprocess
import sys

import pytest

from ocrlib import fonts as F
from ocrlib.charset import DEFAULT_CHARS
from ocrlib.fonts import FAMILIES, HELD_OUT, NoUsableFontError, find_fonts, font_pool


def test_the_pinned_pool_is_large_varied_and_licensed():
    pool = font_pool(DEFAULT_CHARS)
    assert len(pool) >= 60
    names = [f.name for f in pool]
    assert names == sorted(names) and len(set(names)) == len(names)
    families = {f.family for f in pool}
    assert families == set(FAMILIES)  # every pinned family is there
    cats = {f.category for f in pool}
    assert {"serif", "slab", "sans", "condensed", "mono", "handwriting", "display"} <= cats
    assert sum("Bold" in f.name for f in pool) >= 10 and sum("Italic" in f.name for f in pool) >= 10
    assert all(f.licence for f in pool), [f.name for f in pool if not f.licence]


def test_held_out_families_never_reach_the_training_pool():
    train, held = font_pool(which="train"), font_pool(which="held_out")
    assert {f.family for f in held} == set(HELD_OUT)
    assert not {f.family for f in train} & set(HELD_OUT)
    assert len({f.category for f in held}) >= 6  # unseen fonts of every kind
    assert len(train) + len(held) == len(font_pool(which="all"))


def test_the_pool_ignores_the_machines_fonts(tmp_path, monkeypatch):
    before = font_pool()
    extra = tmp_path / "fonts"
    extra.mkdir()
    shutil.copy(before[0].path, extra / "renamed.ttf")
    monkeypatch.setenv("OCRLIB_FONT_DIRS", str(extra))
    F._pinned_faces.cache_clear()
    assert font_pool() == before
    assert any(f.path.startswith(str(extra)) for f in find_fonts(DEFAULT_CHARS, [extra]))


def test_a_missing_pinned_family_is_a_clear_error(monkeypatch):
    import fontpkg

    real = fontpkg.family

    def without_lobster(name):
        if name == "Lobster":
            raise fontpkg.FamilyNotInstalled(name)
        return real(name)

    monkeypatch.setattr(fontpkg, "family", without_lobster)
    F._pinned_faces.cache_clear()
    try:
        with pytest.raises(NoUsableFontError, match=r"not installed: \['Lobster'\].*fontpkg-lobster"):
            font_pool()
    finally:
        F._pinned_faces.cache_clear()


def test_variable_fonts_give_one_face_per_named_instance():
    roboto = [f for f in font_pool() if f.family == "Roboto"]
    assert len(roboto) > 10 and all(f.variation for f in roboto)
    assert {"Roboto Bold", "Roboto Thin Italic", "Roboto Condensed Black"} <= {f.name for f in roboto}


def test_small_caps_and_symbol_fonts_are_rejected():
    import matplotlib

    ttf = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
    assert F.check_font(os.path.join(ttf, "cmex10.ttf"), DEFAULT_CHARS) is None  # symbols
    assert F.check_font(os.path.join(ttf, "DejaVuSans.ttf"), DEFAULT_CHARS) is not None
    caps = [f for f in font_pool() if f.family == "Black Ops One"][0]  # a real lowercase
    assert F.check_font(caps.path, DEFAULT_CHARS) is not None


def test_no_usable_font_is_a_clear_error():
    with pytest.raises(NoUsableFontError, match="no font has glyphs"):
        find_fonts("ab\U00013000")  # an Egyptian hieroglyph: in no font here


def test_a_dataset_is_the_same_whatever_fonts_the_machine_has(tmp_path):
    """Generating in a fresh process with other machine fonts and another home gives the same
    bytes: only the pinned pool is used."""
    code = ("import sys; from ocrlib.synth import generate; "
            "generate(sys.argv[1], 12, seed=5, workers=1, progress=False)")
    extra = tmp_path / "machine_fonts"
    extra.mkdir()
    shutil.copy(font_pool()[3].path, extra / "x.ttf")
    runs = []
    for k, env in enumerate(({}, {"OCRLIB_FONT_DIRS": str(extra), "HOME": str(tmp_path)})):
        out = tmp_path / f"set{k}"
        subprocess.run([sys.executable, "-c", code, str(out)], check=True,
                       env={**os.environ, **env})
        runs.append({p.relative_to(out).as_posix(): p.read_bytes()
                     for p in sorted(out.rglob("*")) if p.is_file()})
    assert runs[0] == runs[1]
