"""The pretrained model: export a tiny trained model, load it offline by name, the errors a user meets."""
import importlib.util
import json
from pathlib import Path

import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from nemo_aura import AuRAModel
from nemo_aura.infer import load_model, main as infer_main
from nemo_aura.parts import pretrained as P
from nemo_aura.testing import build_tiny_llm, synth_wave

ROOT = Path(__file__).resolve().parents[1]
NAME = "aura_smollm2_135m_whisper_base"


def load_export_script():
    spec = importlib.util.spec_from_file_location("export_pretrained", ROOT / "recipes/aura/local/export_pretrained.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def exported(tiny_llm_dir, tmp_path_factory):
    """A tiny 'trained' encoder-free model (collapsed reading: a boundary head too; one LLM norm changed by
    training), its .nemo and its pretrained export."""
    from omegaconf import OmegaConf

    tmp = tmp_path_factory.mktemp("pretrained")
    cfg = OmegaConf.load(ROOT / "conf/model/aura_tiny.yaml")
    cfg.student.pretrained_path = str(tiny_llm_dir)
    cfg.reading = {"span": "collapsed"}
    torch.manual_seed(0)
    model = AuRAModel(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
        model.llm.get_base_model().model.norm.weight.mul_(1.5)
    nemo = tmp / "aura_encoder_free.nemo"
    model.export_encoder_free(str(nemo))
    out = tmp / "assets" / NAME
    load_export_script().main(["--nemo", str(nemo), "--llm-dir", str(tiny_llm_dir), "--out", str(out),
                               "--name", NAME])
    wavs = []
    for i, secs in enumerate((1.0, 1.4)):
        wavs.append(str(tmp / f"u{i}.wav"))
        sf.write(wavs[-1], synth_wave(i, secs), 16000)
    return {"nemo": nemo, "dir": out, "root": out.parent, "wavs": wavs, "tmp": tmp}


def test_export_ships_exactly_the_non_base_tensors(exported, tiny_llm_dir):
    original = AuRAModel.restore_from(str(exported["nemo"]), map_location="cpu")
    shipped = load_file(str(exported["dir"] / P.WEIGHTS_FILE))
    not_base = {k for k in original.state_dict() if P.base_key(k) is None}
    changed = {k for k in original.state_dict() if k.endswith("model.norm.weight")}
    assert set(shipped) == not_base | changed  # patch embedding, LoRA, boundary head + the changed norm
    assert any(k.startswith("boundary_head.") for k in shipped) and any("lora_B" in k for k in shipped)
    assert any(k.startswith("patch_embedding.") for k in shipped)
    text = (exported["dir"] / P.CONFIG_FILE).read_text()
    assert str(tiny_llm_dir) not in text and "skeleton" not in text and "/tmp" not in text
    card = (exported["dir"] / P.CARD_FILE).read_text()
    assert "Apache-2.0" in card and "MIT" in card and "Scores (stage 6)" in card and "Training budget" in card


def test_a_float16_export_loads_back_as_its_rounded_weights(exported, tiny_llm_dir, tmp_path, monkeypatch):
    """``--dtype float16`` halves the package: every shipped float tensor is stored rounded and loaded back into
    the model's float32; the card names the corpus from stage 1's summary."""
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"subsets": {"distill_train": {"utterances": 12, "hours": 0.01}},
                                   "voices": {"en-us-m3": 12}}))
    hearing = tmp_path / "hearing.json"
    hearing.write_text(json.dumps({"sets": {
        "mf_test": {"aura": {"items": 60, "f1": 0.1, "hearing": 0.01, "hearing_ci": [-0.02, 0.03], "wer": 0.7, "wer_other": 0.8},
                    "aura_ctc_ft": {"items": 60, "f1": 0.4, "hearing": 0.3, "hearing_ci": [0.2, 0.4], "wer": 0.7, "wer_other": 0.8}},
        "closed_book": {"aura": {"items": 38, "f1": 0.0, "hearing": 0.0, "hearing_ci": [0.0, 0.0], "wer": 0.5, "wer_other": None}}}}))
    out = tmp_path / "fp16" / NAME
    load_export_script().main(["--nemo", str(exported["nemo"]), "--llm-dir", str(tiny_llm_dir), "--out", str(out),
                               "--dtype", "float16", "--corpus-summary", str(summary), "--hearing", str(hearing)])
    shipped = load_file(str(out / P.WEIGHTS_FILE))
    full = load_file(str(exported["dir"] / P.WEIGHTS_FILE))
    assert set(shipped) == set(full)
    assert all(v.dtype == (torch.float16 if full[k].is_floating_point() else full[k].dtype) for k, v in shipped.items())
    assert (out / P.WEIGHTS_FILE).stat().st_size < 0.6 * (exported["dir"] / P.WEIGHTS_FILE).stat().st_size
    monkeypatch.setenv(P.MODELS_ENV, str(tiny_llm_dir.parent))
    loaded = AuRAModel.from_pretrained(NAME, pretrained_dir=out.parent).state_dict()
    for k, v in full.items():
        assert loaded[k].dtype == v.dtype and torch.equal(loaded[k], v.to(shipped[k].dtype).to(v.dtype)), k
    assert any(not torch.equal(loaded[k], v) for k, v in full.items())  # rounded, not the float32 values
    card = (out / P.CARD_FILE).read_text()
    assert "| distill_train | 12 | 0.01 |" in card and "en-us-m3 (12)" in card and "TODO: the corpus" not in card
    base, reader = card.index("This model (its CTC text read by the base LLM):"), card.index("Its CTC text read by the fine-tuned")
    assert base < card.index("- mf_test (60 items): F1 0.100, hearing +0.010 [-0.020, +0.030]: does not hear (interval "
                             "includes 0), transcript WER 0.70") < reader
    assert "- closed_book (38 items): F1 0.000, hearing +0.000 [+0.000, +0.000]: does not hear (interval includes 0), " \
           "transcript WER 0.50\n" in card and "(stored as float16)" in card
    assert reader < card.index("- mf_test (60 items): F1 0.400, hearing +0.300 [+0.200, +0.400]: hears")
    assert "does not yet answer from the spoken question" not in card  # with the reader it hears on one set


