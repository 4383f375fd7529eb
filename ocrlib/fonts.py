"""The font pool for synthetic text (notebook 01, "where the fonts come from").

Variety of fonts is what lets a recogniser trained on synthetic lines read fonts it has never
seen. Two sources:

* **the pinned pool** (the default): the families named in :data:`FAMILIES`, installed from
  PyPI with the project (one ``fontpkg-<family>`` wheel per Google Fonts family, unmodified
  files under the OFL or Apache licence) plus the DejaVu, STIX and Computer Modern faces that
  matplotlib ships. A static font file is one face; a variable font gives one face per named
  instance (``Roboto Condensed Bold``...). The pool is fixed by name, so the same seed gives
  byte-identical data on every machine with the same packages, whatever fonts the machine
  has. Families are split: :data:`HELD_OUT` families are never used for training, so a test
  set drawn from them measures reading *unseen* fonts.
* **the machine's fonts** (:func:`find_fonts`): the system font folders and any folders named
  in ``OCRLIB_FONT_DIRS`` (``:``-separated). Different on every machine; opt in.

A font is used only when it has a real glyph for every character of the charset: symbol
fonts (cmex10, STIXSize*), "last resort" fonts that map every code point to one box, and fonts
whose lowercase letters are small capitals are rejected. There is no fallback to PIL's
bitmap font.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Literal, NamedTuple

from .charset import DEFAULT_CHARS

log = logging.getLogger(__name__)
# fontTools warns about every Google Fonts file whose 'head' table dates it before 1970: harmless,
# and it would reach stderr (which nbval compares) once per file
logging.getLogger("fontTools.ttLib.tables._h_e_a_d").setLevel(logging.ERROR)

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
PoolName = Literal["train", "held_out", "all", "system"]

_GENERATED_NAME = re.compile(r"(glyph|uni|u|cid|g)[0-9A-Fa-f]+")
_WEIGHTS = {100: "Thin", 200: "ExtraLight", 300: "Light", 400: "Regular", 500: "Medium",
            600: "SemiBold", 700: "Bold", 800: "ExtraBold", 900: "Black"}


class NoUsableFontError(RuntimeError):
    """No font covers the charset, or a pinned family is not installed."""


class Family(NamedTuple):
    """A pinned family: its style category, where it comes from, its licence."""

    category: str  # serif, slab, sans, condensed, mono, handwriting, display
    source: str  # the PyPI package that installs it
    licence: str


def _fp(category: str, licence: str = "OFL-1.1") -> Family:
    return Family(category, "fontpkg", licence)


#: The pinned pool: family name -> category, source, licence. ``fontpkg`` families come from the
#: ``fontpkg-<family name, lower case, dashes>`` package listed in pyproject.toml.
FAMILIES: dict[str, Family] = {
    # serif
    "IBM Plex Serif": _fp("serif"), "PT Serif": _fp("serif"), "Spectral": _fp("serif"),
    "Source Serif 4": _fp("serif"), "EB Garamond": _fp("serif"), "Lora": _fp("serif"),
    "Playfair Display": _fp("serif"), "Vollkorn": _fp("serif"), "Cardo": _fp("serif"),
    "Domine": _fp("serif"), "Cormorant Garamond": _fp("serif"), "DM Serif Text": _fp("serif"),
    "Crimson Text": _fp("serif"), "Libre Baskerville": _fp("serif"),
    # slab serif
    "Zilla Slab": _fp("slab"), "Roboto Slab": _fp("slab", "Apache-2.0"), "Bitter": _fp("slab"),
    "Sanchez": _fp("slab"), "Antic Slab": _fp("slab"), "Arvo": _fp("slab"),
    # sans
    "Roboto": _fp("sans"), "Open Sans": _fp("sans"), "Inter": _fp("sans"),
    "Montserrat": _fp("sans"), "Poppins": _fp("sans"), "IBM Plex Sans": _fp("sans"),
    "Source Sans 3": _fp("sans"), "Work Sans": _fp("sans"), "Rubik": _fp("sans"),
    "Nunito": _fp("sans"), "Raleway": _fp("sans"), "Karla": _fp("sans"), "Arimo": _fp("sans"),
    "Libre Franklin": _fp("sans"), "Josefin Sans": _fp("sans"), "Oxygen": _fp("sans"),
    "Questrial": _fp("sans"), "News Cycle": _fp("sans"), "Archivo": _fp("sans"),
    "Quicksand": _fp("sans"), "PT Sans": _fp("sans"), "Cabin": _fp("sans"),
    # condensed
    "Barlow Condensed": _fp("condensed"),
    "Oswald": _fp("condensed"), "Anton": _fp("condensed"), "Saira Condensed": _fp("condensed"),
    "IBM Plex Sans Condensed": _fp("condensed"), "Archivo Narrow": _fp("condensed"),
    "Teko": _fp("condensed"), "Yanone Kaffeesatz": _fp("condensed"),
    "Smooch Sans": _fp("condensed"), "PT Sans Narrow": _fp("condensed"),
    "Fjalla One": _fp("condensed"),
    # monospace
    "IBM Plex Mono": _fp("mono"), "Roboto Mono": _fp("mono"), "Source Code Pro": _fp("mono"),
    "JetBrains Mono": _fp("mono"), "Inconsolata": _fp("mono"), "Fira Code": _fp("mono"),
    "Geist Mono": _fp("mono"), "Space Mono": _fp("mono"), "DM Mono": _fp("mono"),
    # handwriting
    "Indie Flower": _fp("handwriting"), "Caveat": _fp("handwriting"),
    "Dancing Script": _fp("handwriting"), "Satisfy": _fp("handwriting", "Apache-2.0"),
    "Pacifico": _fp("handwriting"), "Yellowtail": _fp("handwriting", "Apache-2.0"),
    "Delius": _fp("handwriting"), "Kalam": _fp("handwriting"),
    "Shadows Into Light": _fp("handwriting"),
    # display
    "Lobster": _fp("display"), "Lobster Two": _fp("display"), "Black Ops One": _fp("display"),
    "Titan One": _fp("display"), "Abril Fatface": _fp("display"), "Alfa Slab One": _fp("display"),
    "Press Start 2P": _fp("display"), "Oleo Script": _fp("display"),
    "Gravitas One": _fp("display"), "Comfortaa": _fp("display"), "Orbitron": _fp("display"),
    "Fredoka": _fp("display"), "Changa One": _fp("display"), "Acme": _fp("display"),
    "Lilita One": _fp("display"), "DM Serif Display": _fp("display"),
    "Righteous": _fp("display"), "Russo One": _fp("display"),
    # shipped with matplotlib
    "DejaVu Sans": Family("sans", "matplotlib", "Bitstream Vera / DejaVu (free)"),
    "DejaVu Serif": Family("serif", "matplotlib", "Bitstream Vera / DejaVu (free)"),
    "DejaVu Sans Mono": Family("mono", "matplotlib", "Bitstream Vera / DejaVu (free)"),
    "STIXGeneral": Family("serif", "matplotlib", "OFL-1.1"),
    "cmr10": Family("serif", "matplotlib", "BaKoMa (free, as shipped by matplotlib)"),
    "cmss10": Family("sans", "matplotlib", "BaKoMa (free, as shipped by matplotlib)"),
    "cmtt10": Family("mono", "matplotlib", "BaKoMa (free, as shipped by matplotlib)"),
}

#: Families kept out of training: a test set drawn from them measures unseen fonts. One or two
#: per category (in about the proportions of the pool), none a near-copy of a training family.
HELD_OUT: frozenset[str] = frozenset({
    "Crimson Text", "Libre Baskerville", "Arvo", "PT Sans", "Cabin", "PT Sans Narrow",
    "Fjalla One", "Space Mono", "DM Mono", "Kalam", "Russo One",
})


@dataclass(frozen=True)
class FontFace:
    """One usable face.

    Attributes:
        path: the font file.
        name: "Family Style"; a pool holds each name once.
        family: the family name (for family-level splits and breakdowns).
        variation: the named instance of a variable font to select, or None.
        category: serif, slab, sans, condensed, mono, handwriting or display ("" if unknown).
        licence: the licence the file is distributed under ("" if unknown).
    """

    path: str
    name: str
    family: str = ""
    variation: str | None = None
    category: str = ""
    licence: str = ""


# ---------------------------------------------------------------------------- checking


def _face_name(font: object) -> tuple[str, str]:
    names = font["name"]  # type: ignore[index]
    family = names.getDebugName(16) or names.getDebugName(1) or "?"
    style = names.getDebugName(17) or names.getDebugName(2) or ""
    return family, style


def _named_like(glyph: str, standard: str | None) -> bool:
    """Whether a glyph name fits the character whose standard glyph name is ``standard``."""
    if standard is None or _GENERATED_NAME.fullmatch(glyph):
        return True  # no standard name, or the font uses generated names: nothing to compare
    base = glyph.split(".")[0].split("_")[0]
    return base in (standard, standard + "oldstyle")


def _small_caps(font: object, cmap: dict[int, str]) -> bool:
    """Whether lowercase ascenders are no taller than the x-height (small caps / caps only)."""
    from fontTools.pens.boundsPen import BoundsPen

    glyphs = font.getGlyphSet()  # type: ignore[attr-defined]

    def height(ch: str) -> float:
        pen = BoundsPen(glyphs)
        glyphs[cmap[ord(ch)]].draw(pen)
        return pen.bounds[3] if pen.bounds else 0.0

    x = height("x")
    return x > 0 and height("h") < 1.05 * x


def check_font(path: str | os.PathLike[str], chars: str) -> FontFace | None:
    """Return the face if ``path`` has a real, distinct glyph for every character, else None.

    Beyond "the cmap has an entry":

    * distinct: fonts that map everything to one placeholder glyph (LastResort) fail,
      since the number of different glyphs must equal the number of different characters;
    * named: where the font names its glyphs, the glyph for a character must carry the
      character's standard (Adobe Glyph List) name, so symbol fonts that put arrows and
      brackets at ASCII code points (cmex10, cmsy10) fail;
    * cased: when the charset has ``h`` and ``x``, a font whose ``h`` is no taller than its
      ``x`` draws lowercase as small capitals and would make case-sensitive labels wrong.
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
    try:
        if {"h", "x"} <= visible and _small_caps(font, cmap):
            return None
    except Exception as err:  # an outline fontTools cannot draw: keep the cmap's verdict
        log.debug("cannot measure glyphs of %s: %s", path, err)
    family, style = _face_name(font)
    return FontFace(path=str(path), name=f"{family} {style}".strip(), family=family)


