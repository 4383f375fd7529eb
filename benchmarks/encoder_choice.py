"""Does Mamba help? The same model with each sequence encoder, trained on the same data.

The `tiny` profile (half-width ResNet34, 0-9a-zA-Z in DejaVu Sans, lines up to 160 px, 400
steps of AdamW, float32, the same seed and batches for every contender) with its encoder
swapped: Mamba (causal, the profiles' choice), Mamba bidirectional, a BiLSTM with the causal
Mamba's parameter count, and a Transformer encoder of the same width and depth. Each is scored
on the profile's test set and on a harder set in the same font (rotation, blur and noise it never
saw), greedy decoding; training and inference times are measured in the same run, one after
the other, on this machine.

    python benchmarks/encoder_choice.py [--root /tmp/encoder_choice] \
        [--out benchmarks/results/encoder_choice.json]

About 8 minutes on 2 cores. Notebook 05 draws the table from the JSON file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ocrlib.encoder import EncoderConfig, build_encoder, matched_bilstm  # noqa: E402
from ocrlib.inference import Recognizer  # noqa: E402
from ocrlib.profiles import profiles  # noqa: E402
from ocrlib.sizes import count_params  # noqa: E402
from ocrlib.synth import SynthConfig, generate, generate_splits  # noqa: E402
from ocrlib.train import train  # noqa: E402


def contenders(base: EncoderConfig) -> dict[str, EncoderConfig]:
    """The encoders compared, built from the profile's (causal Mamba) encoder."""
    return {
        "Mamba (causal)": base,
        "Mamba (bidirectional)": dataclasses.replace(base, bidirectional=True),
        "BiLSTM (same parameters)": matched_bilstm(base),
        "Transformer": EncoderConfig(kind="transformer", d_model=base.d_model,
                                     n_layers=base.n_layers, dropout=0.0),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="/tmp/encoder_choice")
    p.add_argument("--out", default="benchmarks/results/encoder_choice.json")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    prof = profiles()["tiny"]
    root = Path(args.root)
    data = root / "data"
    generate_splits(data, prof.sizes, seed=prof.train.seed, cfg=prof.synth, progress=False,
                    overwrite=True)
    hard = SynthConfig(min_len=prof.synth.min_len, max_len=prof.synth.max_len, fonts=prof.synth.fonts,
                       max_angle=3.0, max_blur=1.0, max_noise=12.0)  # and every effect
    generate(data / "hard", 200, seed=prof.train.seed, cfg=hard, split="test", progress=False,
             overwrite=True)
    rows = []
    for name, enc in contenders(prof.model.encoder).items():
        model_cfg = dataclasses.replace(prof.model, encoder=enc)
        slug = "".join(ch for ch in name.lower() if ch.isalnum())
        t0 = time.perf_counter()
        res = train(model_cfg, prof.train, data / "train", data / "val",
                    root / slug / "best_mamba_ocr.pth",
                    progress=False)
        seconds = time.perf_counter() - t0
        rec = Recognizer.from_checkpoint(res.best)
        test, hard_r = rec.evaluate(data / "test"), rec.evaluate(data / "hard")
        rows.append({"encoder": name, "params": count_params(build_encoder(enc)),
                     "train_s": round(seconds, 1), "best_val_cer": round(res.best_cer, 4),
                     "test_cer": round(test["cer"], 4), "hard_cer": round(hard_r["cer"], 4),
                     "test_images_per_s": round(test["images_per_s"], 1),
                     "curve": [(h["step"], round(h["val_cer"], 4)) for h in res.history]})
        print(json.dumps(rows[-1]), flush=True)
    out = {"command": "python benchmarks/encoder_choice.py",
           "machine": f"{platform.processor() or platform.machine()}, {args.threads} threads, "
                      f"torch {torch.__version__}",
           "profile": "tiny", "steps": prof.train.steps, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
