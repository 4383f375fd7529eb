"""The ``ocrlib`` command line (also ``python -m ocrlib``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .recrop import DEFAULT_RECROP, DEFAULT_STRETCH, MAX_RECROP, STRETCH_RANGE

log = logging.getLogger("ocrlib")


def _numbers_arg(what: str, example: str, lo: float, hi: float
                 ) -> Callable[[str], tuple[float, ...]]:
    """An argparse type for ``none`` or comma-separated numbers in ``lo..hi`` (``what`` they
    are, for the error message)."""
    def parse(text: str) -> tuple[float, ...]:
        if text.strip().lower() in ("none", ""):
            return ()
        try:
            values = tuple(float(x) for x in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {what} like {example} or none, got {text!r}") from None
        if any(not lo <= v <= hi for v in values):
            raise argparse.ArgumentTypeError(f"{what} lie in {lo:g}..{hi:g}, got {text!r}")
        return values
    return parse


#: ``--recrop``: margins as fractions of the ink's height, in 0..:data:`MAX_RECROP`
_recrop_arg = _numbers_arg("margins (fractions of the ink's height)", "0.15,0.3", 0.0, MAX_RECROP)
#: ``--stretch``: width factors in :data:`STRETCH_RANGE`
_stretch_arg = _numbers_arg("width factors", "0.8,1.25", *STRETCH_RANGE)


def _cmd_synth(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .synth import SynthConfig, generate, generate_splits

    cfg = SynthConfig(
        chars=args.chars, min_len=args.min_len, max_len=args.max_len, text_file=args.text_file
    )
    common = dict(workers=args.workers, overwrite=args.overwrite, progress=not args.quiet)
    if args.profile:
        from .profiles import profiles

        prof = profiles()[args.profile]
        cfg = replace(prof.synth, text_file=args.text_file)
        if not args.splits:
            args.splits = ",".join(f"{k}={v}" for k, v in prof.sizes.items())
    if args.fonts is not None:
        cfg = replace(cfg, font_pool=args.fonts, fonts=None)
    if args.splits:
        sizes = {}
        for part in args.splits.split(","):
            name, _, count = part.partition("=")
            sizes[name.strip()] = int(count)
        results = generate_splits(args.out, sizes, args.seed, cfg, **common)
        for name, res in results.items():
            print(f"{name}: {res.n} images in {_as_format(res.out, args.format)} ({len(res.fonts)} fonts)")
    else:
        if args.n is None:
            raise SystemExit("ocrlib synth: give --n N (or --splits train=N,val=N,test=N)")
        res = generate(args.out, args.n, args.seed, cfg, split=args.split, **common)
        print(f"{res.n} images in {_as_format(res.out, args.format)} ({len(res.fonts)} fonts)")
    return 0


def _as_format(folder: Any, fmt: str) -> str:
    """``--format lmdb``: turn the folder just written into an LMDB set in its place."""
    import shutil
    from pathlib import Path

    from .lmdbset import folder_to_lmdb

    if fmt != "lmdb":
        return str(folder)
    folder = Path(folder)
    staging = folder.with_name(folder.name + ".lmdb-tmp")
    shutil.rmtree(staging, ignore_errors=True)
    folder_to_lmdb(folder, staging)
    shutil.rmtree(folder)
    staging.rename(folder)
    return f"{folder} (LMDB)"


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


def _cmd_convert(args: argparse.Namespace) -> int:
    from .lmdbset import folder_to_lmdb, is_lmdb, lmdb_to_folder

    if is_lmdb(args.src):
        n, kind = lmdb_to_folder(args.src, args.dst, overwrite=args.overwrite), "labelled folder"
    else:
        n, kind = folder_to_lmdb(args.src, args.dst, overwrite=args.overwrite), "LMDB set"
    print(f"wrote {n} samples to {args.dst} ({kind})")
    return 0


def _cmd_fonts(args: argparse.Namespace) -> int:
    from .fonts import FAMILIES, HELD_OUT, family_of, font_pool

    faces = font_pool(args.chars, args.pool)
    groups = family_of(faces)
    print(f"{len(faces)} faces in {len(groups)} families ({args.pool} pool)")
    print(f"{'family':26}{'faces':>6}  {'category':12}{'split':10}{'source':12}licence")
    for family, members in groups.items():
        info = FAMILIES.get(family)
        split = "held out" if family in HELD_OUT else "train"
        src = info.source if info else "machine"
        lic = members[0].licence or (info.licence if info else "?")
        cat = members[0].category or (info.category if info else "?")
        print(f"{family:26}{len(members):>6}  {cat:12}{split:10}{src:12}{lic}")
        if args.faces:
            for f in members:
                print(f"    {f.name}  ({f.path}{', ' + f.variation if f.variation else ''})")
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


def _cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .profiles import profile_with
    from .train import train_profile

    prof = profile_with(args.profile, steps=args.steps, batch_size=args.batch_size,
                        device=args.device, amp=args.amp, seed=args.seed)
    if args.budget is not None:
        prof.train.budget = args.budget or None
    elif args.steps is not None:  # an explicit number of steps wins over the profile's budget
        prof.train.budget = None
    if args.job_seconds is not None or args.job_started is not None:
        prof.train.budget = _job_budget(args, prof.train.budget)
    from .lmdbset import is_lmdb

    for folder in [*args.train, args.val]:
        if not (Path(folder) / "labels.txt").is_file() and not is_lmdb(folder):
            raise FileNotFoundError(
                f"no labels.txt (or LMDB data.mdb) in {folder}: generate the data first, e.g. "
                f"`ocrlib synth --out {Path(folder).parent} --profile {args.profile}`")
    res = train_profile(prof, args.train, args.val, args.out, resume=args.resume,
                        init_from=args.init_from, progress=not args.quiet, skip_bad=args.skip_bad,
                        mix=args.mix)
    if int(os.environ.get("RANK", "0")):
        return 0  # under torchrun, rank 0 reports
    print(f"trained {res.step} steps in {res.seconds:.0f} s; best validation CER "
          f"{res.best_cer:.4f}; skipped batches: {res.skipped_batches}")
    print(f"best checkpoint: {res.best}\nresume checkpoint: {res.last}")
    return 0


def _job_budget(args: argparse.Namespace, cap: float | None) -> float:
    """The training budget ``--job-seconds``/``--job-started`` leave a run whose own is ``cap``."""
    from .budget import budget_for_job

    if args.job_seconds is None or args.job_started is None:
        raise ValueError("--job-seconds and --job-started go together")
    if cap is None:
        raise ValueError("--job-seconds fits the run to a time budget: it cannot go with --steps "
                         "or --budget 0")
    if args.resume:
        raise ValueError("--job-seconds fits a fresh run to what its job has left; a resumed run "
                         "keeps the steps it was fitted to: resume without it")
    return budget_for_job(args.job_seconds, args.job_started, cap)


def _cmd_eval(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .inference import Recognizer

    rec = Recognizer.from_checkpoint(args.checkpoint, device=args.device, decoder=args.decoder,
                                     beam_width=args.beam_width, recrop=args.recrop,
                                     flip_unsure=args.flip_unsure, stretch=args.stretch,
                                     colour_view=args.colour_view, combine=args.combine)
    r = rec.evaluate(args.data, batch_size=args.batch_size, limit=args.limit, skip_bad=args.skip_bad)
    for why in r["skipped"]:
        print(f"ocrlib eval: skipped {why}", file=sys.stderr)
    keys = ("cer", "wer", "accuracy", "cer_ci", "n", "images_per_s")
    if args.failures:
        from .analysis import error_table
        from .viz import failure_grid

        table = error_table(r["references"], r["predictions"], r["paths"], r["confidences"])
        failure_grid(table, args.failures)
    if args.json:
        print(json.dumps({k: r[k] for k in keys}))
    else:
        for path, ref, hyp, conf in list(zip(r["paths"], r["references"], r["predictions"],
                                             r["confidences"]))[: args.show]:
            mark = "ok " if ref == hyp else "ERR"
            print(f"{mark} {Path(path).name}: read {hyp!r} (truth {ref!r}, confidence {conf:.2f})")
        print(f"{args.data}: {r['n']} images, CER {r['cer']:.4f} (case-insensitive "
              f"{r['cer_ci']:.4f}), WER {r['wer']:.4f}, accuracy {r['accuracy']:.4f}, "
              f"{r['images_per_s']:.0f} images/s ({args.decoder})")
        if args.failures:
            print(f"the worst readings are drawn in {args.failures}")
    return 0


def _cmd_infer(args: argparse.Namespace) -> int:
    from .inference import Recognizer, expand_paths, infer_paths

    rec = Recognizer.from_checkpoint(args.checkpoint, device=args.device, decoder=args.decoder,
                                     beam_width=args.beam_width, recrop=args.recrop,
                                     flip_unsure=args.flip_unsure, stretch=args.stretch,
                                     colour_view=args.colour_view, combine=args.combine)
    paths = expand_paths(args.paths)
    results, failures = infer_paths(rec, paths, args.batch_size)
    for path, d in results:
        print(f"{path}\t{d.text}\t{d.confidence:.4f}")
    for path, why in failures:
        print(f"ocrlib infer: skipped {path}: {why}", file=sys.stderr)
    if not paths:
        print("ocrlib infer: no images found", file=sys.stderr)
    return 1 if failures or not paths else 0


def _add_synth(sub: Any, default_chars: str) -> None:
    """The ``synth`` subcommand's options."""
    s = sub.add_parser("synth", help="generate a labelled folder of synthetic text images")
    s.add_argument("--out", required=True, help="output folder (with --splits: the parent folder)")
    s.add_argument("--n", type=int, help="number of images")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--split", default="custom", choices=["custom", "train", "val", "test"],
                   help="random stream: sets of different splits never share a sample")
    s.add_argument("--splits", help="make OUT/train, OUT/val, ... at once, e.g. train=2000,val=200")
    s.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    s.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    s.add_argument("--chars", default=default_chars, help="the charset (default 0-9a-zA-Z)")
    s.add_argument("--min-len", type=int, default=3)
    s.add_argument("--max-len", type=int, default=10)
    s.add_argument("--text-file", help="take labels from this file, one line per sample")
    s.add_argument("--fonts", choices=["auto", "train", "held_out", "all", "system"],
                   help="font pool (default auto: held-out families for the test split, the "
                        "training families otherwise; system: this machine's fonts)")
    s.add_argument("--profile", choices=["tiny", "laptop", "gpu"],
                   help="use a training profile's charset, style and split sizes")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--format", choices=["folder", "lmdb"], default="folder",
                   help="a labelled folder (images/, labels.txt, meta.jsonl) or an LMDB set")
    s.set_defaults(func=_cmd_synth)