def test_from_pretrained_matches_the_trained_model(exported, tiny_llm_dir, monkeypatch):
    names = [m.pretrained_model_name for m in AuRAModel.list_available_models()]
    assert NAME in names and all(m.description for m in AuRAModel.list_available_models())
    monkeypatch.setenv(P.MODELS_ENV, str(tiny_llm_dir.parent))  # the env var names the base-model location
    loaded = AuRAModel.from_pretrained(NAME, pretrained_dir=exported["root"])
    original = AuRAModel.restore_from(str(exported["nemo"]), map_location="cpu").eval()
    a, b = original.state_dict(), loaded.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    wavs = exported["wavs"]
    assert loaded.generate(wavs, task="asr", max_new_tokens=6) == original.generate(wavs, task="asr", max_new_tokens=6)
    assert loaded.generate_ids(wavs, max_new_tokens=6) == original.generate_ids(wavs, max_new_tokens=6)
    # a loaded pretrained model saves as an ordinary .nemo
    loaded.save_to(str(exported["tmp"] / "again.nemo"))
    again = AuRAModel.restore_from(str(exported["tmp"] / "again.nemo"), map_location="cpu")
    assert all(torch.equal(a[k], again.state_dict()[k]) for k in a)
    monkeypatch.delenv(P.MODELS_ENV)
    assert AuRAModel.from_pretrained(NAME, pretrained_dir=exported["root"], models_dir=tiny_llm_dir.parent,
                                     return_config=True).student.pretrained_path == str(tiny_llm_dir)


