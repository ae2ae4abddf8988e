"""Faults: a SIGKILLed distillation run resumes from its last checkpoint and ends at the same step."""
import csv
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from nemo_aura.testing import write_tiny_cuts

MAX_STEPS = 150


def train_cmd(llm_dir: Path, cuts: Path, exp_dir: Path, max_steps: int = MAX_STEPS) -> list[str]:
    return [
        sys.executable, "-m", "nemo_aura.train", "model=aura_tiny", f"model.student.pretrained_path={llm_dir}",
        f"model.train_ds.cuts_path={cuts}", f"model.validation_ds.cuts_path={cuts}", "model.train_ds.batch_duration=3",
        "model.validation_ds.batch_duration=6", f"exp_manager.exp_dir={exp_dir}", f"trainer.max_steps={max_steps}",
        "trainer.val_check_interval=10", "exp_manager.checkpoint_callback_params.every_n_train_steps=10",
        "trainer.enable_progress_bar=false", f"report.save_nemo={exp_dir}/final.nemo",
    ]


def checkpoints(exp_dir: Path) -> list[Path]:
    return sorted((exp_dir / "distill" / "checkpoints").glob("*.ckpt")) if (exp_dir / "distill").exists() else []


def test_sigkill_mid_training_resumes_to_the_same_final_step(tiny_llm_dir, tmp_path):
    cuts = write_tiny_cuts(tmp_path / "data", n=8)
    exp_dir = tmp_path / "exp"
    cmd = train_cmd(tiny_llm_dir, cuts, exp_dir)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 180
    while not checkpoints(exp_dir) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, f"training ended before it could be killed:\n{proc.stderr.read()[-2000:]}"
    time.sleep(0.5)  # let it run on a little past the first checkpoint
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (exp_dir / "final.nemo").exists()
    killed_at = max(torch.load(p, map_location="cpu", weights_only=False)["global_step"] for p in checkpoints(exp_dir))
    assert 0 < killed_at < MAX_STEPS

    metrics = exp_dir / "distill" / "csv" / "metrics.csv"
    logged_before = [r for r in csv.DictReader(metrics.open()) if r.get("val_loss")]
    assert logged_before  # at least the validation before training (a finished trainer.validate writes its rows)

    rerun = subprocess.run(cmd, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Resuming training from checkpoint" in rerun.stdout + rerun.stderr
    states = [torch.load(p, map_location="cpu", weights_only=False) for p in checkpoints(exp_dir)]  # all readable
    assert max(s["global_step"] for s in states) == MAX_STEPS
    # The CSV log keeps the validation points of the killed run, then the resumed run's, up to the last step.
    rows = [r for r in csv.DictReader(metrics.open()) if r.get("val_loss")]
    assert [r["step"] for r in rows[: len(logged_before)]] == [r["step"] for r in logged_before]
    assert int(rows[0]["step"]) < killed_at and int(rows[-1]["step"]) >= MAX_STEPS - 1
    # Checkpoints hold what trains: the frozen LLM and teacher are listed as omitted and rebuilt at resume.
    for state in states:
        omitted = set(state["aura_frozen_weights_omitted"])
        assert any(k.startswith("llm.") for k in omitted) and any(k.startswith("teacher.") for k in omitted)
        assert not omitted & set(state["state_dict"]) and any("lora_" in k for k in state["state_dict"])
    assert max(p.stat().st_size for p in checkpoints(exp_dir)) < (exp_dir / "final.nemo").stat().st_size
    assert (exp_dir / "final.nemo").is_file() and not list(exp_dir.glob("*.tmp*"))
    # The "before" validation belongs to the first (untrained) run only; the rerun did not overwrite it.
    assert (exp_dir / "distill_report" / "validation_before.json").is_file()
    assert (exp_dir / "distill_report" / "validation_after.json").is_file()
    # The saved model records one training run (the killed one saved nothing), at its full step count.
    with tarfile.open(exp_dir / "final.nemo") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("model_config.yaml"))
        saved_cfg = OmegaConf.load(tar.extractfile(member))
    assert [(r.name, r.steps) for r in saved_cfg.training_history] == [("distill", MAX_STEPS)]