# ---------------------------------------------------------------------------- the pinned pool


def _variation_names(path: str) -> list[str]:
    from PIL import ImageFont

    try:
        names = ImageFont.truetype(path, 12).get_variation_names()
    except (OSError, AttributeError):  # not a variable font
        return []
    return [n.decode() if isinstance(n, bytes) else n for n in names]


def _fontpkg_faces(name: str, info: Family, chars: str) -> list[FontFace] | None:
    """The faces of one ``fontpkg`` family, or None when it is not installed."""
    try:
        import fontpkg

        fam = fontpkg.family(name)
    except Exception:  # ImportError, or fontpkg.FamilyNotInstalled
        return None
    faces = []
    for f in fam.files:
        base = check_font(f.path, chars)
        if base is None:
            continue
        common = dict(path=str(f.path), family=name, category=info.category,
                      licence=fam.license or info.licence)
        if f.variable:
            for inst in _variation_names(str(f.path)):
                faces.append(FontFace(name=f"{name} {inst}", variation=inst, **common))
        else:
            style = _WEIGHTS.get(f.weight or 400, str(f.weight))
            if f.style == "italic":
                style = "Italic" if style == "Regular" else f"{style} Italic"
            faces.append(FontFace(name=f"{name} {style}", **common))
    return faces


