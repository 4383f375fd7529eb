"""How the encoders' cost grows with the line's length: Mamba vs BiLSTM vs Transformer on the CPU.

For T = 80, 160, 320, 640 and 1280 frames (lines 320 to 5,120 pixels wide) with the batch
shrunk to keep B·T = 1,280 frames, the time of one training step (forward and backward) and of
one inference pass of: Mamba (ocrlib's fast scan, 4 layers, d_model 256), a 2-layer BiLSTM with
the same number of parameters, and a 4-layer Transformer encoder of width 256. Interleaved
rounds, medians. Mamba and the BiLSTM do work linear in T; self-attention's grows with T².

    python benchmarks/length_scaling.py [--rounds 3] [--threads 2] \
        [--out benchmarks/results/length_scaling.json]

Prints a table and ``mamba_vs_transformer_time_ratio_at_T1280:`` (training step; below 1:
Mamba is faster); writes the numbers as JSON and a log-log plot beside it (.png), which
notebook 03 shows.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ocrlib.encoder import EncoderConfig, build_encoder, matched_bilstm  # noqa: E402
from ocrlib.sizes import count_params  # noqa: E402

FRAMES = 1280
LENGTHS = (80, 160, 320, 640, 1280)


def contenders() -> dict[str, EncoderConfig]:
    mamba = EncoderConfig(d_model=256, n_layers=4, dropout=0.0, scan="fast")
    return {"mamba": mamba, "bilstm": matched_bilstm(mamba, n_layers=2),
            "transformer": EncoderConfig(kind="transformer", d_model=256, n_layers=4, dropout=0.0)}


def step_times(model: torch.nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """Seconds of one training step (forward + backward) and of one inference pass."""
    model.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    model(x).square().mean().backward()
    t1 = time.perf_counter()
    with torch.no_grad():
        model(x)
    return t1 - t0, time.perf_counter() - t1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/length_scaling.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    models = {}
    for name, cfg in contenders().items():
        torch.manual_seed(0)
        models[name] = build_encoder(cfg)
    train: dict[tuple[str, int], list[float]] = {}
    infer: dict[tuple[str, int], list[float]] = {}
    for T in LENGTHS:
        x = torch.randn(FRAMES // T, T, 512)
        for name, model in models.items():  # warm-up at this shape
            step_times(model, x)
        for _ in range(args.rounds):
            for name, model in models.items():
                tr, inf = step_times(model, x)
                train.setdefault((name, T), []).append(tr)
                infer.setdefault((name, T), []).append(inf)
    rows = [{"encoder": n, "T": T, "batch": FRAMES // T, "params": count_params(models[n]),
             "train_ms": round(1000 * statistics.median(train[n, T]), 1),
             "infer_ms": round(1000 * statistics.median(infer[n, T]), 1)}
            for T in LENGTHS for n in models]
    print(f"{'T':>5}{'batch':>6}" + "".join(f"{n + ' train':>18}{n + ' infer':>18}" for n in models))
    for T in LENGTHS:
        cells = {r["encoder"]: r for r in rows if r["T"] == T}
        print(f"{T:>5}{FRAMES // T:>6}" + "".join(
            f"{cells[n]['train_ms']:>15.0f} ms{cells[n]['infer_ms']:>15.0f} ms" for n in models))
    at = {r["encoder"]: r for r in rows if r["T"] == LENGTHS[-1]}
    ratio = at["mamba"]["train_ms"] / at["transformer"]["train_ms"]
    print(f"mamba_vs_transformer_time_ratio_at_T1280: {ratio:.2f}")
    print(f"mamba_vs_transformer_infer_ratio_at_T1280: "
          f"{at['mamba']['infer_ms'] / at['transformer']['infer_ms']:.2f}")
    out = {"command": "python benchmarks/length_scaling.py",
           "machine": f"{platform.machine()}, {args.threads} threads, torch {torch.__version__}",
           "frames_per_batch": FRAMES, "rows": rows}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    plot(rows, path.with_suffix(".png"))
    return 0


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    for ax, key, title in ((axes[0], "train_ms", "training step"), (axes[1], "infer_ms", "inference")):
        for name in dict.fromkeys(r["encoder"] for r in rows):
            pts = [(r["T"], r[key]) for r in rows if r["encoder"] == name]
            ax.loglog(*zip(*pts), marker="o", label=name)
        ax.set(xlabel="frames per line T (batch × T = 1,280)", title=title)
    axes[0].set_ylabel("ms per batch")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
