"""One setup call for the top of every notebook (and for reproducible scripts)."""

from __future__ import annotations

import json
import logging
import os
import random
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (every device)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup(seed: int = 0, threads: int | None = None, deterministic: bool = True,
          quiet: bool = True) -> None:
    """Make a notebook reproducible and its printed output stable.

    Seeds everything, asks torch for deterministic algorithms where it has them (not an
    error where it has none), fixes the thread count (``threads``, else ``OMP_NUM_THREADS``
    when set, else 2), sets print precision, selects the PNG (Agg-rendered inline) matplotlib
    backend and, with ``quiet``, quiets the libraries' loggers and their ``UserWarning`` and
    ``FutureWarning`` notices (torch's "no deterministic implementation" among them), which
    would otherwise write to stderr, which nbval compares. ocrlib's own warnings still show.
    """
    import numpy as np
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    seed_everything(seed)
    if threads is None:
        threads = int(os.environ.get("OMP_NUM_THREADS") or 2)
    torch.set_num_threads(threads)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_printoptions(precision=4, sci_mode=False)
    np.set_printoptions(precision=4, suppress=True)
    try:
        from IPython import get_ipython

        ip = get_ipython()
        if ip is not None:
            ip.run_line_magic("matplotlib", "inline")
            ip.run_line_magic("config", "InlineBackend.figure_formats = ['png']")
    except ImportError:
        pass
    if quiet:
        logging.getLogger().setLevel(logging.WARNING)
        for name in ("transformers", "peft", "PIL", "matplotlib", "fontTools"):
            logging.getLogger(name).setLevel(logging.ERROR)
        for module in ("torch", "torchvision", "transformers", "peft", "matplotlib", "PIL",
                       "jupyter_client", "ipywidgets"):
            for category in (UserWarning, FutureWarning):
                warnings.filterwarnings("ignore", category=category, module=module)
        try:
            import transformers

            transformers.logging.set_verbosity_error()
        except ImportError:
            pass


@dataclass
class TrainedModel:
    """A checkpoint ready for the decoding and error-analysis notebooks.

    Attributes:
        checkpoint: the best checkpoint.
        test: a labelled test folder the model was not trained on.
        source: ``"demo"`` (``make demo``'s model), ``"tiny, trained now"`` or ``"tiny, reused"``.
    """

    checkpoint: Path
    test: Path
    source: str


def _same_synth(folder: Path, cfg: Any, n: int) -> bool:
    """Whether ``folder`` holds a finished set made with ``cfg`` and ``n`` samples."""
    from .folder import read_manifest

    try:
        manifest = read_manifest(folder)
    except (OSError, ValueError):  # unreadable: make the set again
        return False
    if manifest is None:
        return False
    same = json.loads(json.dumps(asdict(cfg))) == manifest.get("config")
    return same and manifest.get("n") == n and (folder / "labels.txt").is_file()


def tiny_model(root: str | os.PathLike[str], progress: bool = False) -> TrainedModel:
    """The ``tiny`` profile trained on its own data under ``root/data/tiny`` and
    ``root/checkpoints/tiny``: reused when a finished run of the same profile is there, else
    generated and trained now (about 1.5 minutes on a laptop CPU; deterministic, so a reused
    run and a fresh one are the same model)."""
    from .checkpoint import differences_from, read_checkpoint
    from .synth import generate
    from .precision import numerics, resolve_amp, resolve_device
    from .profiles import profiles
    from .train import last_path, train

    prof = profiles()["tiny"]
    data, best = Path(root) / "data" / "tiny", Path(root) / "checkpoints" / "tiny" / "best_mamba_ocr.pth"
    fresh_data = False
    for split, n in prof.sizes.items():
        if not _same_synth(data / split, prof.synth, n):
            generate(data / split, n, prof.train.seed, prof.synth, split=split, workers=None,
                     overwrite=True, progress=progress)
            fresh_data = True
    if not fresh_data and best.is_file() and last_path(best).is_file():
        last = read_checkpoint(last_path(best))
        here = numerics(resolve_amp(prof.train.amp, resolve_device(prof.train.device)))
        if (last.get("step") == prof.train.steps and last.get("numerics") == here
                and not differences_from(last["config"], prof.model)):
            return TrainedModel(best, data / "test", "tiny, reused")
    train(prof.model, prof.train, data / "train", data / "val", best, progress=progress)
    return TrainedModel(best, data / "test", "tiny, trained now")


def demo_or_tiny_model(root: str | os.PathLike[str], progress: bool = False) -> TrainedModel:
    """``make demo``'s model (``checkpoints/best_mamba_ocr.pth`` with ``data/test``) when it is
    there and loads with this version of ocrlib, else :func:`tiny_model`."""
    from .checkpoint import load_model
    from .data import read_labels

    root = Path(root)
    best, test = root / "checkpoints" / "best_mamba_ocr.pth", root / "data" / "test"
    if best.is_file() and (test / "labels.txt").is_file():
        try:
            model, _ = load_model(best)
            items = read_labels(test)
            if items and all(not model.charset.unknown(it.text) for it in items):
                return TrainedModel(best, test, "demo")
            log.warning("%s reads other characters than %s holds: using the tiny model", best, test)
        except Exception as err:  # an old or foreign checkpoint: say why, then fall back
            log.warning("cannot use %s (%s): using the tiny model", best, err)
    return tiny_model(root, progress=progress)
