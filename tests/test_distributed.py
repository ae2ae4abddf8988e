"""Lightning DDP over 2 CPU processes (gloo) follows the 1-process loss trajectory at the same global batch."""
import csv
import subprocess
import sys
from pathlib import Path

import pytest
from lhotse import CutSet, Recording, SupervisionSegment
import soundfile as sf

from nemo_aura.testing import synth_wave

STEPS = 6


def equal_length_cuts(out_dir: Path, n: int = 8) -> Path:
    """Equal durations, so per-rank means average to the global mean exactly."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cuts = []
    for i in range(n):
        path = out_dir / f"u{i}.wav"
        sf.write(path, synth_wave(i, 1.0), 16000)
        cut = Recording.from_file(path, recording_id=f"u{i}").to_cut()
        cut.supervisions = [SupervisionSegment(id=f"u{i}", recording_id=f"u{i}", start=0, duration=1.0, text="one two")]
        cut.custom = {"task": "asr"}
        cuts.append(cut)
    CutSet.from_cuts(cuts).to_file(out_dir / "cuts.jsonl.gz")
    return out_dir / "cuts.jsonl.gz"


def run(llm_dir, cuts, exp_dir, devices: int, batch_size: int) -> list[float]:
    cmd = [
        sys.executable, "-m", "nemo_aura.train", "model=aura_tiny", f"model.student.pretrained_path={llm_dir}",
        f"model.train_ds.cuts_path={cuts}", f"model.validation_ds.cuts_path={cuts}",
        "~model.train_ds.batch_duration", f"+model.train_ds.batch_size={batch_size}", "model.train_ds.shuffle=false",
        f"trainer.devices={devices}", f"trainer.strategy={'ddp' if devices > 1 else 'auto'}",
        f"trainer.max_steps={STEPS}", "trainer.val_check_interval=1000", "trainer.log_every_n_steps=1",
        "trainer.limit_val_batches=0", "report.validate_before=false", "trainer.enable_progress_bar=false",
        f"exp_manager.exp_dir={exp_dir}", "exp_manager.create_checkpoint_callback=false",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader(open(exp_dir / "distill" / "csv" / "metrics.csv")))
    losses = {int(r["step"]): float(r["loss"]) for r in rows if r.get("loss")}
    return [losses[s] for s in sorted(losses)]


def test_ddp_two_cpu_processes_match_one_process(tiny_llm_dir, tmp_path):
    cuts = equal_length_cuts(tmp_path / "data")
    single = run(tiny_llm_dir, cuts, tmp_path / "one", devices=1, batch_size=4)
    ddp = run(tiny_llm_dir, cuts, tmp_path / "ddp", devices=2, batch_size=2)
    assert len(single) == len(ddp) == STEPS
    assert single[-1] < single[0]
    assert ddp == pytest.approx(single, rel=1e-3, abs=1e-4)
