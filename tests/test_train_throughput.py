"""benchmarks/train_throughput.py --preset tiny: fp32 and bf16 autocast runs side by side on the same batches."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_aura.parts.precision import cpu_has_native_bf16, resolve_precision

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_benchmark_reports_both_precisions_on_the_same_batches(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks/train_throughput.py"), "--preset", "tiny", "--steps", "3",
           "--dev-batches", "2", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "train_throughput.json").read_text())
    assert [(r["objective"], r["precision"]) for r in result["runs"]] == [
        ("distill", "32-true"), ("distill", "bf16-mixed"), ("hearing", "32-true"), ("hearing", "bf16-mixed")]
    for name, ratio in result["ratios"].items():
        # the same seed and batches: bf16 autocast changes the losses by rounding only
        assert abs(ratio["dev_loss_rel_diff"]) < 0.1 and ratio["dev_cos_max_abs_diff"] < 0.05, (name, ratio)
        assert ratio["speedup"] > 0
    assert all(r["steps"] == 3 and r["peak_rss_mib"] > 0 for r in result["runs"])
    assert "| distill | bf16-mixed |" in (tmp_path / "train_throughput.md").read_text()


def test_precision_auto_follows_the_cpu():
    assert resolve_precision("32-true") == "32-true" and resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"
    assert resolve_precision("auto", "cpu") == ("bf16-mixed" if cpu_has_native_bf16() else "32-true")
