"""The README's "Use a trained model" examples run as written (on a tiny model)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import soundfile as sf
import torch

from nemo_aura import AuRAModel
from nemo_aura.testing import synth_wave

ROOT = Path(__file__).resolve().parents[1]


def readme_blocks(heading: str) -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(python|bash)\n(.*?)```", section, flags=re.S)


def test_use_a_trained_model_examples_run_as_written(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    tiny_cfg.generation = {"max_new_tokens": 4}  # a random LLM never stops by itself: keep the run short
    AuRAModel(tiny_cfg).export_encoder_free(str(tmp_path / "aura.nemo"))
    sf.write(tmp_path / "question.wav", synth_wave(0, 1.2), 16000)
    (tmp_path / "in.json").write_text(json.dumps({"audio_filepath": "question.wav", "context": "one two"}) + "\n")
    blocks = readme_blocks("Use a trained model")
    assert [kind for kind, _ in blocks] == ["python", "bash"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for kind, code in blocks:
        cmd = [sys.executable, "-c", code] if kind == "python" else ["bash", "-euo", "pipefail", "-c", code]
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, (kind, proc.stderr[-3000:])
    assert json.loads((tmp_path / "out.json").read_text())["pred_answer"] is not None
    assert "pred_text" in json.loads((tmp_path / "transcripts.json").read_text())
    assert (tmp_path / "aura_merged.nemo").is_file() and (tmp_path / "aura_merged_hf" / "config.json").is_file()
