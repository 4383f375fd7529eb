"""The CUDA path, checked end to end in one run on a GPU machine (driven by gpu_check.sh).

Stages (each check prints ``RESULT {json}`` and appends it to ``$GC_RESULTS``; a failing check
is recorded and the next one runs):

- ``parity``: every Mamba path on CUDA (``fast``, ``parallel``, ``kernel`` when mamba-ssm
  imports) against the CPU reference, output and every gradient (LoRA weights non-zero),
  in fp32, fp16 and bf16 autocast, unidirectional and bidirectional;
- ``tiny``: the ``tiny`` profile trained on CUDA with AMP, killed half way and resumed, then
  its checkpoint evaluated on CUDA and on the CPU;
- ``gpu``: the ``gpu`` profile built from same-shaped random weights standing in for the hub
  weights (ImageNet ResNet34 in torch's cache, a 24-layer 768-wide Mamba saved with
  ``save_pretrained``), its freeze table and 6-layer cut checked, 100 steps at batch 64,
  reloaded and evaluated;
- ``throughput``: training and inference images/s and peak memory at batch 64 for Mamba on
  each CUDA path and a parameter-matched BiLSTM, in the same run;
- ``summary``: one ok / FAIL / SKIP line per check.

``--dry-run`` runs the same Python on the CPU with small sizes and skips what needs CUDA (a
test runs it, so the script cannot rot between GPU sessions).

    python benchmarks/gpu_check.py {parity,tiny,gpu,throughput,all,summary} [--dry-run]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: ocrlib is here

WORK = Path(os.environ.get("GC_WORK", tempfile.gettempdir())) / "gpu_check"
RESULTS = Path(os.environ.get("GC_RESULTS", WORK / "results.jsonl"))
DEADLINE = float(os.environ.get("GC_DEADLINE", "1e12"))
T0 = time.time()


def record(check: str, ok: bool | None, **info: Any) -> None:
    """``ok``: True, False, or None for a check skipped on purpose."""
    row = {"check": check, "ok": ok, **info, "t": round(time.time() - T0, 1)}
    line = json.dumps(row, default=str)
    print("RESULT " + line, flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a") as f:
        f.write(line + "\n")


def check(name: str) -> Callable:
    """Run the decorated check unless past the deadline; record an exception as a failure."""
    def wrap(fn: Callable) -> Callable:
        def run(*args: Any, **kw: Any) -> Any:
            if time.time() > DEADLINE:
                return record(name, None, skipped="out of time")
            try:
                return fn(*args, **kw)
            except Exception as err:  # record and go on with the next check
                record(name, False, error=f"{type(err).__name__}: {err}",
                       trace=traceback.format_exc()[-2000:])
        return run
    return wrap


def exact_fp32() -> None:
    """fp32 matmuls and convolutions without TF32: parity checks compare real float32."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


# ---------------------------------------------------------------------------- parity


def _encoder_run(enc: torch.nn.Module, x: torch.Tensor, path: str, amp: torch.dtype | None):
    from ocrlib.precision import autocast

    enc.cfg.scan = path
    enc.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    with autocast(x.device, amp):
        y = enc(x)
    w = torch.linspace(-1, 1, y.shape[-1], device=x.device)
    (y.float() * w).sum().backward()
    grads = {n: p.grad.float().cpu() for n, p in enc.named_parameters() if p.grad is not None}
    grads["<input>"] = x.grad.float().cpu()
    return y.detach().float().cpu(), grads


def _worst(a: dict, b: dict, rtol: float, atol: float) -> tuple[float, str]:
    """Largest |a - b| / (atol + rtol |b|) over every tensor (> 1: outside the tolerance)."""
    if a.keys() != b.keys():
        return float("inf"), f"different gradients: {sorted(set(a) ^ set(b))[:4]}"
    score, where = 0.0, ""
    for k in b:
        if not torch.isfinite(a[k]).all():
            return float("inf"), f"{k}: not finite"
        s = float(((a[k] - b[k]).abs() / (atol + rtol * b[k].abs())).max())
        if s > score:
            score, where = s, k
    return score, where


def parity(device: torch.device, dry: bool) -> None:
    from ocrlib.encoder import EncoderConfig, MambaEncoder
    from ocrlib.mixer import cuda_kernels

    exact_fp32()
    paths = ["fast", "parallel"] + (["kernel"] if device.type == "cuda" and cuda_kernels() else [])
    if device.type == "cuda" and "kernel" not in paths:
        record("parity:kernel", None, skipped="mamba-ssm kernels not importable")
    tolerances = {None: (1e-4, 1e-4), torch.float16: (5e-2, 5e-2), torch.bfloat16: (8e-2, 8e-2)}
    for bidirectional in (False, True):
        torch.manual_seed(0)
        cfg = EncoderConfig(d_model=64, n_layers=2, d_state=16, dropout=0.0, lora_r=4,
                            lora_dropout=0.0, bidirectional=bidirectional)
        enc = MambaEncoder(cfg)
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for n, p in enc.named_parameters():
                if "lora_B" in n:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        x = torch.randn(4, 48 if not dry else 12, 512, generator=g)
        ref = _encoder_run(copy.deepcopy(enc), x, "reference", None)  # the CPU reference
        on_device = copy.deepcopy(enc).to(device)
        for amp, (rtol, atol) in tolerances.items():
            if device.type == "cpu" and amp is torch.float16:
                continue
            for path in paths:
                _parity_one(on_device, x.to(device), path, amp, ref, rtol, atol, bidirectional)


