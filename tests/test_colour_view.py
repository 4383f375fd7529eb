"""The colour view (ocrlib.normalize.colour_view): the grey in which coloured ink stands out."""

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ocrlib.normalize import LUMINANCE, SAME_VIEW, colour_view


def _line(ink, bg, texture=0.0, h=40, w=200):
    """'Hqly 42' in ``ink`` on ``bg`` (RGB 0..255), the background's brightness varying in
    vertical bands by ``texture`` (a brick wall's joints); and the ink's mask."""
    from matplotlib import font_manager

    font = ImageFont.truetype(font_manager.findfont("DejaVu Sans"), 22)  # ships with matplotlib
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).text((8, 8), "Hqly 42", fill=255, font=font)
    m = np.asarray(mask) > 127
    shade = 1.0 + texture * np.sign(np.sin(np.arange(w) / 3.0))[None, :, None]
    a = np.broadcast_to(np.array(bg, dtype=np.float32), (h, w, 3)) * shade
    a = np.where(m[..., None], np.array(ink, dtype=np.float32), a)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)), m


def _separation(grey: np.ndarray, ink: np.ndarray) -> float:
    """How far the ink's mean lies from the background's, in the background's spreads."""
    bg = grey[~ink]
    return abs(float(grey[ink].mean() - bg.mean())) / max(float(bg.std()), 1e-6)


def test_blue_ink_on_an_orange_wall_stands_out_in_the_view_not_in_the_luminance():
    img, ink = _line(ink=(80, 80, 255), bg=(170, 95, 40), texture=0.25)
    a = np.asarray(img, dtype=np.float32) / 255.0
    lum = a @ np.array(LUMINANCE, dtype=np.float32)
    view = colour_view(img)
    assert view is not None and view.size == img.size and view.mode == "RGB"
    v = np.asarray(view)
    assert (v[..., 0] == v[..., 1]).all() and (v[..., 1] == v[..., 2]).all()  # grey
    assert v.min() == 0 and v.max() == 255  # stretched to the full range
    assert _separation(lum, ink) < 1.0  # the wall's joints are as strong as the ink
    assert _separation(v.astype(np.float32)[..., 0], ink) > 5 * _separation(lum, ink)


def test_ink_as_bright_as_a_textured_paper_gets_a_view_and_flat_colours_do_not():
    # red on green of nearly equal luminance, over a paper with a faint texture
    img, ink = _line(ink=(255, 0, 0), bg=(0, 76, 0), texture=0.1)
    assert abs(255 * LUMINANCE[0] - 76 * LUMINANCE[1]) < 1.0
    view = colour_view(img)
    assert view is not None
    assert _separation(np.asarray(view, dtype=np.float32)[..., 0], ink) > 5
    # two flat colours: any grey of them is the mask scaled, which standardising undoes
    flat, _ = _line(ink=(255, 0, 0), bg=(0, 76, 0))
    assert colour_view(flat) is None


def test_grey_low_and_flat_lines_have_no_view():
    grey, _ = _line(ink=(20, 20, 20), bg=(240, 240, 240), texture=0.05)
    assert colour_view(grey) is None  # any projection of a grey line is its luminance again
    assert colour_view(grey.convert("L")) is None
    tinted, _ = _line(ink=(20, 20, 60), bg=(230, 225, 200))  # dark ink on cream: luminance
    assert colour_view(tinted) is None
    assert colour_view(Image.new("RGB", (100, 30), (10, 200, 30))) is None
    low, _ = _line(ink=(80, 80, 255), bg=(170, 95, 40), h=7)
    assert colour_view(low) is None
    assert SAME_VIEW < 1


def _is_grey(im: Image.Image) -> bool:
    a = np.asarray(im.convert("RGB"))
    return bool((a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all())


def test_read_keeps_the_colour_view_where_it_is_surer_and_reads_grey_lines_once(
        trained, monkeypatch):
    from ocrlib.combine import View
    from ocrlib.decoding import Decoded
    from ocrlib.inference import Recognizer

    _, ckpt = trained
    seen: list[int] = []
    def surer_of_grey(self, images, way):  # a stand-in model that reads grey images more surely
        seen.append(len(images))
        return [[View(Decoded("grey" if _is_grey(im) else "colour", 0.9 if _is_grey(im) else 0.1),
                      None, way)] for im in images]
    monkeypatch.setattr(Recognizer, "_read_images", surer_of_grey)
    wall, _ = _line(ink=(80, 80, 255), bg=(170, 95, 40), texture=0.25)
    paper, _ = _line(ink=(20, 20, 20), bg=(240, 240, 240), texture=0.05)
    on = Recognizer.from_checkpoint(ckpt, recrop=(), stretch=(1.25,), combine="surest")
    off = Recognizer.from_checkpoint(ckpt, recrop=(), stretch=(1.25,), colour_view=False,
                                     combine="surest")
    assert on.read([wall])[0].text == "grey" and off.read([wall])[0].text == "colour"
    seen.clear()
    on.read([paper])
    with_view = sum(seen)
    seen.clear()
    off.read([paper])
    assert with_view == sum(seen) == 2  # as given and stretched: no view of a grey line
    seen.clear()
    on.read([wall, paper])
    assert sum(seen) == 4 + 2  # the wall's view is read as given and stretched, too


def test_evaluate_with_the_colour_view_keeps_the_surest_and_says_which(trained, tmp_path):
    from ocrlib.analysis import analyse
    from ocrlib.inference import Recognizer

    _, ckpt = trained
    (tmp_path / "images").mkdir()
    rows = []
    for k, (ink, bg, texture) in enumerate([((80, 80, 255), (170, 95, 40), 0.25),
                                            ((20, 20, 20), (240, 240, 240), 0.05),
                                            ((255, 0, 0), (0, 76, 0), 0.1),
                                            ((30, 30, 30), (250, 250, 250), 0.0)]):
        _line(ink, bg, texture)[0].save(tmp_path / f"images/{k}.png")
        rows.append(f"images/{k}.png\tHqly 42\n")
    (tmp_path / "labels.txt").write_text("".join(rows))
    off = Recognizer.from_checkpoint(ckpt, colour_view=False, combine="surest").evaluate(tmp_path)
    rec = Recognizer.from_checkpoint(ckpt, combine="surest")
    on = rec.evaluate(tmp_path)
    assert off["colour"] == [False] * 4 and on["paths"] == off["paths"]
    for a, b, colour, ha, hb, path in zip(off["confidences"], on["confidences"], on["colour"],
                                          off["predictions"], on["predictions"], on["paths"]):
        assert b >= a
        if not colour:
            assert hb == ha and b == a
        else:  # only a line with a view of its own can be read in it
            assert colour_view(Image.open(path).convert("RGB")) is not None
    assert not on["colour"][1] and not on["colour"][3]  # grey lines
    assert list(analyse(rec, tmp_path).colour_view) == on["colour"]
