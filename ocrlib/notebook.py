"""One setup call for the top of every notebook (and for reproducible scripts)."""

from __future__ import annotations

import logging
import os
import random
import warnings


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (every device)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup(seed: int = 0, threads: int = 2, deterministic: bool = True, quiet: bool = True) -> None:
    """Make a notebook reproducible and its printed output stable.

    Seeds everything, asks torch for deterministic algorithms (with a warning, not an
    error, where none exist), fixes the thread count, sets print precision, selects the
    PNG (Agg-rendered inline) matplotlib backend and quiets library loggers and warnings
    that would otherwise write to stderr, which nbval compares.
    """
    import numpy as np
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    seed_everything(seed)
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
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        try:
            import transformers

            transformers.logging.set_verbosity_error()
        except ImportError:
            pass
