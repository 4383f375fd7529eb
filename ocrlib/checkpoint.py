"""Checkpoints: atomic writes, safe loading, refusal of a mismatched model (notebook 04).

A checkpoint is a ``torch.save`` dict of plain data and tensors only, so it loads with
``torch.load(..., weights_only=True)`` (no pickled code runs):

* ``format``: ``"mambaocr-checkpoint-1"``
* ``config``: :meth:`ModelConfig.to_dict` of the model *as built* (see :func:`built_config`)
* ``model``: the state dict
* ``step``, ``best_cer``, ``history``, and for resuming ``optimizer``, ``scheduler``,
  ``scaler``, ``rng`` (torch CPU/CUDA and Python generator states), ``train`` (the
  training settings) and ``origin`` (what pretrained weights the model started from).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch

from .io import atomic_write
from .model import MambaOCR, ModelConfig

FORMAT = "mambaocr-checkpoint-1"


class CheckpointMismatchError(ValueError):
    """A checkpoint made for another model configuration or charset."""


def built_config(model: MambaOCR) -> ModelConfig:
    """The model's config with every "download this" choice replaced by its outcome.

    Rebuilding from it needs no network and gives the same modules and trainable
    parameters: ImageNet loading is switched off with the freeze policy that was applied,
    and a pretrained Mamba becomes its dimensions (its weights are in the state dict).
    """
    cfg = copy.deepcopy(model.cfg)
    cfg.backbone.pretrained = False
    cfg.backbone.freeze = model.backbone.freeze_policy
    enc = cfg.encoder
    if enc.kind == "mamba" and enc.pretrained:
        mc = model.encoder.mamba_config
        enc.pretrained = None
        enc.d_model, enc.d_state, enc.expand, enc.d_conv = (
            mc.hidden_size, mc.state_size, mc.expand, mc.conv_kernel)
    return cfg


def config_differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences between two config dicts."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, "<missing>"), b.get(key, "<missing>")
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: checkpoint {va!r}, expected {vb!r}")
    return out


def differences_from(stored: dict[str, Any], expected: ModelConfig) -> list[str]:
    """How a checkpoint's stored config differs from ``expected``, ignoring what building
    resolves (download choices, ``"auto"`` freezing); empty when the checkpoint fits."""
    return config_differences(_comparable(stored, expected), _comparable(expected.to_dict(), expected))


def _comparable(d: dict[str, Any], expected: ModelConfig) -> dict[str, Any]:
    """``d`` without the fields that building resolves (download choices, "auto" freezing)."""
    d = copy.deepcopy(d)
    for key in ("pretrained", "offline_fallback", "freeze"):
        d["backbone"].pop(key, None)
    d["encoder"].pop("pretrained", None)
    if expected.encoder.pretrained:  # the dimensions come from the pretrained model
        for key in ("d_model", "d_state", "expand", "d_conv"):
            d["encoder"].pop(key, None)
    return d


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus the format tag) to ``path`` atomically.

    A crash at any moment leaves either the old file or the new one, never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: torch.save({"format": FORMAT, **payload}, f))


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint dict safely (``weights_only=True``) onto the CPU.

    Raises:
        FileNotFoundError: naming the path.
        ValueError: when the file is not a MambaOCR checkpoint or cannot be read.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated file, foreign pickle, ...
        raise ValueError(f"{path}: cannot read checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path}: not a MambaOCR checkpoint (format {FORMAT} expected)")
    return ckpt


def load_model(path: str | os.PathLike[str], expected: ModelConfig | None = None,
               device: torch.device | str = "cpu") -> tuple[MambaOCR, dict[str, Any]]:
    """Rebuild the model stored at ``path``; returns ``(model in eval mode, checkpoint dict)``.

    Raises:
        CheckpointMismatchError: when ``expected`` is given and differs (charset or config),
            listing every difference.
    """
    ckpt = read_checkpoint(path)
    stored = ckpt["config"]
    if expected is not None:
        diffs = differences_from(stored, expected)
        if diffs:
            raise CheckpointMismatchError(
                f"{path} was made for another model:\n  " + "\n  ".join(diffs))
    cfg = ModelConfig.from_dict(stored)
    model = MambaOCR(cfg)
    model.load_state_dict(ckpt["model"])
    model.backbone.to(memory_format=torch.channels_last)  # faster convolutions, same weights
    return model.to(device).eval(), ckpt
