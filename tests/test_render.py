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


def test_polarity_on_a_cluttered_background_is_read_from_the_middle_rows_against_the_ends():
    from ocrlib.data import SURE_SKEW, ink_is_dark
    rng = np.random.default_rng(0)
    # a photograph-like background: a mid-grey wall with bright windows in every row, and
    # dark ink in the middle rows; the skewness alone points the wrong way
    g = np.full((32, 120), 0.5) + rng.normal(0, 0.03, (32, 120))
    for x in range(0, 120, 12):
        g[:, x:x + 4] = 0.95
    g[11:21, 20:100:3] = 0.1
    g = (g - g.mean()) / g.std()
    skew = float(np.mean(g**3))
    assert 0 < skew < SURE_SKEW  # the old rule (the sign of the skewness) calls the ink bright
    assert ink_is_dark(g) and not ink_is_dark(-g)
    # where the skewness is decisive it still decides, whatever the middle rows say
    plain_line = np.zeros((32, 80)); plain_line[12:20, 10:70:4] = 1.0
    plain_line = (plain_line - plain_line.mean()) / plain_line.std()
    assert not ink_is_dark(plain_line) and ink_is_dark(-plain_line)


def test_alignment_targets_put_each_character_in_its_frame():
    t = alignment_targets([[5, 6, 6]], [[2.0, 9.5, 10.5]], T=6, frames=[4])
    # centres 2 -> frame 0, 9.5 -> frame 2, 10.5 -> frame 2 taken -> frame 3; frames 4, 5 padding
    assert t.tolist() == [[5, 0, 6, 6, -100, -100]]
    squeezed = alignment_targets([[1, 2, 3]], [[1.0, 1.5, 2.0]], T=2, frames=[2])
    assert squeezed.tolist() == [[1, 2]]  # what does not fit is dropped, never past the line


def _lum(img):
    return np.asarray(img, dtype=np.float32)[..., :3] @ np.array([0.2126, 0.7152, 0.0722]) / 255


def test_a_scene_is_cluttered_like_a_photograph_where_paper_is_not(plain):
    from ocrlib.render import SCENE, background
    colour = np.array([150.0, 120.0, 100.0])
    edges, spread = {}, {}
    for kind in ("paper", "gradient", "stripes", "blotches", SCENE):
        lums = [_lum(background(kind, (32, 200), colour, np.random.default_rng(s), 1.0))
                for s in range(10)]
        # strong steps between neighbouring pixels, and the range of the whole background
        edges[kind] = np.mean([np.quantile(np.abs(np.diff(b, axis=1)), 0.99) for b in lums])
        spread[kind] = np.mean([np.quantile(b, 0.99) - np.quantile(b, 0.01) for b in lums])
    others = [k for k in edges if k != SCENE]
    assert edges[SCENE] > 2 * max(edges[k] for k in others)
    assert spread[SCENE] > 2 * max(spread[k] for k in others)
    scenes = [background(SCENE, (32, 120), colour, np.random.default_rng(s), 1.0)
              for s in range(8)]
    assert len({float(s.std()) for s in scenes}) == 8  # each seed draws another scene
    assert np.array_equal(scenes[0], background(SCENE, (32, 120), colour,
                                                 np.random.default_rng(0), 1.0))


def test_text_on_a_scene_stays_readable(plain):
    from ocrlib.render import SCENE
    from ocrlib.scenes import luminance, readable
    # a scene exactly as light as the ink under it is pulled toward its mean colour
    fg = np.array([128.0, 128.0, 128.0])
    alpha = np.zeros((32, 60)); alpha[8:24, 10:50] = 1.0
    camouflage = np.full((32, 60, 3), 128.0)
    pulled = readable(camouflage, np.array([250.0, 250.0, 250.0]), fg, alpha)
    under = np.abs(luminance(pulled[alpha > 0.5]) - luminance(fg))
    assert np.quantile(under, 0.1) >= 0.2
    for seed in range(6):
        img = render({**plain, "background": SCENE, "texture": 1.0, "paper_seed": seed,
                      "bg": [120, 90, 60], "fg": [250, 250, 250]})
        ink = _lum(render({**plain, "bg": [0, 0, 0], "fg": [255, 255, 255]})) > 0.9
        assert _lum(img)[ink].mean() - np.median(_lum(img)[~ink]) > 0.35


def test_scenes_are_drawn_last_at_their_rate_and_never_on_clean_lines():
    from ocrlib.render import SCENE
    fonts = fonts_for(SynthConfig(), "train")
    base = SynthConfig(effects=Effects(scene=0.0), clean_fraction=0.25)
    cfg = SynthConfig(effects=Effects(scene=0.5), clean_fraction=0.25)
    before = [sample_spec(i, 4, base, fonts, None, 1) for i in range(200)]
    after = [sample_spec(i, 4, cfg, fonts, None, 1) for i in range(200)]
    assert all(a[k] == b[k] for a, b in zip(after, before) for k in b if k != "background")
    changed = [b for a, b in zip(after, before) if a["background"] == SCENE]
    assert 50 < len(changed) < 100 and SCENE not in {b["background"] for b in before}
    clean = [a for a in after if a["angle"] == 0.0 and a["blur"] == 0.0 and a["noise"] == 0.0]
    assert clean and all(a["background"] != SCENE for a in clean)
    test = [sample_spec(i, 4, cfg, fonts_for(cfg, "test"), None, 3) for i in range(100)]
    assert 30 < sum(t["background"] == SCENE for t in test) < 70  # no clean lines in a test set
    assert Effects.none().scene == 0.0
