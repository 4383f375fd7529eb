"""The font pool for synthetic text (notebook 01, "where the fonts come from").

Fonts come from the system font folders, from the TTFs matplotlib ships, and from any
folders named in ``OCRLIB_FONT_DIRS`` (``:``-separated) or passed explicitly. A font
joins the pool only when it has a real glyph for every character of the charset:
symbol fonts (cmex10, STIXSize*) and "last resort" fonts that map every code point to
one box are rejected. There is no fallback to PIL's bitmap font.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

FONT_SUFFIXES = (".ttf", ".otf", ".ttc")
SYSTEM_FONT_DIRS = (
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    "~/.fonts",
    "~/.local/share/fonts",
    "/Library/Fonts",
    "/System/Library/Fonts",
    "C:/Windows/Fonts",
)


_GENERATED_NAME = re.compile(r"(glyph|uni|u|cid|g)[0-9A-Fa-f]+")


class NoUsableFontError(RuntimeError):
    """No font in the searched folders covers the charset."""


@dataclass(frozen=True)
class FontFace:
    """One usable font file.

    Attributes:
        path: the font file.
        name: "Family Style" as the font names itself; the pool holds each name once.
    """

    path: str
    name: str


def font_dirs(extra: Iterable[str | os.PathLike[str]] = ()) -> list[Path]:
    """The folders searched for fonts, existing ones only, in a fixed order."""
    dirs: list[Path] = [Path(p) for p in extra]
    env = os.environ.get("OCRLIB_FONT_DIRS", "")
    dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs += [Path(p).expanduser() for p in SYSTEM_FONT_DIRS]
    try:
        import matplotlib

        dirs.append(Path(matplotlib.get_data_path()) / "fonts" / "ttf")
    except ImportError:  # matplotlib is a dependency, but the pool works without it
        pass
    return [d for d in dirs if d.is_dir()]


def _face_name(font: object) -> str:
    names = font["name"]  # type: ignore[index]
    family = names.getDebugName(16) or names.getDebugName(1) or "?"
    style = names.getDebugName(17) or names.getDebugName(2) or ""
    return f"{family} {style}".strip()


def _named_like(glyph: str, standard: str | None) -> bool:
    """Whether a glyph name fits the character whose standard glyph name is ``standard``."""
    if standard is None or _GENERATED_NAME.fullmatch(glyph):
        return True  # no standard name, or the font uses generated names: nothing to compare
    base = glyph.split(".")[0].split("_")[0]
    return base in (standard, standard + "oldstyle")


def check_font(path: str | os.PathLike[str], chars: str) -> FontFace | None:
    """Return the face if ``path`` has a real, distinct glyph for every character, else None.

    Two checks beyond "the cmap has an entry":

    * distinct: fonts that map everything to one placeholder glyph (LastResort) fail,
      since the number of different glyphs must equal the number of different characters;
    * named: where the font names its glyphs, the glyph for a character must carry the
      character's standard (Adobe Glyph List) name, so symbol fonts that put arrows and
      brackets at ASCII code points (cmex10, cmsy10) fail.
    """
    from fontTools.agl import UV2AGL
    from fontTools.ttLib import TTFont, TTLibError

    try:
        font = TTFont(str(path), fontNumber=0, lazy=True)
        cmap = font.getBestCmap() or {}
    except (TTLibError, OSError, AssertionError, KeyError, ValueError) as err:
        log.debug("skipping unreadable font %s: %s", path, err)
        return None
    visible = {c for c in chars if not c.isspace()}
    glyphs = set()
    for c in set(chars):
        glyph = cmap.get(ord(c))
        if glyph is None or glyph == ".notdef":
            return None
        if not _named_like(glyph, UV2AGL.get(ord(c))):
            return None
        if c in visible:
            glyphs.add(glyph)
    if len(glyphs) < len(visible):
        return None
    return FontFace(path=str(path), name=_face_name(font))


def find_fonts(chars: str, extra_dirs: Sequence[str | os.PathLike[str]] = ()) -> list[FontFace]:
    """All usable faces for ``chars``, sorted by name (so seeds pick the same font everywhere).

    Raises:
        NoUsableFontError: when no font covers every character.
    """
    return list(_find_fonts(chars, tuple(str(d) for d in extra_dirs)))


@lru_cache(maxsize=16)
def _find_fonts(chars: str, extra_dirs: tuple[str, ...]) -> tuple[FontFace, ...]:
    dirs = font_dirs(extra_dirs)
    files = sorted(
        {str(p.resolve()) for d in dirs for p in d.rglob("*") if p.suffix.lower() in FONT_SUFFIXES}
    )
    faces: dict[str, FontFace] = {}
    for f in files:
        face = check_font(f, chars)
        if face is not None and face.name not in faces:
            faces[face.name] = face
    if not faces:
        searched = ", ".join(str(d) for d in dirs) or "(none exist)"
        raise NoUsableFontError(
            f"no font has glyphs for every character of {chars!r}; searched {searched}. "
            "Install fonts (e.g. Debian's fonts-dejavu) or set OCRLIB_FONT_DIRS."
        )
    log.info("font pool: %d usable faces from %d files", len(faces), len(files))
    return tuple(sorted(faces.values(), key=lambda f: f.name))