@check("parity")
def _parity_one(enc, x, path, amp, ref, rtol, atol, bidirectional) -> None:  # noqa: ANN001
    y, g = _encoder_run(enc, x, path, amp)
    sy, _ = _worst({"y": y}, {"y": ref[0]}, rtol, atol)
    sg, where = _worst(g, ref[1], rtol * 10, atol * 10)  # gradients: sums over more terms
    name = f"parity:{path}:{str(amp).removeprefix('torch.') if amp else 'fp32'}:" \
           f"{'bi' if bidirectional else 'uni'}"
    record(name, sy <= 1 and sg <= 1, output_score=round(sy, 3), grad_score=round(sg, 3),
           worst_grad=where)


# ---------------------------------------------------------------------------- tiny


@check("tiny")
def tiny(device: torch.device, dry: bool) -> None:
    from ocrlib.inference import Recognizer
    from ocrlib.profiles import profile_with
    from ocrlib.synth import generate_splits
    from ocrlib.train import train

    prof = profile_with("tiny", device=str(device), amp="auto",
                        steps=40 if dry else 200, eval_every=20 if dry else 100,
                        save_every=10 if dry else 50)  # a checkpoint at the kill, to resume from
    data = WORK / "tiny"
    sizes = {"train": 200, "val": 40, "test": 40} if dry else prof.sizes
    generate_splits(data, sizes, seed=0, cfg=prof.synth, progress=False, overwrite=True)
    out = WORK / "ck_tiny" / "best_m.pth"
    half = prof.train.steps // 2
    t0 = time.time()
    train(prof.model, prof.train, data / "train", data / "val", out, progress=False, stop_after=half)
    res = train(prof.model, prof.train, data / "train", data / "val", out, progress=False,
                resume=True)
    seconds = time.time() - t0
    cers = {}
    for where in ([str(device), "cpu"] if device.type == "cuda" else ["cpu"]):
        cers[where] = Recognizer.from_checkpoint(res.best, device=where).evaluate(data / "test")["cer"]
    agree = max(cers.values()) - min(cers.values()) < 0.02
    record("tiny:train-resume-eval", res.step == prof.train.steps and agree and
           (dry or min(cers.values()) < 0.3), steps=res.step, best_val_cer=round(res.best_cer, 4),
           test_cer=cers, seconds=round(seconds, 1), skipped_batches=res.skipped_batches)


# ---------------------------------------------------------------------------- gpu profile


def stand_in_weights(dry: bool) -> Path:
    """Random weights of the hub models' shapes, where the hub would put them (no network)."""
    import torchvision
    from transformers import MambaConfig, MambaForCausalLM

    hub = Path(os.environ.setdefault("TORCH_HOME", str(WORK / "torch_home"))) / "hub" / "checkpoints"
    hub.mkdir(parents=True, exist_ok=True)
    weights = torchvision.models.ResNet34_Weights.IMAGENET1K_V1
    target = hub / Path(weights.url).name
    if not target.exists():
        torch.save(torchvision.models.resnet34(weights=None).state_dict(), target)
    folder = WORK / ("mamba-stand-in-small" if dry else "mamba-130m-stand-in")
    if not (folder / "config.json").exists():
        shape = dict(hidden_size=64, num_hidden_layers=8) if dry else dict(hidden_size=768,
                                                                          num_hidden_layers=24)
        torch.manual_seed(0)
        MambaForCausalLM(MambaConfig(vocab_size=50280, state_size=16, expand=2, **shape)
                         ).save_pretrained(folder)
    return folder