def build_parser() -> argparse.ArgumentParser:
    from .charset import DEFAULT_CHARS

    p = argparse.ArgumentParser(prog="ocrlib", description="MambaOCR workbook tools")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True)

    _add_synth(sub, DEFAULT_CHARS)

    t = sub.add_parser("train", help="train a model with CTC")
    t.add_argument("--profile", default="laptop", choices=["tiny", "laptop", "gpu"])
    t.add_argument("--train", nargs="+", default=["data/train"], metavar="SRC",
                   help="labelled training folder(s) or LMDB(s); several are mixed (--mix)")
    t.add_argument("--mix", nargs="+", type=float, metavar="RATIO",
                   help="share of every batch from each --train source, e.g. 0.7 0.3 "
                        "(default: in proportion to their sizes)")
    t.add_argument("--val", default="data/val", help="labelled validation folder")
    t.add_argument("--init-from", metavar="CKPT",
                   help="start from this checkpoint's weights (fine-tuning; same model)")
    t.add_argument("--out", default="checkpoints/best_mamba_ocr.pth", help="best checkpoint")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    t.add_argument("--steps", type=int,
                   help="train this many steps (instead of the profile's, or its time budget)")
    t.add_argument("--budget", type=float, metavar="SECONDS",
                   help="train as many steps as fit in this many seconds, timed on this machine "
                        "(0: the number of steps instead; default: the profile's)")
    t.add_argument("--job-seconds", type=float, metavar="SECONDS",
                   help="this training is one stage of a job that must end within SECONDS of "
                        "--job-started (make demo: 1800): train for what the job has left, less "
                        "a reserve for the stages after training scaled to how long the stages "
                        "before it took; at most --budget or the profile's budget")
    t.add_argument("--job-started", type=float, metavar="EPOCH",
                   help="when that job started, in seconds since the epoch (`date +%%s`)")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--device", help="auto, cpu or cuda")
    t.add_argument("--amp", choices=["auto", "off", "bf16", "fp16"])
    t.add_argument("--seed", type=int)
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--skip-bad", action="store_true",
                   help="train without bad samples (each named) instead of stopping")
    t.set_defaults(func=_cmd_train)

    for name, helptext in (("eval", "score a checkpoint on a labelled folder"),
                           ("infer", "read images with a checkpoint")):
        e = sub.add_parser(name, help=helptext)
        if name == "eval":
            e.add_argument("--data", required=True, help="folder with labels.txt")
            e.add_argument("--json", action="store_true", help="one JSON object")
            e.add_argument("--limit", type=int, help="only the first N samples")
            e.add_argument("--skip-bad", action="store_true",
                           help="score without bad samples (each named) instead of stopping")
            e.add_argument("--show", type=int, default=0, help="print the first N readings")
            e.add_argument("--failures", metavar="PNG",
                           help="also draw the 9 worst readings in a 3x3 grid into this PNG")
            e.set_defaults(func=_cmd_eval)
        else:
            e.add_argument("paths", nargs="+", help="image files, folders or globs")
            e.set_defaults(func=_cmd_infer)
        e.add_argument("--checkpoint", default="checkpoints/best_mamba_ocr.pth")
        e.add_argument("--decoder", default="greedy", choices=["greedy", "beam"])
        e.add_argument("--beam-width", type=int, default=10)
        e.add_argument("--recrop", type=_recrop_arg, default=DEFAULT_RECROP, metavar="M[,M...]",
                       help="also read each line cut to its ink rows with these margins "
                            "(fractions of the ink's height); 'none' reads each line once, as given "
                            f"(default {','.join(map(str, DEFAULT_RECROP))})")
        e.add_argument("--stretch", type=_stretch_arg, default=DEFAULT_STRETCH, metavar="F[,F...]",
                       help="also read each line as given this many times as wide; "
                            "'none' reads it at its own width only "
                            f"(default {','.join(map(str, DEFAULT_STRETCH))})")
        e.add_argument("--flip-unsure", action=argparse.BooleanOptionalAction, default=True,
                       help="also read lines whose ink polarity is unsure (mostly on "
                            "photographs) with the other polarity (default: on)")
        e.add_argument("--colour-view", action=argparse.BooleanOptionalAction, default=True,
                       help="also read each coloured line in the grey that best tells its "
                            "text from its margins (ink that differs from its background in "
                            "colour more than in brightness; default: on)")
        e.add_argument("--combine", default="mean", choices=["mean", "surest"],
                       help="how the readings of a line's views (as given, crops, stretches, "
                            "colour view, other polarity) make one: 'mean', the reading "
                            "most probable on average over all the views; 'surest', the "
                            "reading whose own view is surest of it (default: mean)")
        e.add_argument("--batch-size", type=int, default=64)
        e.add_argument("--device", default="cpu")

    f = sub.add_parser("fonts", help="list the font pool: families, categories, licences")
    f.add_argument("--pool", default="all", choices=["all", "train", "held_out", "system"])
    f.add_argument("--chars", default=DEFAULT_CHARS, help="faces must cover these characters")
    f.add_argument("--faces", action="store_true", help="list every face and its file")
    f.set_defaults(func=_cmd_fonts)

    v = sub.add_parser("show", help="summarise a labelled folder (and draw a sample grid)")
    v.add_argument("folder")
    v.add_argument("--n", type=int, default=9, help="samples to list")
    v.add_argument("--grid", help="write a PNG grid of the listed samples here")
    v.set_defaults(func=_cmd_show)

    k = sub.add_parser("convert", help="a labelled folder to an LMDB set, or an LMDB set to a folder")
    k.add_argument("src", help="a labelled folder (labels.txt) or an LMDB set (data.mdb)")
    k.add_argument("dst", help="where to write the other format")
    k.add_argument("--overwrite", action="store_true", help="replace a non-empty destination")
    k.set_defaults(func=_cmd_convert)

    c = sub.add_parser("clean", help="remove generated data, checkpoints and caches")
    c.add_argument("paths", nargs="*", help="what to remove (default: data/*, checkpoints/*, caches)")
    c.add_argument("--root", help="the project folder (default: found from the current folder)")
    c.add_argument("--yes", action="store_true", help="do not ask")
    c.set_defaults(func=_cmd_clean)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_rank = int(os.environ.get("RANK", "0")) > 0  # under torchrun, rank 0 tells the story
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if quiet_rank else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, FileExistsError, NotADirectoryError, ValueError, RuntimeError) as err:
        print(f"ocrlib {args.command}: error: {err}", file=sys.stderr)
        return 2
