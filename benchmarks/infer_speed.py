"""Inference speed on the CPU: images/s at batch 1 and 64, greedy vs beam, per encoder.

The three encoders (Mamba, BiLSTM, Transformer) are built in the ``laptop`` profile's shape
(ResNet34 backbone, 32x320 images, T = 80, 2 encoder layers of width 256; the BiLSTM sized
to the Mamba encoder's parameter count) with random weights: speed does not depend on what
the weights learned, except in the beam search, whose cost depends on how peaked the scores
are. So the model (images -> log-probabilities) and the decoders are timed separately, in
one run, and combined per image:

- model: forward pass in eval mode under ``torch.inference_mode``, interleaved rounds,
  medians;
- decoders: on trained-like scores of the same shape (see ``decode_speed.trained_like``), or
  on a real checkpoint's scores with ``--checkpoint PATH --data DIR``;
- end to end: ``1 / (model seconds per image + decoder seconds per image)``.

Image loading and resizing are not included (``ocrlib eval`` reports its own end-to-end
rate, loading included).

    python benchmarks/infer_speed.py [--threads 2] [--rounds 3] [--checkpoint P --data D]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decode_speed import from_checkpoint, trained_like  # noqa: E402

from ocrlib.decoding import beam_search_batch, greedy_decode  # noqa: E402
from ocrlib.encoder import EncoderConfig, matched_bilstm  # noqa: E402
from ocrlib.model import MambaOCR  # noqa: E402
from ocrlib.train import profiles  # noqa: E402


def models() -> dict[str, MambaOCR]:
    base = profiles()["laptop"].model
    mamba_cfg = EncoderConfig(kind="mamba", d_model=256, n_layers=2, dropout=0.0)
    lstm_cfg = matched_bilstm(mamba_cfg)
    tf_cfg = EncoderConfig(kind="transformer", d_model=256, n_layers=2, dropout=0.0)
    out = {}
    for name, enc in (("mamba", mamba_cfg), ("bilstm", lstm_cfg), ("transformer", tf_cfg)):
        cfg = dataclasses.replace(base, encoder=enc)
        torch.manual_seed(0)
        out[name] = MambaOCR(cfg).eval()
    return out


def seconds_per_call(fn, rounds: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--beam-width", type=int, default=10)
    ap.add_argument("--checkpoint")
    ap.add_argument("--data")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    nets = models()
    any_net = next(iter(nets.values()))
    charset, (H, W) = any_net.charset, (any_net.cfg.height, any_net.cfg.width)

    model_s: dict[tuple[str, int], list[float]] = {}
    for batch in (1, 64):
        x = torch.randn(batch, 3, H, W)
        for _ in range(args.rounds):  # interleaved: every encoder sees the same machine state
            for name, net in nets.items():
                with torch.inference_mode():
                    t = seconds_per_call(lambda: net(x), 1)
                model_s.setdefault((name, batch), []).append(t / batch)

    with torch.inference_mode():
        T = any_net(torch.randn(1, 3, H, W)).shape[1]
    if args.checkpoint and args.data:
        scores, cs = from_checkpoint(args.checkpoint, args.data, 64)
        source = f"{args.checkpoint} on {args.data}"
    else:
        scores, cs = trained_like(64, T, charset.num_classes), charset
        source = "trained-like synthetic scores"
    decode_s = {}
    for batch in (1, 64):
        lp = scores[:batch]
        decode_s[("greedy", batch)] = seconds_per_call(lambda: greedy_decode(lp, cs), args.rounds) / batch
        decode_s[("beam", batch)] = seconds_per_call(
            lambda: beam_search_batch(lp, cs, args.beam_width), args.rounds) / batch

    print(f"{args.threads} threads; model: random weights, laptop shape (32x{W}, T={T}); "
          f"decoders on {source}; medians of {args.rounds}")
    print(f"{'encoder':<13}{'params':>12}{'batch':>7}{'model img/s':>13}"
          f"{'+greedy img/s':>15}{'+beam-' + str(args.beam_width) + ' img/s':>17}")
    for (name, batch), times in model_s.items():
        m = statistics.median(times)
        g, b = decode_s[("greedy", batch)], decode_s[("beam", batch)]
        params = sum(p.numel() for p in nets[name].parameters())
        print(f"{name:<13}{params:>12,}{batch:>7}{1 / m:>13.1f}{1 / (m + g):>15.1f}{1 / (m + b):>17.1f}")
    print("decoder alone, lines/s: " + ", ".join(
        f"{k} batch {bs}: {1 / v:.0f}" for (k, bs), v in decode_s.items()))


if __name__ == "__main__":
    main()
