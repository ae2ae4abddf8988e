"""NeMo's ASR tools on an AuRA model: the calls of examples/asr/transcribe_speech.py (and speech_to_text_eval.py,
which runs it and scores ``pred_text``), in their order, in a fresh interpreter; decoding configs mapped onto LLM
generation."""
import json
import logging
import subprocess
import sys
import textwrap

import pytest
import soundfile as sf
import torch

from nemo.collections.asr.parts.submodules.ctc_decoding import CTCDecodingConfig
from nemo.collections.asr.parts.submodules.multitask_decoding import MultiTaskDecoding, MultiTaskDecodingConfig
from nemo.collections.asr.parts.submodules.rnnt_decoding import RNNTDecodingConfig
from omegaconf import OmegaConf

from nemo_aura import AuRAModel
from nemo_aura.parts.nemo_tools import AuRADecoding, RESTORE_HINT
from nemo_aura.testing import synth_wave

# transcribe_speech.py's main() on a .nemo and a manifest, as NeMo's script runs it on CPU (TranscriptionConfig
# rebuilt from the fields it reads; the script itself is not part of the installed package).
SCRIPT = """
import json, sys
import lightning.pytorch as pl
import torch
from omegaconf import OmegaConf, open_dict
from nemo.core.classes import ModelPT
from nemo.core.classes.common import UnsafeTargetError

nemo_path, manifest = sys.argv[1], sys.argv[2]
report = {}
try:  # a fresh interpreter, nemo_aura not imported
    ModelPT.restore_from(nemo_path)
    report["bare_restore"] = "restored"
except UnsafeTargetError as e:
    report["bare_restore"] = str(e)
assert "nemo_aura" not in sys.modules

from nemo.collections.asr.models import EncDecCTCModel, EncDecHybridRNNTCTCModel, EncDecRNNTModel
from nemo.collections.asr.models.aed_multitask_models import parse_multitask_prompt
from nemo.collections.asr.parts.submodules.ctc_decoding import CTCDecodingConfig
from nemo.collections.asr.parts.submodules.multitask_decoding import MultiTaskDecoding, MultiTaskDecodingConfig
from nemo.collections.asr.parts.submodules.rnnt_decoding import RNNTDecodingConfig
from nemo.collections.asr.parts.utils.eval_utils import cal_write_wer
from nemo.collections.asr.parts.utils.transcribe_utils import (
    compute_output_filename, prepare_audio_data, restore_transcription_order, setup_model, write_transcription)

cfg = OmegaConf.create({
    "model_path": nemo_path, "pretrained_name": None, "audio_dir": None, "dataset_manifest": manifest,
    "channel_selector": None, "audio_key": "audio_filepath", "eval_config_yaml": None, "presort_manifest": True,
    "output_filename": None, "batch_size": 2, "num_workers": 0, "append_pred": False, "pred_name_postfix": None,
    "random_seed": None, "timestamps": None, "return_hypotheses": False, "compute_langs": False, "cuda": None,
    "amp": False, "compute_dtype": None, "decoder_type": None, "att_context_size": None, "prompt": {},
    "model_change": {"conformer": {}}, "extract_nbest": False, "calculate_wer": True, "clean_groundtruth_text": False,
    "langid": "en", "use_cer": False, "gt_text_attr_name": "text", "gt_lang_attr_name": "lang",
    "overwrite_transcripts": True, "return_transcriptions": False,
    "ctc_decoding": OmegaConf.structured(CTCDecodingConfig),
    "rnnt_decoding": OmegaConf.structured(RNNTDecodingConfig(fused_batch_size=-1)),
    "multitask_decoding": OmegaConf.structured(MultiTaskDecodingConfig),
})
map_location = torch.device("cpu")
asr_model, model_name = setup_model(cfg, map_location)
trainer = pl.Trainer(devices=1, accelerator="cpu")
asr_model.set_trainer(trainer)
asr_model = asr_model.eval()
asr_model.to(torch.float32)
assert not isinstance(asr_model, (EncDecCTCModel, EncDecHybridRNNTCTCModel, EncDecRNNTModel))
assert hasattr(asr_model, "change_decoding_strategy") and hasattr(asr_model, "decoding")
assert not isinstance(asr_model.decoding, MultiTaskDecoding) and cfg.decoder_type is None
assert not hasattr(asr_model, "joint")  # -> the CTC branch
asr_model.change_decoding_strategy(cfg.ctc_decoding)
with open_dict(cfg):
    cfg.decoding = cfg.rnnt_decoding  # not CTC, not MultiTaskDecoding
filepaths, sorted_manifest_path = prepare_audio_data(cfg)
filepaths = sorted_manifest_path if sorted_manifest_path is not None else filepaths
cfg = compute_output_filename(cfg, model_name)
with torch.amp.autocast("cpu", dtype=torch.float16, enabled=cfg.amp), torch.no_grad():
    override_cfg = asr_model.get_transcribe_config()
    override_cfg.batch_size = cfg.batch_size
    override_cfg.num_workers = cfg.num_workers
    override_cfg.return_hypotheses = cfg.return_hypotheses
    override_cfg.channel_selector = cfg.channel_selector
    override_cfg.augmentor = None
    override_cfg.text_field = cfg.gt_text_attr_name
    override_cfg.lang_field = cfg.gt_lang_attr_name
    override_cfg.timestamps = cfg.timestamps
    if hasattr(override_cfg, "prompt"):
        override_cfg.prompt = parse_multitask_prompt(OmegaConf.to_container(cfg.prompt))
    device = next(asr_model.parameters()).device
    transcriptions = asr_model.transcribe(audio=filepaths, override_config=override_cfg, timestamps=cfg.timestamps)
transcriptions = restore_transcription_order(cfg.dataset_manifest, transcriptions)
output_filename, pred_text_attr_name = write_transcription(
    transcriptions, cfg, model_name, filepaths=filepaths, compute_langs=False, timestamps=cfg.timestamps)
_, total_res, _ = cal_write_wer(pred_manifest=output_filename, gt_text_attr_name=cfg.gt_text_attr_name,
                                pred_text_attr_name=pred_text_attr_name, clean_groundtruth_text=False, langid="en",
                                use_cer=False, output_filename=None)
report.update(model_class=type(asr_model).__name__, output=output_filename, wer=total_res["wer"],
              decoding=repr(asr_model.decoding))
# once nemo_aura is imported (setup_model imported the target class), NeMo's own classes restore it
from nemo.collections.asr.models import ASRModel
report["restored_after_import"] = [type(ModelPT.restore_from(nemo_path)).__name__,
                                   type(ASRModel.restore_from(nemo_path, map_location="cpu")).__name__]
print("REPORT " + json.dumps(report))
"""


