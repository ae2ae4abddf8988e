"""benchmarks/train_throughput.py --preset tiny: fp32 and bf16 autocast runs side by side on the same batches."""
import json
import math
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
        ("distill", "32-true"), ("distill", "bf16-mixed"), ("reading", "32-true"), ("reading", "bf16-mixed"),
        ("hearing", "32-true"), ("hearing", "bf16-mixed")]
    for name, ratio in result["ratios"].items():
        # the same seed, weights and batches: before any step bf16 autocast changes the losses by rounding only
        # (after the steps the tiny random model's trajectories may drift apart, so only finiteness is asked there)
        assert abs(ratio["init_dev_loss_rel_diff"]) < 0.05 and ratio["init_dev_cos_max_abs_diff"] < 0.05, (name, ratio)
        assert math.isfinite(ratio["dev_loss_rel_diff"]) and math.isfinite(ratio["dev_cos_max_abs_diff"]), (name, ratio)
        assert ratio["speedup"] > 0
    for run in result["runs"]:  # a different forward after training than before: the steps did change the weights
        assert run["dev_loss"] != run["dev_loss_init"], run
    assert all(r["steps"] == 3 and r["peak_rss_mib"] > 0 for r in result["runs"]), result["runs"]
    assert "| distill | bf16-mixed |" in (tmp_path / "train_throughput.md").read_text()


def test_precision_auto_follows_the_cpu():
    assert resolve_precision("32-true") == "32-true" and resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"
    assert resolve_precision("auto", "cpu") == ("bf16-mixed" if cpu_has_native_bf16() else "32-true")
