import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from ocrlib.combine import View
from ocrlib.decoding import Decoded
from ocrlib.inference import Recognizer
from ocrlib.recrop import crop_rows, ink_rows, stretch_width


def _bar_image(h=60, w=200, rows=(20, 32), bg=0.9, ink=0.1):
    a = np.full((h, w), bg, dtype=np.float32)
    a[rows[0]:rows[1], 20:180] = ink
    return a


def test_ink_rows_finds_the_rows_the_ink_covers():
    assert ink_rows(_bar_image(rows=(20, 32))) == (20, 32)
    light_on_dark = 1.0 - _bar_image(rows=(5, 30))
    assert ink_rows(light_on_dark) == (5, 30)


def test_ink_rows_keeps_a_thin_ascender_above_the_body():
    a = _bar_image(rows=(20, 32))
    a[8:20, 50:52] = 0.1  # a 2-pixel stroke rising above the x-height
    assert ink_rows(a) == (8, 32)


def test_ink_rows_sees_nothing_in_a_flat_or_faint_image():
    assert ink_rows(np.full((40, 100), 0.5, dtype=np.float32)) is None
    faint = _bar_image(bg=0.5, ink=0.46)
    assert ink_rows(faint) is None
    with pytest.raises(ValueError, match="grey image"):
        ink_rows(np.zeros((4, 4, 3)))


def test_ink_rows_holds_under_pixel_noise():
    rng = np.random.default_rng(0)
    a = _bar_image(rows=(25, 40)) + rng.normal(0, 0.05, (60, 200)).astype(np.float32)
    top, bot = ink_rows(np.clip(a, 0, 1))
    assert abs(top - 25) <= 1 and abs(bot - 40) <= 1


def _text_line(margin: int) -> Image.Image:
    from matplotlib import font_manager

    font = ImageFont.truetype(font_manager.findfont("DejaVu Sans"), 20)  # ships with matplotlib
    img = Image.new("RGB", (160, 24 + 2 * margin), (230, 225, 200))
    ImageDraw.Draw(img).text((6, margin), "Hqly 42", fill=(20, 20, 60), font=font)
    return img


def test_crop_rows_cuts_wide_margins_and_keeps_every_ink_row():
    img = _text_line(margin=30)
    grey = np.asarray(img.convert("L"), dtype=np.float32)
    ink = np.nonzero((grey < 150).any(axis=1))[0]
    crop = crop_rows(img, pad=0.15)
    assert crop is not None and crop.width == img.width
    assert crop.height < 0.6 * img.height
    top = next(y for y in range(img.height)
               if np.array_equal(np.asarray(img.crop((0, y, img.width, y + crop.height))),
                                 np.asarray(crop)))
    assert top <= ink[0] and top + crop.height >= ink[-1] + 1
    wider = crop_rows(img, pad=0.3)
    assert wider is not None and wider.height > crop.height


def test_crop_rows_leaves_a_line_already_cut_close_alone():
    img = _text_line(margin=0)
    assert crop_rows(img, pad=0.15) is None
    assert crop_rows(Image.new("RGB", (100, 40), "white"), pad=0.15) is None
    assert crop_rows(Image.new("RGB", (100, 6), "white"), pad=0.15) is None


def test_read_keeps_the_most_confident_crop(trained, monkeypatch):
    _, ckpt = trained
    img = _text_line(margin=30)
    # a stand-in model that is surer of lower images: the crop must win, the original lose
    def by_height(self, images, way):
        return [[View(Decoded(str(im.height), 1.0 / im.height), None, way)] for im in images]
    monkeypatch.setattr(Recognizer, "_read_images", by_height)
    rec = Recognizer.from_checkpoint(ckpt, recrop=(0.15, 0.3), combine="surest")
    assert rec.read([img])[0].text == str(crop_rows(img, 0.15).height)
    once = Recognizer.from_checkpoint(ckpt, recrop=(), combine="surest")
    assert once.read([img])[0].text == str(img.height)
    close = _text_line(margin=0)  # no crop changes it: read once, as given
    assert rec.read([close, img])[0].text == str(close.height)


