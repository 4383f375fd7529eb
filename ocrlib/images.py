"""Opening the image of a sample as 8-bit RGB, whether it is a file of a labelled folder or a
record of an LMDB set (:mod:`ocrlib.lmdbset`): one loader for files, records and images in
memory, so that all of them read the same."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .folder import DataError
from .lmdbset import is_lmdb, read_image_bytes

#: Rec. 709 luminance weights of R, G and B: the grey the network reads
#: (:func:`ocrlib.normalize.normalize_pixels`) and the renderer's measure of contrast.
LUMINANCE = (0.2126, 0.7152, 0.0722)


@contextmanager
def _opened(path: str | os.PathLike[str]) -> Iterator[Image.Image]:
    """``Image.open`` for a file or an LMDB sample path (``<set>/image-%09d``)."""
    path = Path(path)
    if is_lmdb(path.parent):
        data = read_image_bytes(path)
        if data is None:
            raise FileNotFoundError(path)
        with Image.open(io.BytesIO(data)) as im:
            yield im
    else:
        with Image.open(path) as im:
            yield im


def image_exists(path: str | os.PathLike[str]) -> bool:
    """Whether the sample's image is there (a file, or an LMDB key), without decoding it."""
    path = Path(path)
    return read_image_bytes(path) is not None if is_lmdb(path.parent) else path.is_file()


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(width, height)`` from the image's header.

    Raises:
        OSError, UnidentifiedImageError, ValueError: when it cannot be read.
    """
    with _opened(path) as im:
        return im.size


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open any image file as 8-bit RGB (:func:`as_rgb`).

    Raises:
        DataError: naming the file, when it is missing or cannot be decoded.
    """
    try:
        with _opened(path) as im:
            im.load()
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: cannot read image ({err})") from None
    return as_rgb(im)


def as_rgb(im: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB: transparency over white, 16-bit and float scaled, palettes
    and CMYK converted. Files (:func:`load_image`) and images in memory go through this one
    function, so both read the same."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        im = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if im.mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    return im.convert("RGB")
