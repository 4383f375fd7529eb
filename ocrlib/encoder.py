"""Sequence encoders: Mamba (default), BiLSTM and Transformer, one interface (notebook 03).

Every encoder maps the backbone's feature sequence ``(B, T, input_dim)`` to
``(B, T, out_dim)`` through an input projection (+ dropout) and its own layers.

The Mamba encoder keeps transformers' ``MambaBlock`` modules (so ``MambaConfig`` and the
pretrained ``state-spaces/mamba-130m-hf`` weights load unchanged) but runs each mixer
through :func:`mixer_forward`, which picks the scan by device:

* CUDA tensors with ``mamba-ssm`` and ``causal-conv1d`` importable: their fused kernels
  (``selective_scan_fn``, ``causal_conv1d_fn``);
* everything else: :func:`ocrlib.scan.selective_scan`, the fast CPU scan.

Unlike transformers' own fast path (``mamba_inner_fn``, which reads ``x_proj``,
``dt_proj`` and ``out_proj`` weights straight into one fused kernel, and unlike its CPU
path, which reads ``dt_proj.weight``), :func:`mixer_forward` calls every projection as a
module, so LoRA on ``in_proj``, ``x_proj``, ``dt_proj`` and ``out_proj`` trains the same
on both paths.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from .scan import selective_scan, selective_scan_ref, selective_scan_time_major

log = logging.getLogger(__name__)

EncoderKind = Literal["mamba", "bilstm", "transformer"]
ScanPath = Literal["auto", "fast", "reference", "transformers", "kernel"]
PRETRAINED_MAMBA = "state-spaces/mamba-130m-hf"
LORA_TARGETS = ("in_proj", "x_proj", "dt_proj", "out_proj")


@dataclass
class EncoderConfig:
    """The sequence encoder.

    Attributes:
        kind: ``"mamba"``, ``"bilstm"`` or ``"transformer"``.
        input_dim: channels of the backbone's feature sequence.
        d_model: encoder width (Mamba hidden size, Transformer width, BiLSTM projection).
        n_layers: number of layers.
        dropout: dropout after the input projection (and inside the BiLSTM/Transformer).
        d_state, expand, d_conv: Mamba's state size N, inner expansion and conv kernel.
        bidirectional: Mamba only: every layer adds a pass over the time-reversed sequence
            (separate weights), so each step sees the whole line.
        scan: Mamba's scan: ``"auto"`` (kernels on CUDA when installed, else ``"fast"``),
            ``"fast"`` (:func:`ocrlib.scan.selective_scan`), ``"reference"`` (the plain
            Python loop), ``"transformers"`` (transformers' own mixer forward), ``"kernel"``.
        pretrained: Mamba only: a hub id (``state-spaces/mamba-130m-hf``) or a local folder
            saved with ``save_pretrained``; its width replaces ``d_model`` and only its first
            ``n_layers`` layers are loaded (never its token embedding).
        lora_r: Mamba only: LoRA rank on ``lora_targets`` (0: no LoRA). With LoRA, the Mamba
            weights are frozen; LoRA, the input projection and the norms train.
        lora_alpha, lora_dropout, lora_targets: LoRA settings.
        lstm_hidden: BiLSTM hidden size per direction (default ``d_model // 2``).
        n_heads: Transformer attention heads.
    """

    kind: EncoderKind = "mamba"
    input_dim: int = 512
    d_model: int = 256
    n_layers: int = 4
    dropout: float = 0.1
    d_state: int = 16
    expand: int = 2
    d_conv: int = 4
    bidirectional: bool = False
    scan: ScanPath = "auto"
    pretrained: str | None = None
    lora_r: int = 0
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = field(default_factory=lambda: LORA_TARGETS)
    lstm_hidden: int | None = None
    n_heads: int = 4


# ---------------------------------------------------------------------------- kernels


@lru_cache(maxsize=1)
def cuda_kernels() -> tuple[Any, Any] | None:
    """``(selective_scan_fn, causal_conv1d_fn)`` when mamba-ssm and causal-conv1d import, else None.

    Imported lazily: both are CUDA-only compiled packages.
    """
    try:
        from causal_conv1d import causal_conv1d_fn
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as err:  # ImportError, or an ABI mismatch raising OSError/RuntimeError
        log.debug("mamba-ssm kernels unavailable: %s", err)
        return None
    return selective_scan_fn, causal_conv1d_fn


def resolve_scan(scan: ScanPath, device: torch.device) -> ScanPath:
    """The concrete path for ``scan`` on ``device`` (``"auto"`` resolved)."""
    if scan == "auto":
        return "kernel" if device.type == "cuda" and cuda_kernels() is not None else "fast"
    if scan == "kernel" and (device.type != "cuda" or cuda_kernels() is None):
        raise RuntimeError("scan='kernel' needs CUDA tensors and the mamba-ssm/causal-conv1d packages")
    return scan


def mixer_forward(mixer: nn.Module, x: torch.Tensor, path: ScanPath) -> torch.Tensor:
    """One Mamba mixer (transformers' ``MambaMixer`` weights) on ``x``.

    Shape:
        ``(B, L, d_model) -> (B, L, d_model)``
    """
    if path == "transformers":
        return mixer(x)
    L = x.shape[1]
    # 1. gated projection                                       (B, L, 2 D) -> 2 x (B, D, L)
    u, z = mixer.in_proj(x).transpose(1, 2).chunk(2, dim=1)
    # 2. causal depthwise convolution along time + SiLU         (B, D, L)
    kernels = cuda_kernels() if path == "kernel" else None
    if kernels is not None:
        conv_w = mixer.conv1d.weight.squeeze(1)
        u = kernels[1](u.contiguous(), conv_w, mixer.conv1d.bias, activation="silu")
    else:
        u = F.silu(mixer.conv1d(u)[..., :L])
    # 3a. selection: Δ, B and C depend on the input            (B, L, R + 2 N)
    dt, Bm, Cm = torch.split(
        mixer.x_proj(u.transpose(1, 2)),
        [mixer.time_step_rank, mixer.ssm_state_size, mixer.ssm_state_size], dim=-1,
    )
    dt = mixer.dt_proj(dt).transpose(1, 2)  # (B, D, L), bias included
    A = -torch.exp(mixer.A_log.float())  # (D, N)
    # 3b-3c. discretisation and recurrence, D skip and z gate   (B, D, L)
    args = (u, dt, A, Bm.transpose(1, 2), Cm.transpose(1, 2))
    if kernels is not None:
        y = kernels[0](*(a.contiguous() for a in args), mixer.D.float(), z.contiguous(),
                       delta_softplus=True)
    else:
        scan = selective_scan_ref if path == "reference" else selective_scan
        y = scan(*args, D=mixer.D.float(), z=z, delta_softplus=True)
    # 4. output projection                                      (B, L, d_model)
    return mixer.out_proj(y.transpose(1, 2).to(x.dtype))


def causal_conv_time_major(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Depthwise causal convolution along time, as shifted multiply-adds.

    ``y_t = bias + Σ_k w[K-1-k] x_{t-k}`` (x before the start is 0): the same as
    ``nn.Conv1d(groups=D, padding=K-1)`` cut to the first L outputs, whose CPU backward
    for this shape was measured 4x slower than the whole forward of this version.

    Shape:
        x: ``(L, B, D)``; weight: ``(D, 1, K)``; bias: ``(D,)`` -> ``(L, B, D)``
    """
    w = weight.squeeze(1).t()  # (K, D)
    K = w.shape[0]
    y = torch.addcmul(bias, x, w[K - 1]) if bias is not None else x * w[K - 1]
    for k in range(1, min(K, x.shape[0])):
        y[k:].addcmul_(x[:-k], w[K - 1 - k])  # in place: y is not saved by the ops above
    return y


def selection_time_major(mixer: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Steps 1-3a of a mixer, time-major: everything the scan consumes.

    Returns a dict of ``u`` (after conv and SiLU), ``z`` (the gate), ``dt`` (Δ before softplus),
    ``B`` and ``C``, plus ``A`` ``(D, N)``.

    Shape:
        x: ``(L, B, d_model)`` -> u, z, dt: ``(L, B, D)``; B, C: ``(L, B, N)``
    """
    # 1. gated projection                                       (L, B, 2 D) -> 2 x (L, B, D)
    u, z = mixer.in_proj(x).chunk(2, dim=-1)
    # 2. causal depthwise convolution along time + SiLU         (L, B, D)
    u = F.silu(causal_conv_time_major(u, mixer.conv1d.weight, mixer.conv1d.bias))
    # 3a. selection: Δ, B and C depend on the input            (L, B, R + 2 N)
    dt, Bm, Cm = torch.split(
        mixer.x_proj(u), [mixer.time_step_rank, mixer.ssm_state_size, mixer.ssm_state_size], dim=-1)
    A = -torch.exp(mixer.A_log.float())  # (D, N)
    return {"u": u, "z": z, "dt": mixer.dt_proj(dt), "B": Bm, "C": Cm, "A": A}


def mixer_forward_time_major(mixer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """:func:`mixer_forward` on the fast CPU path, time-major throughout (no layout copies).

    Shape:
        ``(L, B, d_model) -> (L, B, d_model)``
    """
    s = selection_time_major(mixer, x)
    # 3b-3c. discretisation and recurrence, D skip and z gate   (L, B, D)
    y = selective_scan_time_major(s["u"], s["dt"], s["A"], s["B"], s["C"], D=mixer.D.float(),
                                  z=s["z"], delta_softplus=True)
    # 4. output projection                                      (L, B, d_model)
    return mixer.out_proj(y.to(x.dtype))


# ---------------------------------------------------------------------------- pretrained


def load_pretrained_mamba(name_or_path: str, n_layers: int) -> tuple[Any, dict[str, torch.Tensor]]:
    """Config and weights of a pretrained Mamba, truncated to ``n_layers``, no embedding.

    ``name_or_path`` is a local folder (``config.json`` + ``model.safetensors`` or
    ``pytorch_model.bin``) or a hub id (downloaded, or taken from the HF cache offline).

    Returns:
        ``(MambaConfig with num_hidden_layers=n_layers, {"layers.i...": ..., "norm_f.weight": ...})``

    Raises:
        OSError: naming the model when it is neither a folder nor reachable/cached.
    """
    from transformers import MambaConfig

    try:
        config = MambaConfig.from_pretrained(name_or_path)
    except OSError as err:
        raise OSError(
            f"cannot load Mamba config from {name_or_path!r}: not a local folder and not in the "
            f"Hugging Face cache (offline?). Download it once or pass a folder. ({err})"
        ) from None
    if n_layers > config.num_hidden_layers:
        raise ValueError(f"{name_or_path} has {config.num_hidden_layers} layers, asked for {n_layers}")
    config.num_hidden_layers = n_layers
    state = _read_weights(name_or_path)
    kept: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("backbone.")
        if key.startswith("layers."):
            if int(key.split(".")[1]) < n_layers:
                kept[key] = value
        elif key.startswith("norm_f."):
            kept[key] = value
    return config, kept


def _read_weights(name_or_path: str) -> dict[str, torch.Tensor]:
    folder = Path(name_or_path)
    for filename in ("model.safetensors", "pytorch_model.bin"):
        if folder.is_dir():
            path = folder / filename
            if not path.is_file():
                continue
        else:
            from huggingface_hub import hf_hub_download

            try:
                path = Path(hf_hub_download(name_or_path, filename))
            except Exception:  # missing file in the repo, or offline: try the next name
                continue
        if filename.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    raise OSError(f"no model.safetensors or pytorch_model.bin for {name_or_path!r}")


# ---------------------------------------------------------------------------- encoders


class MambaEncoder(nn.Module):
    """Input projection, ``n_layers`` Mamba blocks (optionally bidirectional), final RMSNorm.

    Shape:
        ``(B, T, input_dim) -> (B, T, d_model)``
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        from transformers import MambaConfig, MambaModel

        self.cfg = cfg
        state = None
        if cfg.pretrained:
            mcfg, state = load_pretrained_mamba(cfg.pretrained, cfg.n_layers)
            log.info("loaded %d layers of %s (d_model %d)", cfg.n_layers, cfg.pretrained, mcfg.hidden_size)
        else:
            mcfg = MambaConfig(hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
                               state_size=cfg.d_state, expand=cfg.expand, conv_kernel=cfg.d_conv)
        mcfg.vocab_size = 1  # the token embedding is never used: keep it out entirely
        self.mamba_config = mcfg
        self.out_dim = mcfg.hidden_size
        self.in_proj = nn.Linear(cfg.input_dim, self.out_dim)
        self.dropout = nn.Dropout(cfg.dropout)
        directions = 2 if cfg.bidirectional else 1
        stacks = []
        for _ in range(directions):
            model = MambaModel(mcfg)
            if state is not None:
                missing, unexpected = model.load_state_dict(state, strict=False)
                missing = [k for k in missing if not k.startswith("embeddings")]
                if missing or unexpected:
                    raise ValueError(f"pretrained weights do not fit: missing {missing}, unexpected {unexpected}")
            stacks.append(model)
        self.layers = stacks[0].layers
        self.norm_f = stacks[0].norm_f
        self.layers_bwd = stacks[1].layers if cfg.bidirectional else None
        if cfg.lora_r > 0:
            self._add_lora()

    def _add_lora(self) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        cfg = self.cfg
        pattern = r"layers(_bwd)?\.\d+\.mixer\.(" + "|".join(cfg.lora_targets) + ")"
        inject_adapter_in_model(
            LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                       target_modules=pattern), self)
        for name, p in self.named_parameters():
            p.requires_grad_("lora_" in name or name.startswith("in_proj.") or ".norm." in name
                             or name.startswith("norm_f."))

    @torch.no_grad()
    def selection(self, x: torch.Tensor, layer: int = 0) -> dict[str, torch.Tensor]:
        """Δ (after softplus), the decay ``exp(Δ A)`` averaged over N, B and C of one layer.

        For plots: what the selective parameters do along a sequence.

        Shape:
            x: ``(B, T, input_dim)`` -> delta, decay: ``(B, T, D)``; B, C: ``(B, T, N)``
        """
        h = self.in_proj(x).transpose(0, 1)
        for block in self.layers[:layer]:
            h = h + mixer_forward_time_major(block.mixer, block.norm(h))
        s = selection_time_major(self.layers[layer].mixer, self.layers[layer].norm(h))
        delta = F.softplus(s["dt"].float())
        decay = torch.exp(delta[..., None] * s["A"]).mean(-1)
        return {k: v.transpose(0, 1) for k, v in
                {"delta": delta, "decay": decay, "B": s["B"], "C": s["C"]}.items()}

    def scan_path(self, device: torch.device) -> ScanPath:
        """The scan that runs for tensors on ``device``."""
        return resolve_scan(self.cfg.scan, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        path = self.scan_path(x.device)
        _log_path_once(path)
        h = self.dropout(self.in_proj(x))
        # the fast path runs time-major, (T, B, C): each scan step then reads contiguous memory
        time_dim = 0 if path == "fast" else 1
        if path == "fast":
            h = h.transpose(0, 1).contiguous()

        def mix(block: nn.Module, inp: torch.Tensor) -> torch.Tensor:
            if path == "fast":
                return mixer_forward_time_major(block.mixer, block.norm(inp))
            return mixer_forward(block.mixer, block.norm(inp), path)

        for i, block in enumerate(self.layers):
            residual = h.float() if self.mamba_config.residual_in_fp32 else h
            out = mix(block, h)
            if self.layers_bwd is not None:
                out = out + mix(self.layers_bwd[i], h.flip(time_dim)).flip(time_dim)
            h = (residual + out).to(x.dtype)
        h = self.norm_f(h)
        return h.transpose(0, 1) if path == "fast" else h


@lru_cache(maxsize=None)
def _log_path_once(path: str) -> None:
    log.info("Mamba scan path: %s", path)


class BiLSTMEncoder(nn.Module):
    """Input projection, a bidirectional LSTM (the classic CRNN sequence model).

    Shape:
        ``(B, T, input_dim) -> (B, T, 2 * lstm_hidden)``
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        hidden = cfg.lstm_hidden or cfg.d_model // 2
        self.in_proj = nn.Linear(cfg.input_dim, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.lstm = nn.LSTM(cfg.d_model, hidden, num_layers=cfg.n_layers, bidirectional=True,
                            batch_first=True, dropout=cfg.dropout if cfg.n_layers > 1 else 0.0)
        self.out_dim = 2 * hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(self.dropout(self.in_proj(x)))[0]


class TransformerEncoder(nn.Module):
    """Input projection, sinusoidal positions, pre-norm Transformer layers, final LayerNorm.

    Shape:
        ``(B, T, input_dim) -> (B, T, d_model)``
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.in_proj = nn.Linear(cfg.input_dim, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.n_heads, 4 * cfg.d_model, cfg.dropout,
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.out_dim = cfg.d_model

    @staticmethod
    def positions(t: int, d: int, device: torch.device) -> torch.Tensor:
        """Sinusoidal position codes ``(t, d)``."""
        pos = torch.arange(t, device=device, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, d, 2, device=device) * (-math.log(10000.0) / d))
        pe = torch.zeros(t, d, device=device)
        pe[:, 0::2] = torch.sin(pos * freq)
        pe[:, 1::2] = torch.cos(pos * freq[: d // 2])
        return pe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.in_proj(x)
        h = self.dropout(h + self.positions(h.shape[1], h.shape[2], h.device).to(h.dtype))
        return self.norm(self.layers(h))


def build_encoder(cfg: EncoderConfig) -> nn.Module:
    """The encoder named by ``cfg.kind``; it has an ``out_dim`` attribute."""
    if cfg.kind == "mamba":
        return MambaEncoder(cfg)
    if cfg.kind == "bilstm":
        return BiLSTMEncoder(cfg)
    if cfg.kind == "transformer":
        return TransformerEncoder(cfg)
    raise ValueError(f"encoder kind must be mamba, bilstm or transformer, got {cfg.kind!r}")


def lstm_hidden_for(params: int, cfg: EncoderConfig) -> int:
    """The BiLSTM hidden size whose encoder has about ``params`` parameters (same input projection)."""
    return min(range(1, 4096), key=lambda h: abs(_bilstm_params(cfg, h) - params))


def _bilstm_params(cfg: EncoderConfig, h: int) -> int:
    proj = cfg.input_dim * cfg.d_model + cfg.d_model
    total, width = proj, cfg.d_model
    for _ in range(cfg.n_layers):
        total += 2 * 4 * (width * h + h * h + 2 * h)  # two directions, four gates, two biases
        width = 2 * h
    return total


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)

