"""benchmarks/gpu_check.sh must be ready for the next GPU session: its shell parses, and its
Python stages run on the CPU in dry-run mode (CUDA-only checks skipped)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_driver_and_the_payload_script_parse():
    for name in ("gpu_check.sh", "gpu_payload.sh"):
        subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / name)], check=True)


@pytest.mark.slow
def test_every_stage_runs_on_the_cpu_in_dry_run_mode(tmp_path):
    env = {**os.environ, "GC_WORK": str(tmp_path / "work"), "GC_RESULTS": str(tmp_path / "r.jsonl"),
           "TORCH_HOME": str(tmp_path / "torch_home"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "all",
                           "--dry-run"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    failed = [r for r in rows if r["ok"] is False]
    assert not failed, failed
    checks = {r["check"].split(":")[0] for r in rows}
    assert {"parity", "tiny", "gpu-profile", "throughput"} <= checks
    assert any(r["check"].startswith("parity:parallel") for r in rows)
    summary = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "summary"],
                             env=env, capture_output=True, text=True)
    assert summary.returncode == 0 and "0 failed" in summary.stdout