@check("gpu-profile")
def gpu_profile(device: torch.device, dry: bool) -> None:
    from ocrlib.backbone import freeze_table
    from ocrlib.inference import Recognizer
    from ocrlib.profiles import profile_with
    from ocrlib.synth import SynthConfig, generate_splits
    from ocrlib.train import Session, train

    mamba = stand_in_weights(dry)
    steps, batch = (6, 8) if dry else (100, 64)
    prof = profile_with("gpu", device=str(device), steps=steps, batch_size=batch, eval_every=steps,
                        save_every=steps, val_limit=64, workers=0 if dry else 2)
    prof.model.encoder.pretrained = str(mamba)
    model = Session(prof.model, prof.train).model
    table = {row.group: row for row in freeze_table(model.backbone)}
    frozen_ok = table["layer3"].trainable == 0 and table["layer4"].frozen == 0
    cut_ok = len(model.encoder.layers) == 6
    lora = sum(p.numel() for n, p in model.encoder.named_parameters() if "lora_" in n and p.requires_grad)
    record("gpu-profile:build", frozen_ok and cut_ok and lora > 0, layers=len(model.encoder.layers),
           backbone_pretrained=model.backbone.pretrained, lora_params=lora,
           trainable=sum(p.numel() for p in model.parameters() if p.requires_grad))
    data = WORK / "gpu_data"
    synth = SynthConfig(min_len=1, max_len=12, fonts=("DejaVu Sans Book", "DejaVu Serif Book"))
    generate_splits(data, {"train": batch * steps, "val": 64, "test": 128}, seed=0, cfg=synth,
                    progress=False, overwrite=True)
    t0 = time.time()
    res = train(prof.model, prof.train, data / "train", data / "val", WORK / "ck_gpu" / "best_m.pth",
                progress=False)
    seconds = time.time() - t0
    r = Recognizer.from_checkpoint(res.best, device=str(device)).evaluate(data / "test")
    record("gpu-profile:train-reload-eval", res.step == steps and res.skipped_batches == 0,
           steps=res.step, seconds=round(seconds, 1), lines_per_s=round(steps * batch / seconds, 1),
           test_cer=round(r["cer"], 4), note="random stand-in weights: the CER means nothing")


# ---------------------------------------------------------------------------- throughput


@check("throughput")
def throughput(device: torch.device, dry: bool) -> None:
    from ocrlib.encoder import EncoderConfig, matched_bilstm
    from ocrlib.mixer import cuda_kernels
    from ocrlib.model import MambaOCR, ModelConfig
    from ocrlib.precision import autocast, resolve_amp

    batch, reps = (4, 1) if dry else (64, 5)
    mamba = EncoderConfig(d_model=256, n_layers=2, dropout=0.0)
    contenders = {f"mamba-{p}": EncoderConfig(**{**mamba.__dict__, "scan": p})
                  for p in (["kernel"] if device.type == "cuda" and cuda_kernels() else [])
                  + (["parallel", "fast"] if device.type == "cuda" else ["fast"])}
    contenders["bilstm"] = matched_bilstm(mamba)
    amp = resolve_amp("auto", device)
    x = torch.randn(batch, 3, 32, 320, device=device)
    targets = torch.randint(1, 63, (batch * 8,), device=device)
    lengths = torch.full((batch,), 8, device=device)
    from ocrlib.losses import ctc_loss

    rows = {}
    for name, enc in contenders.items():
        torch.manual_seed(0)
        model = MambaOCR(ModelConfig(encoder=enc)).to(device)
        model.backbone.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), 1e-4)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()

        def sync() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()

        def step() -> None:
            with autocast(device, amp):
                logits = model(x)
            opt.zero_grad(set_to_none=True)
            ctc_loss(logits, targets, lengths).backward()
            opt.step()

        def infer() -> None:
            with torch.inference_mode(), autocast(device, amp):
                model.eval()(x)
            model.train()

        out = {}
        for kind, fn in (("train", step), ("infer", infer)):
            fn()
            sync()
            t0 = time.time()
            for _ in range(reps):
                fn()
            sync()
            out[f"{kind}_images_per_s"] = round(batch * reps / (time.time() - t0), 1)
        if device.type == "cuda":
            out["peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
        rows[name] = out
    record("throughput", True, batch=batch, amp=str(amp), rows=rows)


# ---------------------------------------------------------------------------- summary


def summary() -> int:
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines()] if RESULTS.exists() else []
    bad = 0
    for r in rows:
        mark = "ok  " if r["ok"] else ("SKIP" if r["ok"] is None else "FAIL")
        bad += r["ok"] is False
        info = {k: v for k, v in r.items() if k not in ("check", "ok", "t", "trace")}
        print(f"{mark} {r['check']:<36} {json.dumps(info, default=str)[:160]}")
    print(f"{len(rows)} checks, {bad} failed")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stage", choices=["parity", "tiny", "gpu", "throughput", "all", "summary"])
    p.add_argument("--dry-run", action="store_true", help="on the CPU, small sizes, no CUDA parts")
    args = p.parse_args(argv)
    if args.stage == "summary":
        return summary()
    cuda = torch.cuda.is_available() and not args.dry_run
    if not cuda and not args.dry_run:
        record("cuda", False, error="no CUDA device (use --dry-run to exercise the script on a CPU)")
        return 1
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        record("environment", True, gpu=torch.cuda.get_device_name(), torch=torch.__version__,
               cuda=torch.version.cuda, bf16=torch.cuda.is_bf16_supported())
    WORK.mkdir(parents=True, exist_ok=True)
    stages = {"parity": parity, "tiny": tiny, "gpu": gpu_profile, "throughput": throughput}
    for name in (stages if args.stage == "all" else [args.stage]):
        try:
            stages[name](device, args.dry_run)
        except Exception as err:  # a stage that breaks before its checks: record, go on
            record(f"stage:{name}", False, error=f"{type(err).__name__}: {err}",
                   trace=traceback.format_exc()[-2000:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