def tiny_model(tiny_cfg, **overrides) -> AuRAModel:
    cfg = tiny_cfg.copy()
    cfg.teacher, cfg.distillation, cfg.loss = None, None, {"distill_weight": 0.0, "lm_weight": 1.0}
    cfg.generation = {"max_new_tokens": 5}
    cfg.merge_with(overrides)
    torch.manual_seed(0)
    model = AuRAModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture
def wavs(tmp_path):
    paths = []
    for i, secs in enumerate((0.8, 1.5, 1.1)):
        paths.append(tmp_path / f"u{i}.wav")
        sf.write(paths[-1], synth_wave(i, secs), 16000)
    return paths


def test_transcribe_speech_calls_in_a_fresh_interpreter(tiny_cfg, wavs, tmp_path):
    model = tiny_model(tiny_cfg)
    nemo = tmp_path / "aura.nemo"
    model.save_to(str(nemo))
    manifest = tmp_path / "test_manifest.json"
    manifest.write_text("".join(json.dumps({"audio_filepath": w.name, "duration": sf.info(w).duration,
                                            "text": "one two three"}) + "\n" for w in wavs))
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(nemo), str(manifest)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=600)
    lines = [line for line in run.stdout.splitlines() if line.startswith("REPORT ")]
    assert run.returncode == 0 and lines, run.stderr[-4000:]
    report = json.loads(lines[-1][len("REPORT "):])
    # NeMo 3.0's allow-list has no plugin hook: a bare restore names the target; importing nemo_aura adds it
    assert "nemo_aura.models.aura_model.AuRAModel" in report["bare_restore"]
    assert report["model_class"] == "AuRAModel" and report["restored_after_import"] == ["AuRAModel", "AuRAModel"]
    assert "greedy" in report["decoding"]
    rows = [json.loads(line) for line in (tmp_path / "test_manifest_aura.json").read_text().splitlines()]
    expected = model.generate([str(w) for w in wavs], task="asr")
    assert [r["pred_text"] for r in rows] == expected and [r["text"] for r in rows] == ["one two three"] * 3
    assert isinstance(report["wer"], float)


