"""The full recogniser: backbone -> LayerNorm -> encoder -> classifier (notebook 04).

The four stages of a text recogniser (as in clovaai's deep-text-recognition-benchmark):

1. transformation: none here (synthetic lines are already upright);
2. feature extraction: :class:`ocrlib.backbone.ResNetBackbone`, ``(B, 3, H, W) -> (B, T, 512)``;
3. sequence modelling: :func:`ocrlib.encoder.build_encoder`, ``(B, T, 512) -> (B, T, C)``;
4. prediction: a linear classifier over the charset plus the CTC blank, ``(B, T, V)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn as nn

from .backbone import BackboneConfig, ResNetBackbone
from .charset import DEFAULT_CHARS, Charset
from .data import IMAGE_HEIGHT, IMAGE_WIDTH, Normalize, ctc_time_steps
from .encoder import EncoderConfig, build_encoder


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model (it is stored in every checkpoint).

    Attributes:
        chars: the charset (class ``i + 1`` is ``chars[i]``; 0 is the blank).
        height, width: input height and the largest input width; T = ceil(width / 4). Lines
            narrower than ``width`` are read at their own width.
        normalize: how pixels become input (:func:`ocrlib.data.normalize_pixels`).
        backbone, encoder: the stage configs.
    """

    chars: str = DEFAULT_CHARS
    height: int = IMAGE_HEIGHT
    width: int = IMAGE_WIDTH
    normalize: Normalize = "grey"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)

    @property
    def charset(self) -> Charset:
        return Charset(self.chars)

    @property
    def time_steps(self) -> int:
        return ctc_time_steps(self.width)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (str, int, float, bool, None, lists, dicts): safe to store and compare."""
        d = asdict(self)
        d["encoder"]["lora_targets"] = list(d["encoder"]["lora_targets"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a checkpoint from elsewhere)."""
        def build(kind: type, values: dict[str, Any]) -> Any:
            names = {f.name for f in fields(kind)}
            unknown = set(values) - names
            if unknown:
                raise ValueError(f"unknown {kind.__name__} fields: {sorted(unknown)}")
            return kind(**values)

        d = dict(d)
        d.setdefault("normalize", "imagenet")  # checkpoints from before the field existed
        enc = dict(d.pop("encoder"))
        enc["lora_targets"] = tuple(enc.get("lora_targets", ()))
        return build(cls, {**d, "backbone": build(BackboneConfig, d.pop("backbone")),
                           "encoder": build(EncoderConfig, enc)})


class MambaOCR(nn.Module):
    """Images to per-frame class scores.

    Shape:
        ``(B, 3, height, width) -> (B, T, num_classes)`` logits, T = ceil(width / 4).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.charset = cfg.charset
        self.backbone = ResNetBackbone(cfg.backbone)
        self.norm = nn.LayerNorm(cfg.backbone.out_channels)
        enc_cfg = cfg.encoder
        if enc_cfg.input_dim != cfg.backbone.out_channels:
            raise ValueError(f"encoder input_dim {enc_cfg.input_dim} != backbone out_channels "
                             f"{cfg.backbone.out_channels}")
        self.encoder = build_encoder(enc_cfg)
        self.classifier = nn.Linear(self.encoder.out_dim, self.charset.num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.stages(images)["logits"]

    def stages(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every intermediate of :meth:`forward`, in order: ``images`` ``(B, 3, H, W)``,
        ``features`` ``(B, T, 512)`` (the backbone's columns), ``hidden`` ``(B, T, C)`` (the
        encoder's output) and ``logits`` ``(B, T, V)``."""
        features = self.backbone.sequence(images)
        hidden = self.encoder(self.norm(features).float())
        return {"images": images, "features": features, "hidden": hidden,
                "logits": self.classifier(hidden)}
