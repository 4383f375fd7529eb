import copy
import dataclasses
import logging

import pytest

from ocrlib.synth import generate_splits
from ocrlib.train import TrainConfig, profiles, train


@pytest.fixture(autouse=True)
def _quiet_logs(caplog):
    caplog.set_level(logging.INFO, logger="ocrlib")
    yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for 2 steps (its readings are random, its reading machinery real)
    and its data: ``(root, checkpoint)``, lines with wide margins in ``root/data/val``."""
    root = tmp_path_factory.mktemp("recrop")
    prof = copy.deepcopy(profiles()["tiny"])
    prof.model.encoder.d_model = 32
    synth = dataclasses.replace(prof.synth, vertical_margin=(0.3, 0.8))  # crops change lines
    generate_splits(root / "data", {"train": 8, "val": 8}, seed=0, cfg=synth, workers=1,
                    progress=False)
    cfg = TrainConfig(steps=2, batch_size=4, eval_every=2, save_every=2, amp="off", device="cpu")
    res = train(prof.model, cfg, root / "data/train", root / "data/val", root / "best_m.pth",
                progress=False)
    return root, res.best
