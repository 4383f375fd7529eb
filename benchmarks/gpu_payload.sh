#!/usr/bin/env bash
# Fill .gpucheck/payload with what the GPU machine lacks (run here, where the package index
# is reachable; .gpucheck is git-ignored and is carried to the GPU machine with the checkout):
#   - wheels for its Python (default 3.12): jiwer, rapidfuzz, fonttools
#   - the DejaVu fonts of the tiny profile (from matplotlib)
#   - the mamba-ssm and causal-conv1d source archives (ocrlib.colab.KERNELS)
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DEST=.gpucheck/payload
PYVER=${GC_PYVER:-3.12}
mkdir -p "$DEST/fonts"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$DEST" \
  jiwer==4.0.0 rapidfuzz fonttools
KERNELS=$("$PY" -c "from ocrlib.colab import KERNELS; print(' '.join(KERNELS))")
"$PY" -m pip download -q --no-deps --no-binary=:all: --no-build-isolation -d "$DEST" $KERNELS \
  || echo "could not download the kernel sources: the GPU check will skip the kernels"
MPL=$("$PY" -c "import matplotlib, os; print(os.path.join(matplotlib.get_data_path(), 'fonts', 'ttf'))")
cp "$MPL"/DejaVuSans.ttf "$MPL"/DejaVuSerif.ttf "$DEST/fonts/"
grep -qx ".gpucheck/" .gitignore 2>/dev/null || echo "note: .gpucheck/ should be git-ignored"
du -sh "$DEST"; ls "$DEST"
