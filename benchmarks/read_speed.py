"""Reading a set: labelled folder vs LMDB, side by side in one run.

Generates ``--n`` lines of the `laptop` profile (or takes ``--data``), converts them to an LMDB
set, then times ``OCRDataset`` over every sample (decoding, resizing, normalisation: what a
training step's loading does), interleaving the two formats over ``--rounds`` rounds, warm
(the files in the page cache, as in training after the first epoch). Also the time to open the
set (reading the labels and checking every image is there). Prints samples/s and the ratio.

    python benchmarks/read_speed.py [--n 2000] [--rounds 3] [--data FOLDER]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ocrlib.data import OCRDataset  # noqa: E402
from ocrlib.lmdbset import folder_to_lmdb  # noqa: E402
from ocrlib.profiles import profiles  # noqa: E402
from ocrlib.synth import generate  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--data", help="a labelled folder (default: --n laptop-profile lines)")
    args = p.parse_args()
    prof = profiles()["laptop"]
    tmp = Path(tempfile.mkdtemp())
    folder = Path(args.data) if args.data else tmp / "folder"
    if not args.data:
        generate(folder, args.n, seed=0, cfg=prof.synth, split="train", progress=False)
    t0 = time.perf_counter()
    folder_to_lmdb(folder, tmp / "set.lmdb")
    convert_s = time.perf_counter() - t0
    sets = {"folder": folder, "lmdb": tmp / "set.lmdb"}
    open_s: dict[str, list[float]] = {k: [] for k in sets}
    read_s: dict[str, list[float]] = {k: [] for k in sets}
    for _ in range(args.rounds + 1):  # the first round warms the page cache, not counted
        for name, path in sets.items():
            t0 = time.perf_counter()
            ds = OCRDataset(path, prof.model.charset, normalize=prof.model.normalize)
            t1 = time.perf_counter()
            for i in range(len(ds)):
                ds[i]
            open_s[name].append(t1 - t0)
            read_s[name].append(time.perf_counter() - t1)
    n = len(ds)
    print(f"{n} laptop-profile lines; converted to LMDB in {convert_s:.1f} s; medians of "
          f"{args.rounds} warm rounds")
    print(f"{'format':<8}{'open s':>9}{'samples/s':>11}")
    rate = {k: n / statistics.median(v[1:]) for k, v in read_s.items()}
    for name in sets:
        print(f"{name:<8}{statistics.median(open_s[name][1:]):>9.3f}{rate[name]:>11.0f}")
    print(f"lmdb_vs_folder_read_ratio: {rate['lmdb'] / rate['folder']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
