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


def test_the_readme_test_command_installs_the_tools_before_collecting(tmp_path, monkeypatch):
    """tools/run_tests.sh: environment, then the system tools (espeak-ng, sox, piper), then pytest with
    NEMO_AURA_REQUIRE_TOOLS=1, under which a missing tool fails its tests instead of skipping them."""
    import shutil

    import conftest

    tree, log = tmp_path / "repo", tmp_path / "log"
    for rel in ("tools/run_tests.sh", "tools/setup_env.sh", "recipes/aura/local/install_voices.sh", ".venv/bin/python"):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "tools/run_tests.sh", tree / "tools/run_tests.sh")
    stub = '#!/usr/bin/env bash\necho "{name} $* REQUIRE=${{NEMO_AURA_REQUIRE_TOOLS:-}}" >> ' + str(log) + "\n"
    for rel, name in (("tools/setup_env.sh", "setup"), ("recipes/aura/local/install_voices.sh", "voices"),
                      (".venv/bin/python", "python")):
        (tree / rel).write_text(stub.format(name=name))
        (tree / rel).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "NEMO_AURA_REQUIRE_TOOLS"}
    proc = subprocess.run(["bash", str(tree / "tools/run_tests.sh"), "-k", "x"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert log.read_text().splitlines() == ["setup test REQUIRE=", f"voices {tree}/.venv REQUIRE=",
                                            "python -m pytest tests -k x REQUIRE=1"]
    monkeypatch.delenv("NEMO_AURA_REQUIRE_TOOLS", raising=False)
    assert conftest.needs(False, "tool missing").args[0] is True  # skipped outside run_tests.sh
    monkeypatch.setenv("NEMO_AURA_REQUIRE_TOOLS", "1")
    assert conftest.needs(False, "tool missing").args[0] is False  # not skipped: the test runs (and fails)
    assert conftest.needs(True, "tool there").args[0] is False
