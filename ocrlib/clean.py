"""``ocrlib clean``: remove generated data, checkpoints and caches, only inside the project."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

#: Files that keep the otherwise-ignored folders in git.
KEEP = {".gitkeep"}
CACHE_DIRS = ("__pycache__", ".pytest_cache", ".ipynb_checkpoints")


class OutsideProjectError(ValueError):
    """A path to remove lies outside the project (or is the project itself, or its .git)."""


def find_project_root(start: str | os.PathLike[str] | None = None) -> Path:
    """The nearest folder at or above ``start`` whose pyproject.toml names the ocrlib project."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        py = folder / "pyproject.toml"
        if py.is_file() and 'name = "mambaocr' in py.read_text(encoding="utf-8"):
            return folder
    raise FileNotFoundError(f"{here} is not inside the MambaOCR project (no pyproject.toml found)")


def default_targets(root: Path) -> list[Path]:
    """Generated data, checkpoints and caches under ``root`` (never .venv or .git)."""
    found: list[Path] = []
    for name in ("data", "checkpoints"):
        folder = root / name
        if folder.is_dir():
            found += sorted(p for p in folder.iterdir() if p.name not in KEEP)
    for sub in ("ocrlib", "tests", "benchmarks", "notebooks", "."):
        base = root / sub
        if not base.is_dir():
            continue
        pattern = "*" if sub == "." else "**/*"
        found += sorted(p for p in base.glob(pattern) if p.is_dir() and p.name in CACHE_DIRS)
    return list(dict.fromkeys(found))


def check_inside(paths: Iterable[str | os.PathLike[str]], root: Path) -> list[Path]:
    """Resolve ``paths`` (following links) and refuse any outside ``root``, ``root`` itself or .git."""
    root = root.resolve()
    out = []
    for p in paths:
        # refuse a link that leads out of the project, and anything it points to
        resolved = Path(p).resolve()
        if resolved == root or root not in resolved.parents:
            raise OutsideProjectError(f"refusing to remove {p}: it is not inside the project {root}")
        if ".git" in resolved.relative_to(root).parts:
            raise OutsideProjectError(f"refusing to remove {p}: it is part of the git repository")
        out.append(Path(p).absolute())
    return out


def remove(paths: Iterable[Path]) -> None:
    """Delete files and folders (a link is removed, never followed)."""
    for p in paths:
        if p.is_symlink() or p.is_file():
            p.unlink()
        elif p.is_dir():
            shutil.rmtree(p)
