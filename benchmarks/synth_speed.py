"""Synthetic data generation speed: images per second with 1 worker and with all cores.

Usage: python benchmarks/synth_speed.py [--n 4000]
Prints a final `key: value` block; the target is >= 1000 images/s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from ocrlib.synth import generate


def rate(n: int, workers: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        generate(tmp + "/d", n, seed=0, workers=workers, progress=False)
        return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=4000)
    args = p.parse_args()
    cores = os.cpu_count() or 1
    rate(200, 1)  # warm the font cache and the file system
    one = rate(args.n, 1)
    all_ = rate(args.n, cores)
    print(f"cores: {cores}")
    print(f"images: {args.n}")
    print(f"images_per_s_1_worker: {one:.0f}")
    print(f"images_per_s_all_cores: {all_:.0f}")
    print(f"meets_1000_per_s: {all_ >= 1000}")


if __name__ == "__main__":
    main()
