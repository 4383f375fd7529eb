"""Encoder speed on the CPU: ocrlib's Mamba vs transformers' fallback vs BiLSTM vs Transformer.

ocrlib's Mamba runs twice: with the compiled C scan (:mod:`ocrlib.fused`, the default where a
C compiler exists) and with the scan in PyTorch operations (``fused.disabled()``).

All contenders run side by side in one process, in interleaved rounds (the machine is
noisy), on the same input: batch 16, T = 80, 512 input channels; Mamba 4 layers, d_model
256. The BiLSTM baselines are sized to the Mamba encoder's parameter count (2 layers: the
classic CRNN; 4 layers: the same depth). Peak memory is measured per contender in a fresh
child process: the peak RSS growth over two training steps (Linux only), gradients and
cached buffers included.

Usage: python benchmarks/encoder_speed.py [--rounds 5] [--threads 2] [--no-memory]
Prints a table, then a final ``key: value`` block.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import statistics
import time
from collections.abc import Callable

import torch

from ocrlib import fused
from ocrlib.encoder import EncoderConfig, build_encoder, matched_bilstm
from ocrlib.sizes import count_params

B, T, C_IN = 16, 80, 512
MAMBA = dict(kind="mamba", d_model=256, n_layers=4, dropout=0.0)
OURS = "mamba (ocrlib, fused C scan)"
EAGER = "mamba (ocrlib, PyTorch-ops scan)"  # the same with ocrlib.fused switched off


def scan_mode(name: str) -> contextlib.AbstractContextManager:
    """The PyTorch-ops contender runs with the compiled scan switched off."""
    return fused.disabled() if name == EAGER else contextlib.nullcontext()


def contenders() -> dict[str, EncoderConfig]:
    mamba = EncoderConfig(**MAMBA, scan="fast")
    out = {
        OURS: mamba,
        EAGER: mamba,
        "mamba (transformers fallback)": EncoderConfig(**MAMBA, scan="transformers"),
    }
    for layers in (2, 4):
        out[f"bilstm {layers} layers (same params)"] = matched_bilstm(mamba, n_layers=layers)
    out["transformer 4 layers"] = EncoderConfig(kind="transformer", d_model=256, n_layers=4,
                                                dropout=0.0)
    return out


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def train_step(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        model.zero_grad(set_to_none=True)
        model(x).square().mean().backward()
    return run


def infer_step(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            model(x)
    return run


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _peak_child(name: str, cfg: EncoderConfig, threads: int, queue: mp.Queue) -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(threads)
    with scan_mode(name):
        torch.manual_seed(0)
        model = build_encoder(cfg)
        x = torch.randn(B, T, C_IN)
        infer_step(model, x)()  # load lazily initialised libraries
        before = _status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak (VmHWM) to the current RSS
        for _ in range(2):  # the second step shows the steady state (gradients, cached buffers)
            train_step(model, x)()
    queue.put((_status_kib("VmHWM") - before) / 1024)


def peak_mib(name: str, cfg: EncoderConfig, threads: int) -> float:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_child, args=(name, cfg, threads, queue))
    proc.start()
    result = queue.get(timeout=600)
    proc.join()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--slow-rounds", type=int, default=2, help="rounds for transformers' fallback")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-memory", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()

    x = torch.randn(B, T, C_IN, generator=torch.Generator().manual_seed(0))
    cfgs = contenders()
    models, params = {}, {}
    for name, cfg in cfgs.items():
        torch.manual_seed(0)
        models[name] = build_encoder(cfg).train()
        params[name] = count_params(models[name])
    train = {n: [] for n in cfgs}
    infer = {n: [] for n in cfgs}
    for name, m in models.items():  # warm-up (and the scan's compilation)
        with scan_mode(name):
            train_step(m, x)()
            infer_step(m, x)()
    if not fused.available():
        print(f"note: the fused scan is unavailable ({fused.problem()}): both Mamba rows are "
              "the PyTorch-ops scan")
    for r in range(args.rounds):
        for name, m in models.items():
            if "transformers" in name and r >= args.slow_rounds:
                continue
            with scan_mode(name):
                train[name].append(timed(train_step(m, x)))
                infer[name].append(timed(infer_step(m, x)))
    mem = {} if args.no_memory else {n: peak_mib(n, c, args.threads) for n, c in cfgs.items()}

    med = {n: statistics.median(v) for n, v in train.items()}
    med_inf = {n: statistics.median(v) for n, v in infer.items()}
    print(f"batch {B}, T {T}, input {C_IN}, {args.threads} threads, medians of interleaved rounds")
    print(f"{'encoder':38}{'params':>10}{'train ms':>10}{'infer ms':>10}{'peak MiB':>10}")
    for n in cfgs:
        peak = f"{mem[n]:10.0f}" if n in mem else f"{'-':>10}"
        print(f"{n:38}{params[n]:10,}{med[n] * 1e3:10.1f}{med_inf[n] * 1e3:10.1f}{peak}")
    ours = OURS
    fallback = "mamba (transformers fallback)"
    lstm2, lstm4 = "bilstm 2 layers (same params)", "bilstm 4 layers (same params)"
    print()
    print(f"speedup_vs_transformers_fallback: {med[fallback] / med[ours]:.1f}")
    print(f"infer_speedup_vs_transformers_fallback: {med_inf[fallback] / med_inf[ours]:.1f}")
    print(f"time_ratio_vs_bilstm: {med[ours] / med[lstm2]:.2f}")
    print(f"time_ratio_vs_bilstm_4_layers: {med[ours] / med[lstm4]:.2f}")
    print(f"infer_time_ratio_vs_bilstm: {med_inf[ours] / med_inf[lstm2]:.2f}")
    print(f"fused_vs_pytorch_ops_scan_time_ratio: {med[ours] / med[EAGER]:.2f}")
    print(f"fused_vs_pytorch_ops_scan_infer_ratio: {med_inf[ours] / med_inf[EAGER]:.2f}")
    print(f"time_ratio_vs_transformer: {med[ours] / med['transformer 4 layers']:.2f}")
    print(f"bilstm_param_ratio: {params[lstm2] / params[ours]:.3f}")
    if mem:
        print(f"peak_mib_ratio_vs_bilstm: {mem[ours] / max(mem[lstm2], 1e-9):.2f}")
        print(f"peak_mib_fused_vs_pytorch_ops_scan: {mem[ours] / max(mem[EAGER], 1e-9):.2f}")
        print(f"peak_mib_ratio_vs_transformers_fallback: {mem[ours] / max(mem[fallback], 1e-9):.2f}")


if __name__ == "__main__":
    main()
