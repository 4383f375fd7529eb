#!/usr/bin/env bash
# One run on a GPU machine that checks ocrlib's CUDA path end to end (about 8 minutes on one
# H100), for a machine with torch, transformers, peft, nvcc and ninja but no network.
#
#   bash benchmarks/gpu_payload.sh            # here, with the network: fills .gpucheck/payload
#   bash benchmarks/gpu_check.sh              # there, from the repository root (.gpucheck carried)
#   GC_DRY_RUN=1 PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh  # anywhere: Python stages on the CPU
#
# The payload holds what such a machine lacks: wheels (jiwer, rapidfuzz, fonttools), the DejaVu
# fonts of the tiny profile, and the mamba-ssm and causal-conv1d source archives. The kernels
# are built in the background for this GPU's architecture only, and only the scan variant ocrlib
# calls (ocrlib.colab.prepare_source), while the PyTorch paths are checked; if the build fails
# or does not finish in time, the kernel checks are skipped and everything else still runs.
#
# Knobs: GC_BUDGET (seconds, default 450), GC_KBUILD=reduced|full|off, GC_PAYLOAD (folder),
# GC_KERNELS (which sources to build, default "mamba_ssm causal_conv1d"; the scan kernel needs
# only mamba_ssm), GC_STAGES (the PyTorch stages, default "parity tiny gpu-profile").
# Results: $OUT/log.txt, $OUT/results.jsonl (one JSON object per check), $OUT/build.log.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1

BUDGET=${GC_BUDGET:-450}
KBUILD=${GC_KBUILD:-reduced}
KERNELS=${GC_KERNELS:-mamba_ssm causal_conv1d}
STAGES=${GC_STAGES-parity tiny gpu-profile}  # set but empty: none
PAYLOAD=$(realpath -m "${GC_PAYLOAD:-.gpucheck/payload}")
DRY=""
[ -n "${GC_DRY_RUN:-}" ] && { DRY=--dry-run; KBUILD=off; }
export GC_WORK=${GC_WORK:-/tmp/gc} GC_RESULTS=$OUT/results.jsonl PYTHONUNBUFFERED=1 \
       HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg \
       OCRLIB_FONT_DIRS=$PAYLOAD/fonts TORCH_HOME=${GC_WORK:-/tmp/gc}/torch_home
PY=${PYTHON:-python3}
mkdir -p "$GC_WORK"
rm -f "$GC_RESULTS"
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( BUDGET - $(elapsed) )); }
say() { echo "=== [$(elapsed)s] $*"; }
stage() {  # stage NAME LIMIT ARGS...: one Python stage under a time limit
  local name=$1 limit=$2; shift 2
  if [ "$limit" -lt 20 ]; then
    say "$name: skipped, out of time"
    echo "{\"check\": \"stage:$name\", \"ok\": null, \"skipped\": \"out of time\"}" >> "$GC_RESULTS"
    return
  fi
  say "$name (at most ${limit}s)"
  GC_DEADLINE=$(( $(date +%s) + limit - 10 )) timeout -k 5 "$limit" "$PY" benchmarks/gpu_check.py "$@" $DRY
  local rc=$?
  say "$name: exit $rc"
  # a stage that crashed or timed out before recording anything still counts as a failure
  [ "$rc" -ne 0 ] && echo "{\"check\": \"stage:$name\", \"ok\": false, \"error\": \"exit $rc\"}" >> "$GC_RESULTS"
  return 0
}

# ---------------------------------------------------------------- 0. what this machine has
say "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
"$PY" --version; nproc
command -v nvcc >/dev/null && nvcc --version | tail -1 || echo "no nvcc"
if ls "$PAYLOAD"/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --target /tmp/gc_site "$PAYLOAD"/*.whl \
    || say "installing the carried wheels failed"
fi
export PYTHONPATH=$PWD:/tmp/gc_site${PYTHONPATH:+:$PYTHONPATH}
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"

# ---------------------------------------------------------------- 1. kernels, in the background
ARCH=$("$PY" -c "import torch; c = torch.cuda.get_device_capability() if torch.cuda.is_available() else None; print(f'{c[0]}.{c[1]}' if c else '')" 2>/dev/null)
KB=$GC_WORK/kernels
BPID=""
if [ "$KBUILD" != off ] && [ -n "$ARCH" ] && command -v nvcc >/dev/null \
   && ls "$PAYLOAD"/mamba_ssm-*.tar.gz "$PAYLOAD"/causal_conv1d-*.tar.gz >/dev/null 2>&1; then
  say "building the kernels for sm_${ARCH/./} ($KBUILD) in the background: build.log"
  set -m
  (
    rm -rf "$KB" && mkdir -p "$KB" && cd "$KB" || exit 1
    for k in $KERNELS; do tar xzf "$(ls "$PAYLOAD"/$k-*.tar.gz | head -1)"; done
    for d in "$KB"/*/; do
      "$PY" -c "import sys, torch; from pathlib import Path; from ocrlib.colab import prepare_source
prepare_source(Path(sys.argv[1]), sys.argv[2], torch.__version__, reduced=sys.argv[3] == 'reduced')" \
        "$d" "$ARCH" "$KBUILD" || exit 1
    done
    export MAX_JOBS=$(( $(nproc) > 6 ? $(nproc) - 4 : 2 )) MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE
    for d in "$KB"/*/; do
      (cd "$d" && timeout 360 "$PY" setup.py -q build_ext --inplace > build.out 2>&1; echo "$d: exit $? at $(( $(date +%s) - T0 ))s"; tail -20 build.out) &
    done
    wait
  ) > "$OUT/build.log" 2>&1 &
  BPID=$!
  set +m
else
  say "kernel build skipped (KBUILD=$KBUILD, arch=${ARCH:-no GPU}, nvcc: $(command -v nvcc || echo none))"
fi

# ---------------------------------------------------------------- 2. the PyTorch CUDA paths
for s in $STAGES; do
  case $s in
    parity) stage parity 90 parity ;;
    tiny) stage tiny 110 tiny ;;
    gpu-profile) stage gpu-profile 150 gpu ;;
    *) say "unknown stage $s" ;;
  esac
done

# ---------------------------------------------------------------- 3. kernels, then throughput
if [ -n "$BPID" ]; then
  while kill -0 "$BPID" 2>/dev/null && [ "$(left)" -gt 120 ]; do sleep 5; done
  if kill -0 "$BPID" 2>/dev/null; then
    say "kernel build not finished in time: stopped"
    kill -TERM -- "-$BPID" 2>/dev/null; sleep 2; kill -KILL -- "-$BPID" 2>/dev/null
  fi
  grep -E "exit [0-9]+" "$OUT/build.log" || true
  if ls "$KB"/mamba_ssm-*/selective_scan_cuda*.so >/dev/null 2>&1; then  # causal_conv1d is optional
    ls "$KB"/causal_conv1d-*/causal_conv1d_cuda*.so >/dev/null 2>&1 \
      && export PYTHONPATH=$PYTHONPATH:$(ls -d "$KB"/causal_conv1d-*/ | head -1)
    export PYTHONPATH=$PYTHONPATH:$(ls -d "$KB"/mamba_ssm-*/ | head -1)
    echo '{"check": "kernel-build", "ok": true}' >> "$GC_RESULTS"
    stage parity-kernel 60 parity
  else
    echo '{"check": "kernel-build", "ok": false, "error": "no extension built (build.log)"}' >> "$GC_RESULTS"
  fi
fi
stage throughput "$(left)" throughput

"$PY" benchmarks/gpu_check.py summary
RC=$?
say "done"
exit $RC  # non-zero when any check failed
