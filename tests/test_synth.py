import json

import numpy as np
import pytest

from ocrlib import synth
from ocrlib.charset import DEFAULT_CHARS, Charset
from ocrlib.data import read_labels
from ocrlib.fonts import HELD_OUT
from ocrlib.synth import SynthConfig, generate, generate_splits, sample_colours
from ocrlib.text import random_text


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_is_byte_identical_whatever_the_number_of_workers(tmp_path):
    one = generate(tmp_path / "one", 24, seed=7, workers=1, progress=False, chunk=5)
    two = generate(tmp_path / "two", 24, seed=7, workers=2, progress=False, chunk=5)
    a, b = _files(one.out), _files(two.out)
    assert len(a) == 24 + 3  # images + labels.txt, meta.jsonl, synth.json
    assert a == b
    other = generate(tmp_path / "other", 24, seed=8, workers=1, progress=False)
    assert _files(other.out)["labels.txt"] != a["labels.txt"]


def test_output_layout_labels_and_metadata(tmp_path):
    res = generate(tmp_path / "d", 12, seed=1, workers=1, progress=False)
    lines = (res.out / "labels.txt").read_text().splitlines()
    assert len(lines) == 12
    assert lines[0].startswith("images/000000.png\t")
    items = read_labels(res.out)
    cs = Charset()
    for it in items:
        assert it.path.is_file()
        assert 3 <= len(it.text) <= 10 and not cs.unknown(it.text)
    meta = [json.loads(line) for line in (res.out / "meta.jsonl").read_text().splitlines()]
    assert [m["label"] for m in meta] == [it.text for it in items]
    for m in meta:
        assert {"font", "family", "angle", "blur", "noise", "bg", "fg", "background", "stretch",
                "shear", "jpeg", "lines", "width", "height", "centres"} <= set(m)
        assert abs(m["angle"]) <= 3 and 0 <= m["blur"] <= 1.0 and m["noise"] >= 0
        assert m["font"] in {f.name for f in res.fonts} and m["height"] == 32
        assert len(m["centres"]) == len(m["label"])
    manifest = json.loads((res.out / "synth.json").read_text())
    assert manifest["seed"] == 1 and manifest["n"] == 12


def test_images_have_height_32_and_visible_text(tmp_path):
    res = generate(tmp_path / "d", 6, seed=3, workers=1, progress=False)
    from PIL import Image

    for it in read_labels(res.out):
        img = np.asarray(Image.open(it.path).convert("L"), dtype=np.float32)
        assert img.shape[0] == 32 and img.shape[1] > 20
        assert img.std() > 10  # not a blank canvas


def test_non_empty_folder_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="--overwrite"):
        generate(out, 4, workers=1, progress=False)
    assert (out / "precious.txt").read_text() == "keep me"
    assert not (out / "images").exists()


def test_overwrite_replaces_the_set(tmp_path):
    out = tmp_path / "d"
    generate(out, 8, seed=0, workers=1, progress=False)
    generate(out, 3, seed=1, workers=1, progress=False, overwrite=True)
    assert len(read_labels(out)) == 3
    assert len(list((out / "images").iterdir())) == 3


def test_interrupted_run_leaves_no_labels_pointing_at_missing_images(tmp_path, monkeypatch):
    out = tmp_path / "d"
    generate(out, 5, seed=0, workers=1, progress=False)
    real_render = synth.render_with_centres
    calls = {"n": 0}

    def dying_render(spec, height=32):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_render(spec, height)

    monkeypatch.setattr(synth, "render_with_centres", dying_render)
    with pytest.raises(KeyboardInterrupt):
        generate(out, 10, seed=1, workers=1, progress=False, overwrite=True)
    assert not (out / "labels.txt").exists()  # old labels gone first, new ones never written
    assert not list(out.glob(".labels.txt.*"))


def test_splits_never_share_a_sample(tmp_path):
    res = generate_splits(tmp_path, {"train": 20, "val": 20, "test": 20}, seed=0, workers=1,
                          progress=False)
    images = {name: set(_files(r.out / "images").values()) for name, r in res.items()}
    texts = {name: [it.text for it in read_labels(r.out)] for name, r in res.items()}
    assert not images["train"] & images["val"] and not images["train"] & images["test"]
    assert texts["train"] != texts["val"] != texts["test"]
    assert json.loads((tmp_path / "val" / "synth.json").read_text())["split"] == "val"


def test_text_file_lines_become_labels_and_bad_lines_are_named(tmp_path):
    chars = DEFAULT_CHARS + " .,"
    good = tmp_path / "good.txt"
    good.write_text("Hello world.\n\n  two, words \n")
    res = generate(tmp_path / "d", 3, workers=1, progress=False,
                   cfg=SynthConfig(chars=chars, text_file=str(good)))
    assert [it.text for it in read_labels(res.out)] == ["Hello world.", "two, words", "Hello world."]
    bad = tmp_path / "bad.txt"
    bad.write_text("fine\nnot $fine\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: character '\$'"):
        generate(tmp_path / "e", 3, workers=1, progress=False,
                 cfg=SynthConfig(chars=chars, text_file=str(bad)))
    assert not (tmp_path / "e").exists()


def test_random_text_with_space_in_charset_makes_words():
    cfg = SynthConfig(chars=DEFAULT_CHARS + " ", min_len=8, max_len=12)
    texts = [random_text(np.random.default_rng(i), cfg) for i in range(200)]
    assert any(" " in t for t in texts)
    assert all(t == t.strip() and "  " not in t for t in texts)


def test_colours_always_have_contrast():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        bg, fg = sample_colours(rng, 0.45)
        assert abs(synth._luminance(bg) - synth._luminance(fg)) >= 0.45


def test_a_test_split_draws_from_fonts_never_used_for_training(tmp_path):
    res = generate_splits(tmp_path, {"train": 30, "test": 30}, seed=0, workers=1, progress=False)
    train_fams = {json.loads(x)["family"] for x in (tmp_path / "train" / "meta.jsonl").open()}
    test_fams = {json.loads(x)["family"] for x in (tmp_path / "test" / "meta.jsonl").open()}
    assert not train_fams & test_fams and test_fams <= HELD_OUT
    assert {f.family for f in res["test"].fonts} == set(HELD_OUT)
    explicit = generate(tmp_path / "one", 4, split="test", workers=1, progress=False,
                        cfg=SynthConfig(fonts=("DejaVu Sans Book",)))
    assert [f.name for f in explicit.fonts] == ["DejaVu Sans Book"]


def test_mixed_text_has_every_kind_and_respects_the_charset():
    cfg = SynthConfig(min_len=4, max_len=8)
    texts = [random_text(np.random.default_rng(i), cfg) for i in range(400)]
    assert any(t.islower() and t.isalpha() for t in texts) and any(t.isupper() for t in texts)
    assert any(t.isdigit() for t in texts) and any(t[0].isupper() and t[1:].islower() for t in texts)
    assert all(4 <= len(t) <= 8 for t in texts)
    digits = SynthConfig(chars="0123456789", min_len=4, max_len=8)
    assert all(random_text(np.random.default_rng(i), digits).isdigit() for i in range(100))