def test_infer_cli_accepts_the_name(exported, tiny_llm_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(P.MODELS_ENV, str(tiny_llm_dir.parent))
    monkeypatch.setenv(P.PRETRAINED_ENV, str(exported["root"]))
    manifest, out = tmp_path / "in.json", tmp_path / "out.json"
    manifest.write_text("".join(json.dumps({"audio_filepath": w}) + "\n" for w in exported["wavs"]))
    assert infer_main([f"model_path={NAME}", f"manifest={manifest}", f"output={out}", "task=asr",
                       "max_new_tokens=6"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    original = AuRAModel.restore_from(str(exported["nemo"]), map_location="cpu").eval()
    assert [r["pred_text"] for r in rows] == original.generate(exported["wavs"], task="asr", max_new_tokens=6)


def test_errors_name_the_fix(exported, tiny_llm_dir, tmp_path, monkeypatch):
    monkeypatch.delenv(P.MODELS_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=r"bash recipes/aura/run.sh --stage 0 --stop-stage 0"):
        AuRAModel.from_pretrained(NAME, pretrained_dir=exported["root"], models_dir=tmp_path / "no_models")
    with pytest.raises(ValueError, match=rf"no pretrained AuRA model named 'whisper_large'; available: {NAME}"):
        AuRAModel.from_pretrained("whisper_large")
    with pytest.raises(ValueError, match="available"):  # a hub id is not fetched either
        AuRAModel.from_pretrained("nvidia/canary-1b")
    with pytest.raises(FileNotFoundError, match="export_pretrained.py"):  # weights not in this installation
        AuRAModel.from_pretrained(NAME, pretrained_dir=tmp_path / "empty", models_dir=tiny_llm_dir.parent)
    other = build_tiny_llm(tmp_path / "other" / tiny_llm_dir.name, seed=1)  # same layout, other weights
    with pytest.raises(ValueError, match="not the one .* was exported with"):
        AuRAModel.from_pretrained(NAME, pretrained_dir=exported["root"], models_dir=other.parent)
    with pytest.raises(FileNotFoundError, match="neither a file nor a pretrained model name"):
        load_model(str(tmp_path / "nope.nemo"))


def test_readme_try_the_pretrained_model_runs_as_written(exported, tiny_llm_dir, tmp_path):
    import os
    import re
    import subprocess
    import sys

    section = (ROOT / "README.md").read_text().split("## Try the pretrained model\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(python|bash)\n(.*?)```", section, flags=re.S)
    assert [kind for kind, _ in blocks] == ["python", "bash"]
    sf.write(tmp_path / "question.wav", synth_wave(0, 1.2), 16000)
    (tmp_path / "in.json").write_text(json.dumps({"audio_filepath": "question.wav"}) + "\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           P.MODELS_ENV: str(tiny_llm_dir.parent), P.PRETRAINED_ENV: str(exported["root"])}
    for kind, code in blocks:
        cmd = [sys.executable, "-c", code] if kind == "python" else ["bash", "-euo", "pipefail", "-c", code]
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, (kind, proc.stderr[-3000:])
    assert "pred_text" in json.loads((tmp_path / "out.json").read_text())


def test_the_shipped_model_is_complete_and_names_its_base():
    """What the package ships (nemo_aura/assets/pretrained/<name>/): config, card and weights, exported against the
    registered base LLM; only non-base tensors (the base LLM is rebuilt offline by stage 0)."""
    from omegaconf import OmegaConf
    from safetensors import safe_open

    path = P.PACKAGE_PRETRAINED_DIR / NAME
    assert {p.name for p in path.iterdir()} == {P.CONFIG_FILE, P.WEIGHTS_FILE, P.CARD_FILE}
    cfg = OmegaConf.load(path / P.CONFIG_FILE)
    assert cfg.pretrained.base_llm == P.MODELS[NAME].base_llm and cfg.student.pretrained_path is None
    with safe_open(str(path / P.WEIGHTS_FILE), framework="pt") as f:
        meta, keys = f.metadata(), list(f.keys())
    assert meta["base_llm"] == P.MODELS[NAME].base_llm and meta["nemo_aura_pretrained"] == NAME
    assert all(k.startswith(("patch_embedding.", "ctc_head.", "boundary_head.")) or "lora_" in k for k in keys), keys
    assert (path / P.WEIGHTS_FILE).stat().st_size < 16 * 2**20
    card = (path / P.CARD_FILE).read_text()
    assert "## Does it hear?" in card and "## Training budget" in card and "## Licences" in card


def test_card_says_when_the_reader_was_trained_on_this_models_transcripts(tmp_path):
    rows = {"mf_test": {"aura_ctc_ft": {"items": 4, "f1": 0.5, "hearing": 0.5, "hearing_ci": [0.25, 0.75], "wer": 0.6}}}
    hearing = tmp_path / "results.json"
    script = load_export_script()
    for paths, label in (({"reader_dir": "r"}, script.CARD_SYSTEMS["aura_ctc_ft"]),
                         ({"reader_dir": "r", "aura_reader_dir": "own"}, script.OWN_READER_LABEL)):
        hearing.write_text(json.dumps({"paths": paths, "sets": rows}))
        lines = script.hearing_lines(hearing)
        assert f"{label}:" in lines and "- mf_test (4 items): F1 0.500, hearing +0.500 [+0.250, +0.750]: hears, " \
            "transcript WER 0.60" in "\n".join(lines)
