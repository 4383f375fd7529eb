"""ocrlib: the thin library under the MambaOCR workbook notebooks. One module per idea;
importing ``ocrlib`` itself loads nothing heavy.

Data (notebook 01)
    :mod:`charset`   the characters, the CTC blank, encoding labels
    :mod:`fonts`     the pinned font pool (and the machine's fonts), glyph checks, held-out families
    :mod:`text`      random mixed text, or the lines of a text file
    :mod:`synth`     the random choices of a synthetic sample, generating labelled folders
    :mod:`render`    drawing one sample from its choices (ink, geometry, paper, sensor)
    :mod:`scenes`    cluttered scenes behind the text, a stand-in for photographs
    :mod:`photos`    strips of real photographs behind the text (scikit-image's sample pictures)
    :mod:`folder`    labelled folders on disk: labels.txt, meta.jsonl, synth.json, write order
    :mod:`lmdbset`   LMDB sets (the scene-text benchmarks' format), converting to and from folders
    :mod:`images`    opening a sample's image (file or LMDB record) as RGB
    :mod:`normalize` pixels to network input: grey, standardised, ink made bright (polarity)
    :mod:`data`      image loading, the Dataset, the CTC batch

Model (notebooks 02-04)
    :mod:`backbone`  ResNet34 as a sequence extractor, adapters, LoRA, freezing
    :mod:`scan`      the selective scan: reference, fast CPU, parallel
    :mod:`mixer`     one Mamba mixer step by step, and which scan runs where
    :mod:`encoder`   Mamba, BiLSTM and Transformer encoders; pretrained Mamba loading
    :mod:`model`     the whole recogniser and its config
    :mod:`sizes`     parameter counts and memory estimates

Training (notebook 04)
    :mod:`profiles`  training settings and the named profiles (tiny, laptop, gpu)
    :mod:`losses`    CTC and the alignment-guided start
    :mod:`sampler`   the order of training batches (width buckets, exact resume)
    :mod:`precision` device, autocast dtype, the numerics of a run (``OCRLIB_AMP``)
    :mod:`budget`    fitting a run's steps to a time budget on this machine
    :mod:`train`     the training loop, its state and checkpoints
    :mod:`checkpoint` saving and loading checkpoints safely

Reading and analysing (notebooks 05-06)
    :mod:`decoding`  greedy decoding and CTC prefix beam search
    :mod:`metrics`   CER, WER, alignments (jiwer)
    :mod:`inference` the Recognizer: read images, evaluate a folder
    :mod:`recrop`    the rows a line's ink covers, and the crops a loose line is also read at
    :mod:`analysis`  error tables, confusions, breakdowns, the numbers behind alignment views
    :mod:`browser`   the error browser (logic, and its ipywidgets face)
    :mod:`viz`       every figure: sample grids, training curves, confusions, breakdowns, alignment view, failure grid

Around it
    :mod:`cli`       the ``ocrlib`` command;  :mod:`notebook`: the setup call of every notebook
    :mod:`colab`     getting a notebook ready on Colab;  :mod:`clean`: removing generated files
    :mod:`io`        atomic file writes
    :mod:`exercises` the notebooks' exercises and their checkers
"""

import os as _os

__version__ = "0.1.0"

#: Compiled kernels oneDNN (torch's CPU convolutions) keeps, instead of its default 1,024. Lines
#: read at their own widths (multiples of 4 px up to 320) give the backbone some 80 input
#: shapes, each wanting its own forward and backward kernels: with 1,024 they were compiled over
#: and over, and a ``laptop`` training step took 148 ms here; with this many, 123 ms, the
#: same numbers (benchmarks/RESULTS.md, "Faster steps"). oneDNN reads the setting when
#: it first builds a kernel, so it is set on import (a value the user set is kept).
ONEDNN_KERNELS = 16384
_os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_KERNELS))