def _matplotlib_faces(chars: str) -> list[FontFace]:
    try:
        import matplotlib
    except ImportError:
        return []
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    faces = []
    for path in sorted(folder.glob("*.ttf")):
        face = check_font(path, chars)
        if face is not None and face.family in FAMILIES:
            info = FAMILIES[face.family]
            faces.append(replace(face, category=info.category, licence=info.licence))
    return faces


def font_pool(chars: str = DEFAULT_CHARS, which: PoolName = "all", strict: bool = True
              ) -> list[FontFace]:
    """The faces of the pinned pool that cover ``chars``, sorted by name.

    Args:
        chars: the charset every face must cover.
        which: ``"train"`` (families not in :data:`HELD_OUT`), ``"held_out"``, ``"all"``, or
            ``"system"`` (the machine's fonts: :func:`find_fonts`).
        strict: refuse a pool with pinned families missing (else: the families installed).

    Raises:
        NoUsableFontError: when pinned families are not installed (naming them and the fix;
            only with ``strict``), or none covers the charset.
    """
    if which == "system":
        return find_fonts(chars)
    if which not in ("train", "held_out", "all"):
        raise ValueError(f"font pool must be train, held_out, all or system, got {which!r}")
    keep = {"all": lambda f: True, "held_out": lambda f: f.family in HELD_OUT,
            "train": lambda f: f.family not in HELD_OUT}[which]
    out = [f for f in _pinned_faces(chars, strict) if keep(f)]
    if not out:
        raise NoUsableFontError(f"no face of the {which!r} pool covers {chars!r}")
    return out


