import hashlib

import numpy as np
import pytest

from ocrlib import photos
from ocrlib.photos import SHA256, TEST_PHOTOS, TRAIN_PHOTOS, PhotosMissing, photo, photo_dir
from ocrlib.render import PHOTO, render
from ocrlib.synth import STREAMS, Effects, SynthConfig, fonts_for, sample_spec


def test_the_pictures_are_the_pinned_ones():
    folder = photo_dir()
    assert set(SHA256) == set(TRAIN_PHOTOS) | set(TEST_PHOTOS)
    assert not set(TRAIN_PHOTOS) & set(TEST_PHOTOS)
    for name, digest in SHA256.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name


def test_a_photo_strip_is_seeded_sized_and_takes_the_lines_colour():
    colour = np.array([200.0, 60.0, 30.0])
    a = photo("brick.png", (32, 200), colour, np.random.default_rng(3), 0.5)
    b = photo("brick.png", (32, 200), colour, np.random.default_rng(3), 0.5)
    c = photo("brick.png", (32, 200), colour, np.random.default_rng(4), 0.5)
    assert a.shape == (32, 200, 3) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.allclose(a.mean(axis=(0, 1)), colour, atol=1e-3)  # its mean is the line's colour
    assert a.std() > 5  # and it has the picture's texture
    with pytest.raises(ValueError, match="unknown photograph"):
        photo("nope.png", (32, 200), colour, np.random.default_rng(0), 0.5)


def test_without_the_pictures_the_error_says_how_to_get_them(monkeypatch):
    monkeypatch.setattr(photos.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PhotosMissing, match="pip install 'scikit-image==0.26.0'.*photo=0.0"):
        photo_dir()


def test_photos_are_drawn_last_from_their_own_pool_and_never_on_clean_lines():
    fonts = fonts_for(SynthConfig(), "train")
    base = SynthConfig(effects=Effects(photo=0.0), clean_fraction=0.25)
    cfg = SynthConfig(effects=Effects(photo=0.5), clean_fraction=0.25)
    # a test split has no clean lines: every line may get a photograph
    for stream, pool, rate in ((STREAMS["train"], TRAIN_PHOTOS, 0.375),
                               (STREAMS["test"], TEST_PHOTOS, 0.5)):
        before = [sample_spec(i, 4, base, fonts, None, stream) for i in range(200)]
        after = [sample_spec(i, 4, cfg, fonts, None, stream) for i in range(200)]
        assert all(a[k] == b[k] for a, b in zip(after, before) for k in b
                   if k not in ("background", "photo"))
        drawn = [a for a in after if a["background"] == PHOTO]
        assert abs(len(drawn) - 200 * rate) < 30 and PHOTO not in {b["background"] for b in before}
        assert {a["photo"] for a in drawn} <= set(pool)
        if stream == STREAMS["train"]:  # clean lines keep their plain paper
            clean = [a for a in after if a["angle"] == 0 and a["blur"] == 0 and a["noise"] == 0
                     and a["background"] == "flat" and a["warp"] is None]
            assert clean and all(a["background"] != PHOTO for a in clean)


def test_text_on_a_photo_stays_readable():
    fonts = fonts_for(SynthConfig(), "train")
    cfg = SynthConfig(effects=Effects(photo=1.0), clean_fraction=0.0, min_len=4, max_len=8)
    for i in range(6):
        spec = sample_spec(i, 0, cfg, fonts, None, STREAMS["train"])
        assert spec["background"] == PHOTO
        img = np.asarray(render(spec), dtype=np.float32) @ np.array([0.2126, 0.7152, 0.0722]) / 255
        ink = np.asarray(render({**spec, "background": "flat", "bg": [0, 0, 0],
                                 "fg": [255, 255, 255], "noise": 0.0, "jpeg": 0}),
                         dtype=np.float32)[..., 1] > 128
        fg = float(np.array(spec["fg"]) @ np.array([0.2126, 0.7152, 0.0722]) / 255)
        # the pixels just under the ink are nearer the ink's luminance than the paper's median
        assert abs(np.median(img[ink]) - fg) < abs(np.median(img[~ink]) - fg)
