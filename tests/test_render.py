import numpy as np
import pytest
import torch

from ocrlib.data import alignment_targets, normalize_pixels
from ocrlib.fonts import font_pool
from ocrlib.render import render, render_with_centres
from ocrlib.synth import Effects, SynthConfig, fonts_for, sample_spec


@pytest.fixture(scope="module")
def plain():
    cfg = SynthConfig(effects=Effects.none(), max_angle=0, max_blur=0, max_noise=0)
    face = [f for f in font_pool() if f.name == "DejaVu Sans Book"]
    spec = sample_spec(0, 0, cfg, face, ["Hamburg42"])
    spec.update(bg=[255, 255, 255], fg=[0, 0, 0], margins=[0.1, 0.1, 0.1, 0.1], size=30)
    return spec


def _grey(img):
    return np.asarray(img.convert("L"), dtype=np.float32)


def test_rendering_is_a_function_of_the_spec(plain):
    a, b = render(plain), render(plain)
    assert a.tobytes() == b.tobytes() and a.height == 32


@pytest.mark.parametrize("change", [
    {"background": "paper", "texture": 0.8}, {"background": "gradient", "texture": 1.0},
    {"background": "stripes", "texture": 1.0}, {"background": "blotches", "texture": 1.0},
    {"spacing": 0.3}, {"stretch": 0.75}, {"shear": 0.25}, {"perspective": 0.2},
    {"warp": [0.1, 1.0, 0.0]}, {"stroke": 2}, {"lines": "underline"},
    {"lines": "box"}, {"lowres": 12}, {"jpeg": 20}, {"angle": 3.0}, {"blur": 1.0},
    {"noise": 10.0}, {"margins": [0.6, 0.3, 0.6, 0.3]},
])
def test_every_effect_changes_the_image_and_keeps_the_height(plain, change):
    before, after = render(plain), render({**plain, **change})
    assert after.height == 32 and after.mode == "RGB"
    same_size = before.size == after.size
    assert not same_size or np.abs(_grey(before) - _grey(after)).mean() > 0.5


def test_thinner_strokes_thin_a_heavy_glyph_and_never_erase_a_light_one(plain):
    def ink(img):
        return (255 - _grey(img)).sum()

    big = {**plain, "size": 64}  # strokes about 6 px wide: eroding one pixel keeps the text
    assert ink(render({**big, "stroke": -1})) < 0.9 * ink(render(big))
    # at size 30 DejaVu's strokes are ~3 px: eroding would remove most of the ink, so it is kept
    assert render({**plain, "stroke": -1}).tobytes() == render(plain).tobytes()


def test_character_centres_follow_the_text(plain):
    img, xs = render_with_centres(plain)
    assert len(xs) == len(plain["text"]) and xs == sorted(xs)
    assert 0 < xs[0] < xs[-1] < img.width
    ink = (255 - _grey(img)).sum(axis=0)  # dark ink on white: ink mass per column
    for x in xs:  # every centre sits on or next to ink
        assert ink[max(0, int(x) - 3): int(x) + 4].max() > 100
    stretched, xs2 = render_with_centres({**plain, "stretch": 0.7, "shear": 0.2, "angle": 2.0})
    assert xs2 == sorted(xs2) and stretched.width != img.width


def test_margins_are_kept_around_the_font_metrics_so_case_shows(plain):
    """'xo' and 'XO' in the same font must not scale to the same image: crops follow the
    font's ascent and descent, never the ink."""
    lower = _grey(render({**plain, "text": "xo"}))
    upper = _grey(render({**plain, "text": "XO"}))
    rows_lower = np.flatnonzero((255 - lower).max(axis=1) > 128)
    rows_upper = np.flatnonzero((255 - upper).max(axis=1) > 128)
    assert rows_upper[-1] - rows_upper[0] > 1.2 * (rows_lower[-1] - rows_lower[0])


def _ink_rows(img):
    rows = np.flatnonzero((255 - _grey(img)).max(axis=1) > 128)
    return rows[-1] - rows[0] + 1


