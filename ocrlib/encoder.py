"""Sequence encoders: Mamba (default), BiLSTM and Transformer, one interface (notebook 03).

Every encoder maps the backbone's feature sequence ``(B, T, input_dim)`` to
``(B, T, out_dim)`` through an input projection (+ dropout) and its own layers.

The Mamba encoder keeps transformers' ``MambaBlock`` modules (so ``MambaConfig`` and the
pretrained ``state-spaces/mamba-130m-hf`` weights load unchanged) and runs each block's mixer
through :func:`ocrlib.mixer.mixer_steps`, time-major. Which scan runs where: the fused
mamba-ssm kernels on CUDA when installed, ocrlib's parallel scan on CUDA without them, the fast
CPU scan on the CPU (the table in :mod:`ocrlib.mixer`).
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

from .mixer import ScanPath, cuda_kernels, mixer_steps, resolve_scan  # noqa: F401  (re-exported)
from .sizes import count_params

log = logging.getLogger(__name__)

EncoderKind = Literal["mamba", "bilstm", "transformer"]
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
        scan: Mamba's path (:mod:`ocrlib.mixer`): ``"auto"`` (mamba-ssm's kernels on CUDA when
            installed, ``"parallel"`` on CUDA without them, ``"fast"`` on the CPU), ``"fast"``,
            ``"parallel"``, ``"reference"`` (the plain loop), ``"transformers"``
            (transformers' own mixer forward) or ``"kernel"``.
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
    def selection(self, x: torch.Tensor, layer: int = 0, direction: str = "forward"
                  ) -> dict[str, torch.Tensor]:
        """Δ (after softplus), the decay ``exp(Δ A)`` averaged over N, B and C of one layer.

        For plots: what the selective parameters do along a sequence. Computed by the
        forward pass itself, so a bidirectional encoder's layers see what they see in it.

        Args:
            direction: ``"forward"``, or ``"backward"`` (bidirectional encoders: the pass over
                the reversed line, returned in the line's own order).

        Shape:
            x: ``(B, T, input_dim)`` -> delta, decay: ``(B, T, D)``; B, C: ``(B, T, N)``
        """
        if direction == "backward" and self.layers_bwd is None:
            raise ValueError("a unidirectional encoder has no backward pass")
        captured: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
        self.forward(x, capture=captured)
        s = captured[(layer, direction)]
        delta = F.softplus(s["dt"].float())
        decay = torch.exp(delta[..., None] * s["A"]).mean(-1)
        flip = (lambda t: t.flip(0)) if direction == "backward" else (lambda t: t)  # noqa: E731
        return {k: flip(v).transpose(0, 1) for k, v in
                {"delta": delta, "decay": decay, "B": s["B"], "C": s["C"]}.items()}

    def scan_path(self, device: torch.device) -> ScanPath:
        """The path that runs for tensors on ``device``."""
        return resolve_scan(self.cfg.scan, device)

    def forward(self, x: torch.Tensor,
                capture: dict[tuple[int, str], dict[str, torch.Tensor]] | None = None) -> torch.Tensor:
        """``(B, T, input_dim) -> (B, T, d_model)``; with ``capture``, each mixer's inputs to the
        scan are stored under ``(layer, "forward" | "backward")`` (:meth:`selection`)."""
        path = self.scan_path(x.device)
        _log_path_once(path)
        # time-major, (T, B, C): each scan step then reads contiguous memory
        h = self.dropout(self.in_proj(x)).transpose(0, 1).contiguous()

        def mix(block: nn.Module, inp: torch.Tensor, key: tuple[int, str]) -> torch.Tensor:
            cap = None if capture is None else capture.setdefault(key, {})
            return mixer_steps(block.mixer, block.norm(inp), path, cap)

        for i, block in enumerate(self.layers):
            residual = h.float() if self.mamba_config.residual_in_fp32 else h
            out = mix(block, h, (i, "forward"))
            if self.layers_bwd is not None:
                out = out + mix(self.layers_bwd[i], h.flip(0), (i, "backward")).flip(0)
            h = (residual + out).to(x.dtype)
        return self.norm_f(h).transpose(0, 1)


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


def matched_bilstm(base: EncoderConfig, n_layers: int | None = None) -> EncoderConfig:
    """A BiLSTM encoder with about as many parameters as the encoder ``base`` (same width,
    input and dropout; ``n_layers`` defaults to ``base``'s): the fair baseline for a comparison."""
    lstm = EncoderConfig(kind="bilstm", input_dim=base.input_dim, d_model=base.d_model,
                         n_layers=n_layers or base.n_layers, dropout=base.dropout)
    lstm.lstm_hidden = lstm_hidden_for(count_params(build_encoder(base)), lstm)
    return lstm


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
