"""The ``ocrlib`` command line (also ``python -m ocrlib``)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

log = logging.getLogger("ocrlib")


def _cmd_synth(args: argparse.Namespace) -> int:
    from .synth import SynthConfig, generate, generate_splits

    cfg = SynthConfig(
        chars=args.chars, min_len=args.min_len, max_len=args.max_len, text_file=args.text_file
    )
    common = dict(workers=args.workers, overwrite=args.overwrite, progress=not args.quiet)
    if args.splits:
        sizes = {}
        for part in args.splits.split(","):
            name, _, count = part.partition("=")
            sizes[name.strip()] = int(count)
        results = generate_splits(args.out, sizes, args.seed, cfg, **common)
        for name, res in results.items():
            print(f"{name}: {res.n} images in {res.out} ({len(res.fonts)} fonts)")
    else:
        if args.n is None:
            raise SystemExit("ocrlib synth: give --n N (or --splits train=N,val=N,test=N)")
        res = generate(args.out, args.n, args.seed, cfg, split=args.split, **common)
        print(f"{res.n} images in {res.out} ({len(res.fonts)} fonts)")
    return 0


def _cmd_clean(args: argparse.Namespace) -> int:
    from .clean import check_inside, default_targets, find_project_root, remove

    root = find_project_root(args.root)
    targets = check_inside(args.paths, root) if args.paths else default_targets(root)
    targets = [p for p in targets if p.exists() or p.is_symlink()]
    if not targets:
        print("nothing to remove")
        return 0
    print(f"will remove {len(targets)} paths under {root}:")
    for p in targets:
        print(f"  {p.relative_to(root) if p.is_relative_to(root) else p}")
    if not args.yes:
        if not sys.stdin.isatty():
            print("not removing anything: no terminal to ask; pass --yes", file=sys.stderr)
            return 1
        if input("remove them? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing removed")
            return 1
    remove(targets)
    print(f"removed {len(targets)} paths")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from .data import read_labels
    from .viz import label_stats, sample_grid

    items = read_labels(args.folder)
    stats = label_stats([it.text for it in items])
    print(f"{args.folder}: {stats.n} samples, label length {min(stats.lengths)}-{max(stats.lengths)} "
          f"(mean {stats.mean_length:.1f}), {len(stats.chars)} distinct characters")
    for it in items[: args.n]:
        print(f"  {it.path.relative_to(args.folder) if it.path.is_relative_to(args.folder) else it.path}"
              f"\t{it.text}")
    if args.grid:
        sample_grid(items[: args.n], path=args.grid)
        print(f"sample grid written to {args.grid}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .charset import DEFAULT_CHARS

    p = argparse.ArgumentParser(prog="ocrlib", description="MambaOCR workbook tools")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="generate a labelled folder of synthetic text images")
    s.add_argument("--out", required=True, help="output folder (with --splits: the parent folder)")
    s.add_argument("--n", type=int, help="number of images")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--split", default="custom", choices=["custom", "train", "val", "test"],
                   help="random stream: sets of different splits never share a sample")
    s.add_argument("--splits", help="make OUT/train, OUT/val, ... at once, e.g. train=2000,val=200")
    s.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    s.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    s.add_argument("--chars", default=DEFAULT_CHARS, help="the charset (default 0-9a-zA-Z)")
    s.add_argument("--min-len", type=int, default=3)
    s.add_argument("--max-len", type=int, default=10)
    s.add_argument("--text-file", help="take labels from this file, one line per sample")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_synth)

    v = sub.add_parser("show", help="summarise a labelled folder (and draw a sample grid)")
    v.add_argument("folder")
    v.add_argument("--n", type=int, default=9, help="samples to list")
    v.add_argument("--grid", help="write a PNG grid of the listed samples here")
    v.set_defaults(func=_cmd_show)

    c = sub.add_parser("clean", help="remove generated data, checkpoints and caches")
    c.add_argument("paths", nargs="*", help="what to remove (default: data/*, checkpoints/*, caches)")
    c.add_argument("--root", help="the project folder (default: found from the current folder)")
    c.add_argument("--yes", action="store_true", help="do not ask")
    c.set_defaults(func=_cmd_clean)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, FileExistsError, NotADirectoryError, ValueError, RuntimeError) as err:
        print(f"ocrlib {args.command}: error: {err}", file=sys.stderr)
        return 2