def test_evaluate_never_keeps_a_less_confident_reading(trained):
    root, ckpt = trained
    # the 'surest' rule (the default 'mean' is tested in test_combine.py)
    once = Recognizer.from_checkpoint(ckpt, recrop=(), combine="surest").evaluate(root / "data/val")
    more = Recognizer.from_checkpoint(ckpt, recrop=(0.15, 0.3), combine="surest").evaluate(
        root / "data/val")
    assert once["recrops"] == [None] * once["n"]
    assert set(more["recrops"]) <= {None, 0.15, 0.3}
    assert more["paths"] == once["paths"]
    for a, b, pad, ha, hb in zip(once["confidences"], more["confidences"], more["recrops"],
                                 once["predictions"], more["predictions"]):
        assert b >= a
        if pad is None:
            assert hb == ha and b == a


def test_recrop_margins_are_checked(trained):
    _, ckpt = trained
    with pytest.raises(ValueError, match="recrop margins"):
        Recognizer.from_checkpoint(ckpt, recrop=(-0.1,))
    proc = subprocess.run([sys.executable, "-m", "ocrlib", "eval", "--data", "x", "--checkpoint",
                           str(ckpt), "--recrop", "0.2,abc"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--recrop" in proc.stderr and "0.2,abc" in proc.stderr


def test_eval_recrop_and_stretch_none_read_each_line_once(trained):
    root, ckpt = trained
    args = [sys.executable, "-m", "ocrlib", "eval", "--data", str(root / "data/val"),
            "--checkpoint", str(ckpt), "--json"]
    once = subprocess.run(args + ["--recrop", "none", "--stretch", "none"], capture_output=True,
                          text=True)
    default = subprocess.run(args, capture_output=True, text=True)
    assert once.returncode == 0 and default.returncode == 0, once.stderr + default.stderr
    for out, kw in ((once, {"recrop": (), "stretch": ()}), (default, {})):
        r = Recognizer.from_checkpoint(ckpt, **kw).evaluate(root / "data/val")
        assert json.loads(out.stdout)["cer"] == pytest.approx(r["cer"])


def test_stretching_a_line_changes_its_width_only():
    img = _text_line(margin=10)
    wide, narrow = stretch_width(img, 1.25), stretch_width(img, 0.8)
    assert wide.size == (round(img.width * 1.25), img.height)
    assert narrow.size == (round(img.width * 0.8), img.height)
    for bad in (0.1, 5.0):
        with pytest.raises(ValueError, match="stretch factor"):
            stretch_width(img, bad)


def test_read_keeps_the_most_confident_width(trained, monkeypatch):
    _, ckpt = trained
    img = _text_line(margin=0)  # no crop changes it
    def by_width(self, images, way):  # a stand-in model that is surer of wider images
        return [[View(Decoded(str(im.width), im.width / 10_000), None, way)] for im in images]
    monkeypatch.setattr(Recognizer, "_read_images", by_width)
    rec = Recognizer.from_checkpoint(ckpt, stretch=(0.8, 1.25), combine="surest")
    assert rec.read([img])[0].text == str(round(img.width * 1.25))
    once = Recognizer.from_checkpoint(ckpt, stretch=(), combine="surest")
    assert once.read([img])[0].text == str(img.width)
    with pytest.raises(ValueError, match="stretch factors"):
        Recognizer.from_checkpoint(ckpt, stretch=(0.0,))
    proc = subprocess.run([sys.executable, "-m", "ocrlib", "eval", "--data", "x", "--checkpoint",
                           str(ckpt), "--stretch", "1.25,9"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--stretch" in proc.stderr and "1.25,9" in proc.stderr


def test_evaluate_at_several_widths_keeps_the_surest_and_says_which(trained):
    from ocrlib.analysis import analyse

    root, ckpt = trained
    plain = Recognizer.from_checkpoint(ckpt, recrop=(), stretch=(), combine="surest").evaluate(
        root / "data/val")
    rec = Recognizer.from_checkpoint(ckpt, recrop=(), stretch=(0.8, 1.25), combine="surest")
    wider = rec.evaluate(root / "data/val")
    assert plain["stretches"] == [None] * plain["n"]
    assert set(wider["stretches"]) <= {None, 0.8, 1.25} and wider["paths"] == plain["paths"]
    for a, b, f, ha, hb in zip(plain["confidences"], wider["confidences"], wider["stretches"],
                               plain["predictions"], wider["predictions"]):
        assert b >= a
        if f is None:
            assert hb == ha and b == a
    table = analyse(rec, root / "data/val")
    assert [None if np.isnan(f) else f for f in table.read_stretch] == wider["stretches"]


def test_the_error_table_says_which_crop_each_reading_came_from(trained):
    from ocrlib.analysis import analyse

    root, ckpt = trained
    rec = Recognizer.from_checkpoint(ckpt)
    r = rec.evaluate(root / "data/val")
    table = analyse(rec, root / "data/val")
    assert list(table.prediction) == r["predictions"]
    got = [None if np.isnan(m) else m for m in table.read_crop]
    assert got == r["recrops"]


def _wall_line() -> Image.Image:
    """A photograph-like line whose polarity the skewness cannot settle: a mid-grey wall with
    bright windows, dark ink in the middle rows (as in test_render's polarity test)."""
    rng = np.random.default_rng(0)
    g = np.full((32, 120), 0.5) + rng.normal(0, 0.03, (32, 120))
    for x in range(0, 120, 12):
        g[:, x:x + 4] = 0.95
    g[11:21, 20:100:3] = 0.1
    return Image.fromarray((np.clip(g, 0, 1) * 255).astype(np.uint8)).convert("RGB")


def test_unsure_polarity_is_read_back_from_the_input_padding_aside():
    from ocrlib.data import SURE_SKEW, Sample, ctc_collate, normalize_pixels, unsure_polarity

    lines = [_text_line(margin=4), _wall_line()]
    samples = []
    for im in lines:
        rgb = np.asarray(im.resize((im.width * 32 // im.height, 32)), dtype=np.float32) / 255
        t, fill = normalize_pixels(rgb)
        samples.append(Sample(t, [], "", "", fill))
        g = t[0].numpy()
        assert bool(unsure_polarity(t[None])) == (abs(float(np.mean(g**3))) <= SURE_SKEW)
    batch = ctc_collate(samples)
    assert batch.images.shape[-1] > samples[1].image.shape[-1]  # the wall line is padded
    assert unsure_polarity(batch.images, batch.widths).tolist() == [False, True]
    assert unsure_polarity(-batch.images, batch.widths).tolist() == [False, True]


def test_lines_of_unsure_polarity_are_also_read_the_other_way(trained, monkeypatch):
    _, ckpt = trained
    text_line, wall = _text_line(margin=4), _wall_line()
    rec = Recognizer.from_checkpoint(ckpt, recrop=())
    a, b = rec.model.charset.encode("ab")

    # a stand-in network, sure of "a" where a line's first pixel is bright (its background
    # made bright: the polarity the normalisation did not choose), unsure of "b" elsewhere
    def stand_in(self, images):
        n, t = images.shape[0], images.shape[-1] // 4
        lp = torch.full((n, t, len(self.model.charset) + 1), -20.0)
        bright = images[:, 0, 0, 0] > 0
        lp[bright, :, a], lp[~bright, :, b] = -0.01, -0.7
        return lp
    monkeypatch.setattr(Recognizer, "log_probs", stand_in)
    assert [d.text for d in rec.read([text_line, wall])] == ["b", "a"]  # only the wall flips
    rec.flip_unsure = False
    assert [d.text for d in rec.read([text_line, wall])] == ["b", "b"]


def test_evaluate_says_which_readings_came_from_the_other_polarity(trained, tmp_path):
    import shutil

    root, ckpt = trained
    val = tmp_path / "val"
    shutil.copytree(root / "data/val", val)
    for i in range(3):  # three lines of unsure polarity beside the generated ones
        _wall_line().save(val / f"wall{i}.png")
    with open(val / "labels.txt", "a") as f:
        f.writelines(f"wall{i}.png\tHi\n" for i in range(3))
    plain = Recognizer.from_checkpoint(ckpt, flip_unsure=False, combine="surest").evaluate(val)
    both = Recognizer.from_checkpoint(ckpt, combine="surest").evaluate(val)
    assert plain["flipped"] == [False] * plain["n"] and plain["paths"] == both["paths"]
    for a, b, flipped, ha, hb in zip(plain["confidences"], both["confidences"],
                                     both["flipped"], plain["predictions"], both["predictions"]):
        assert b >= a
        if not flipped:
            assert hb == ha and b == a
    proc = subprocess.run([sys.executable, "-m", "ocrlib", "eval", "--data", str(val),
                           "--checkpoint", str(ckpt), "--json", "--no-flip-unsure"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["cer"] == pytest.approx(plain["cer"])
