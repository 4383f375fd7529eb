"""Photographs behind the text: strips cut from scikit-image's sample pictures.

:mod:`ocrlib.scenes` draws clutter from nothing; other generators put text on real
photographs (walls, water, streets, faces), whose textures no procedure quite imitates. The
pictures that ship inside the ``scikit-image`` wheel (a dependency, pinned to one version, so a
seed draws the same strips on every machine) are used as they are, never downloaded: each
background is a strip cut from one of them at a random place and scale, flipped or turned,
with its own colours moved to the line's background colour. Training lines draw from
:data:`TRAIN_PHOTOS`, ``test`` splits from :data:`TEST_PHOTOS`, pictures training never saw.
The files are read where the package is installed; ``skimage`` itself is never imported.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

#: pictures for training lines (``skimage/data``); brick, grass, gravel, camera, moon and
#: coins are grey
TRAIN_PHOTOS = ("astronaut.png", "brick.png", "camera.png", "chelsea.png", "coins.png",
                "grass.png", "hubble_deep_field.jpg", "ihc.png", "moon.png",
                "motorcycle_left.png", "retina.jpg")
#: pictures only ``test`` splits use
TEST_PHOTOS = ("coffee.png", "gravel.png", "rocket.jpg")
#: sha256 of each file in scikit-image 0.26.0 (the pinned version), checked by the tests
SHA256 = {
    "astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    "brick.png": "7966caf324f6ba843118d98f7a07746d22f6a343430add0233eca5f6eaaa8fcf",
    "camera.png": "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a",
    "chelsea.png": "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
    "coins.png": "f8d773fc9cfa6f4d8e5942dc34d0a0788fcaed2a4fefbbed0aef5398d7ef4cba",
    "grass.png": "b6b6022426b38936c43a4ac09635cd78af074e90f42ffa8227ac8b7452d39f89",
    "hubble_deep_field.jpg": "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4",
    "ihc.png": "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef",
    "moon.png": "78739619d11f7eb9c165bb5d2efd4772cee557812ec847532dbb1d92ef71f577",
    "motorcycle_left.png": "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179",
    "retina.jpg": "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6",
    "coffee.png": "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
    "gravel.png": "c48615b451bf1e606fbd72c0aa9f8cc0f068ab7111ef7d93bb9b0f2586440c12",
    "rocket.jpg": "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
}


class PhotosMissing(RuntimeError):
    """scikit-image's sample pictures are not installed."""


def photo_dir() -> Path:
    """Where the sample pictures are: ``skimage/data`` in the installed package.

    Raises:
        PhotosMissing: saying how to install them or turn photographs off.
    """
    spec = importlib.util.find_spec("skimage")
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        folder = Path(root) / "data"
        if (folder / TRAIN_PHOTOS[0]).is_file():
            return folder
    raise PhotosMissing("photograph backgrounds need scikit-image's sample pictures: "
                        "pip install 'scikit-image==0.26.0' (a dependency of ocrlib), or "
                        "draw without them: Effects(photo=0.0)")


@lru_cache(maxsize=None)
def load_photo(name: str) -> Image.Image:
    """One sample picture as an RGB image (read once per process)."""
    if name not in TRAIN_PHOTOS + TEST_PHOTOS:
        raise ValueError(f"unknown photograph {name!r}; known: {TRAIN_PHOTOS + TEST_PHOTOS}")
    with Image.open(photo_dir() / name) as im:
        return im.convert("RGB")


def photo(name: str, shape: tuple[int, int], colour: np.ndarray, rng: np.random.Generator,
          amount: float) -> np.ndarray:
    """A ``(h, w, 3)`` float background (0..255): a strip of picture ``name`` around ``colour``.

    The strip has the line's aspect ratio, a height between half the line's and the tallest
    the picture allows (log-uniform: close-ups and wide views alike), a random place, and is
    flipped or turned at random. Its mean colour is moved to ``colour`` and its deviations
    scaled by 0.6-1.2 (more with ``amount``), so the background colour drawn for the line,
    which the ink's contrast was chosen against, stays its colour.
    """
    h, w = shape
    pic = load_photo(name)
    if rng.random() < 0.5:
        pic = pic.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.3:
        pic = pic.transpose(Image.Transpose.ROTATE_90)
    pw, ph = pic.size
    aspect = w / max(1, h)
    tallest = min(float(ph), pw / aspect)
    lowest = min(tallest, max(4.0, 0.5 * h))
    ch = float(np.exp(rng.uniform(np.log(lowest), np.log(tallest))))
    cw = ch * aspect
    x0, y0 = rng.uniform(0, max(0.0, pw - cw)), rng.uniform(0, max(0.0, ph - ch))
    strip = pic.resize((w, h), Image.Resampling.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
    arr = np.asarray(strip, dtype=np.float32)
    scale = rng.uniform(0.6, 0.9) + 0.3 * amount
    return colour.astype(np.float32) + (arr - arr.mean(axis=(0, 1))) * scale