def test_decoding_configs_map_onto_generation(tiny_cfg, wavs, caplog):
    model = tiny_model(tiny_cfg)
    paths = [str(w) for w in wavs]
    assert isinstance(model.decoding, AuRADecoding) and not isinstance(model.decoding, MultiTaskDecoding)
    assert model.decoding.strategy == "greedy" and model.decoding.max_new_tokens == 5
    greedy = model.generate(paths, task="asr")
    beam = OmegaConf.structured(CTCDecodingConfig)
    beam.strategy, beam.beam.beam_size = "beam", 3
    model.change_decoding_strategy(beam)
    assert model.decoding.strategy == "beam" and model.decoding.num_beams == 3 and model.cfg.generation.num_beams == 3
    beamed = [h.text for h in model.transcribe(paths, verbose=False)]
    assert beamed == model.generate(paths, task="asr", num_beams=3)
    scored = model.transcribe(paths, verbose=False, return_hypotheses=True)
    assert [h.text for h in scored] == beamed and all(h.score <= 0 for h in scored)
    with caplog.at_level(logging.INFO):
        model.change_decoding_strategy(RNNTDecodingConfig(compute_timestamps=True, fused_batch_size=-1))
    assert "ignored: fused_batch_size=-1, compute_timestamps=True" in caplog.text  # what differs from the defaults
    assert model.decoding.strategy == "greedy" and model.generate(paths, task="asr") == greedy
    model.change_decoding_strategy(MultiTaskDecodingConfig())  # AED default: beam of 1 = greedy
    assert model.decoding.num_beams == 1
    model.change_decoding_strategy({"strategy": "sample", "temperature": 0.7, "seed": 1})
    assert model.decoding.do_sample and model.cfg.generation.temperature == 0.7
    with pytest.raises(ValueError, match="decoding strategy 'tdt'"):
        model.change_decoding_strategy({"strategy": "tdt"})


def test_prompts_from_nemo_scripts_and_beam_limits(tiny_cfg, wavs):
    from nemo_aura.models.inference import AuRATranscribeConfig

    model = tiny_model(tiny_cfg)
    paths = [str(w) for w in wavs[:2]]
    message = model.prompts.user_message("asr")
    turns = [{"role": "user", "slots": {"message": message}}]
    hyps = model.transcribe(paths, override_config=AuRATranscribeConfig(prompt=turns, verbose=False))
    assert [h.text for h in hyps] == model.generate(paths, task="asr")
    with pytest.raises(ValueError, match="Canary-style prompt slots"):
        model.transcribe(paths, override_config=AuRATranscribeConfig(
            prompt=[{"role": "user", "slots": {"source_lang": "en", "task": "asr"}}], verbose=False))
    collapsed = tiny_model(tiny_cfg, reading={"span": "collapsed"})
    beam = OmegaConf.structured(CTCDecodingConfig)
    beam.strategy = "beam"
    with pytest.raises(ValueError, match="beam search is not supported"):
        collapsed.change_decoding_strategy(beam)
    with pytest.raises(ValueError, match="beam search is not supported"):
        collapsed.generate(paths, num_beams=2)
    assert RESTORE_HINT == "import nemo_aura.models"