@lru_cache(maxsize=8)
def _pinned_faces(chars: str, strict: bool = True) -> tuple[FontFace, ...]:
    faces: dict[str, FontFace] = {}
    missing = []
    found = _matplotlib_faces(chars)
    for name, info in FAMILIES.items():
        if info.source == "fontpkg":
            got = _fontpkg_faces(name, info, chars)
            if got is None:
                missing.append(name)
            else:
                found += got
    if missing and strict:
        pkgs = " ".join("fontpkg-" + n.lower().replace(" ", "-") for n in missing)
        raise NoUsableFontError(
            f"{len(missing)} font families of the pinned pool are not installed: {missing}. "
            f"Install the project (`pip install -e .`) or `pip install {pkgs}`.")
    for face in found:
        faces.setdefault(face.name, face)  # e.g. Roboto's condensed instances = Roboto Condensed
    log.info("font pool: %d faces in %d families", len(faces), len({f.family for f in faces.values()}))
    return tuple(sorted(faces.values(), key=lambda f: f.name))


def family_of(faces: Sequence[FontFace]) -> dict[str, list[FontFace]]:
    """Faces grouped by family, families in sorted order."""
    out: dict[str, list[FontFace]] = {}
    for f in sorted(faces, key=lambda f: (f.family or f.name, f.name)):
        out.setdefault(f.family or f.name, []).append(f)
    return out


# ---------------------------------------------------------------------------- machine fonts


def font_dirs(extra: Iterable[str | os.PathLike[str]] = ()) -> list[Path]:
    """The folders searched for the machine's fonts, existing ones only, in a fixed order."""
    dirs: list[Path] = [Path(p) for p in extra]
    env = os.environ.get("OCRLIB_FONT_DIRS", "")
    dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs += [Path(p).expanduser() for p in SYSTEM_FONT_DIRS]
    return [d for d in dirs if d.is_dir()]


def find_fonts(chars: str, extra_dirs: Sequence[str | os.PathLike[str]] = ()) -> list[FontFace]:
    """The machine's usable faces for ``chars`` (system folders, ``OCRLIB_FONT_DIRS``,
    ``extra_dirs``), sorted by name. They differ from machine to machine.

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
    log.info("machine fonts: %d usable faces from %d files", len(faces), len(files))
    return tuple(sorted(faces.values(), key=lambda f: f.name))


def select_fonts(pool: Sequence[FontFace], names: Sequence[str] | None) -> list[FontFace]:
    """The faces of ``pool`` named in ``names`` (all of them when ``names`` is None).

    Raises:
        ValueError: naming the fonts that are not in the pool.
    """
    if names is None:
        return list(pool)
    by_name = {f.name: f for f in pool}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"fonts not in the pool (or lacking glyphs for the charset): {missing}")
    return [by_name[n] for n in names]