def test_an_ink_crop_fills_the_line_where_the_font_box_leaves_room(plain):
    """Crimson-like metrics leave capitals at about half the line; the detector-style crop
    ("ink") brings the same text to nearly the whole height, centres moved with it."""
    box = render({**plain, "text": "HELLO42"})
    ink, xs = render_with_centres({**plain, "text": "HELLO42", "crop": "ink",
                                   "margins": [0.1, 0.0, 0.1, 0.0]})
    assert _ink_rows(box) < 0.75 * 32 and _ink_rows(ink) >= 0.9 * 32
    assert len(xs) == 7 and 0 < xs[0] < xs[-1] < ink.width
    # a decoration is part of the box: the underline is not cut away
    lined = _grey(render({**plain, "text": "HELLO42", "crop": "ink", "lines": "underline",
                          "margins": [0.1, 0.0, 0.1, 0.0]}))
    assert (255 - lined[-4:]).max() > 128


def test_tight_fraction_and_margins_leave_the_other_choices_alone():
    fonts = fonts_for(SynthConfig(), "train")
    before = [sample_spec(i, 3, SynthConfig(), fonts, None, 1) for i in range(60)]
    cfg = SynthConfig(tight_fraction=0.5, vertical_margin=(-0.05, 0.6))
    after = [sample_spec(i, 3, cfg, fonts, None, 1) for i in range(60)]
    keep = [k for k in before[0] if k not in ("margins", "crop")]
    assert all(a[k] == b[k] for a, b in zip(after, before) for k in keep)
    assert {b["crop"] for b in before} == {"box"}
    tight = [a for a in after if a["crop"] == "ink"]
    assert 15 < len(tight) < 45 and all(a["margins"][1] <= 0.15 for a in tight)
    assert max(a["margins"][3] for a in after if a["crop"] == "box") > 0.3
    with pytest.raises(ValueError, match="tight_fraction"):
        SynthConfig(tight_fraction=1.5)
    with pytest.raises(ValueError, match="vertical_margin"):
        SynthConfig(vertical_margin=(0.5, 0.1))


def test_generated_specs_use_effects_at_their_rates():
    cfg = SynthConfig()
    fonts = fonts_for(cfg, "train")
    specs = [sample_spec(i, 0, cfg, fonts, None, 1) for i in range(400)]
    rate = lambda key, off: np.mean([s[key] != off for s in specs])  # noqa: E731
    assert 0.5 < rate("background", "flat") < 0.7
    assert 0.15 < rate("jpeg", 0) < 0.35 and 0.05 < rate("lines", "none") < 0.2
    assert len({s["family"] for s in specs}) > 50  # families drawn evenly
    none = SynthConfig(effects=Effects.none())
    assert all(s["background"] == "flat" and s["jpeg"] == 0
               for s in (sample_spec(i, 0, none, fonts, None, 1) for i in range(50)))


def test_grey_input_does_not_care_about_colour_or_polarity(plain):
    dark_on_light = np.asarray(render(plain), dtype=np.float32) / 255
    light_on_dark = 1.0 - dark_on_light
    tinted = dark_on_light * np.array([0.9, 0.5, 0.2], dtype=np.float32)  # same ink, coloured
    a, fill_a = normalize_pixels(dark_on_light)
    b, _ = normalize_pixels(light_on_dark)
    assert torch.allclose(a, b, atol=1e-4)
    assert a.shape == (3, 32, dark_on_light.shape[1]) and torch.equal(a[0], a[2])
    assert abs(float(a.mean())) < 1e-4 and abs(float(a.std()) - 1) < 0.01
    assert fill_a < 0 < float(a.max())  # paper is dark, ink bright
    c, _ = normalize_pixels(tinted)
    assert float((c[0] - a[0]).abs().mean()) < 0.35  # hue barely matters, only luminance


def test_alignment_targets_put_each_character_in_its_frame():
    t = alignment_targets([[5, 6, 6]], [[2.0, 9.5, 10.5]], T=6, frames=[4])
    # centres 2 -> frame 0, 9.5 -> frame 2, 10.5 -> frame 2 taken -> frame 3; frames 4, 5 padding
    assert t.tolist() == [[5, 0, 6, 6, -100, -100]]
    squeezed = alignment_targets([[1, 2, 3]], [[1.0, 1.5, 2.0]], T=2, frames=[2])
    assert squeezed.tolist() == [[1, 2]]  # what does not fit is dropped, never past the line
