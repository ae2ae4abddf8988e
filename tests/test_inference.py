"""Using a trained model: generate, NeMo transcribe, .ckpt loading, the command line, LoRA merge, bad input."""
import os
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from nemo.collections.asr.parts.utils.rnnt_utils import Hypothesis

from nemo_aura import AuRAModel
from nemo_aura.infer import main as infer_main
from nemo_aura.merge_lora import merge_file
from nemo_aura.testing import synth_wave, write_tiny_cuts


@pytest.fixture
def model(tiny_cfg):
    torch.manual_seed(0)
    return AuRAModel(tiny_cfg).eval()


@pytest.fixture
def wavs(tmp_path):
    paths = []
    for i, secs in enumerate((1.0, 1.5, 0.7)):
        path = tmp_path / f"u{i}.wav"
        sf.write(path, synth_wave(i, secs), 16000)
        paths.append(str(path))
    return paths


def test_generate_inputs_batching_questions_and_sampling(model, wavs):
    from_paths = model.generate(wavs, task="asr", max_new_tokens=4)
    arrays = [sf.read(p, dtype="float32")[0] for p in wavs]
    assert model.generate(arrays, task="asr", max_new_tokens=4) == from_paths
    assert model.generate([torch.from_numpy(a) for a in arrays], task="asr", max_new_tokens=4) == from_paths
    assert model.generate(wavs, task="asr", max_new_tokens=4, batch_size=1) == from_paths
    answers = model.generate(wavs, questions=["what is said?"] * 3, max_new_tokens=4)
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
    a = model.generate(wavs[:1], max_new_tokens=6, do_sample=True, temperature=1.5, seed=3)
    assert a == model.generate(wavs[:1], max_new_tokens=6, do_sample=True, temperature=1.5, seed=3)
    # ... and it does sample: other seeds (on a random LLM at temperature 1.5) give other answers than this one
    others = [model.generate(wavs[:1], max_new_tokens=6, do_sample=True, temperature=1.5, seed=s) for s in (4, 5)]
    assert any(o != a for o in others)


def test_arrays_at_another_rate_are_resampled(model, tmp_path):
    wave16 = synth_wave(0, 1.0)
    wave8 = wave16[::2].copy()  # the same signal sampled at 8 kHz
    ids8 = model.generate_ids([wave8], sample_rate=8000, max_new_tokens=3)
    waves = model._waveforms([wave8], None, 8000)
    assert waves[0].numel() == 16000
    # by value: the 8 kHz copy brought back to 16 kHz is the original signal (its content is below 4 kHz) ...
    corr = np.corrcoef(waves[0].numpy(), wave16)[0, 1]
    assert corr > 0.95, corr
    assert corr > np.corrcoef(np.repeat(wave8, 2)[:16000], wave16)[0, 1] - 0.05  # as good as sample-and-hold or better
    assert np.abs(waves[0].numpy() - wave16).mean() < 0.25 * np.abs(wave16).mean()
    sf.write(tmp_path / "8k.wav", wave8, 8000)
    from_file = model._waveforms([str(tmp_path / "8k.wav")], None, None)[0]
    assert from_file.numel() == 16000 and torch.allclose(from_file, waves[0], atol=1e-3)  # file and array alike
    assert len(ids8) == 1 and ids8 == model.generate_ids([waves[0]], max_new_tokens=3)


def test_nemo_transcribe_signature_and_return_type(model, wavs, tmp_path):
    from nemo_aura.models.inference import AuRATranscribeConfig

    hyps = model.transcribe(wavs, batch_size=2, verbose=False, max_new_tokens=4)
    assert len(hyps) == 3 and all(isinstance(h, Hypothesis) for h in hyps)  # as NeMo 3.0 ASR models
    expected_ids = model.generate_ids(wavs, task="asr", max_new_tokens=4)
    assert [h.y_sequence.tolist() for h in hyps] == expected_ids
    assert [h.text for h in hyps] == model.generate(wavs, task="asr", max_new_tokens=4)
    manifest = tmp_path / "m.json"  # relative paths are resolved against the manifest, as NeMo does
    manifest.write_text("".join(json.dumps({"audio_filepath": p.split("/")[-1], "duration": 1.0}) + "\n" for p in wavs))
    assert [h.y_sequence.tolist() for h in model.transcribe(str(manifest), batch_size=3, verbose=False,
                                                             max_new_tokens=4)] == expected_ids
    arrays = [sf.read(p, dtype="float32")[0] for p in wavs]  # no 1 s padding of in-memory audio
    assert [h.y_sequence.tolist() for h in model.transcribe(arrays, verbose=False, max_new_tokens=4)] == expected_ids
    scored = model.transcribe(wavs, override_config=AuRATranscribeConfig(batch_size=3, max_new_tokens=4,
                                                                         return_hypotheses=True, verbose=False))
    assert [h.y_sequence.tolist() for h in scored] == expected_ids and all(h.score < 0 for h in scored)
    assert model.training is False
    with pytest.raises(ValueError, match="timestamps"):
        model.transcribe(wavs, timestamps=True)


def test_bad_audio_gives_clear_errors(model, tmp_path, wavs):
    with pytest.raises(FileNotFoundError, match="nowhere.wav"):
        model.generate([str(tmp_path / "nowhere.wav")])
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    with pytest.raises(ValueError, match="cannot read audio file .*corrupt.wav"):
        model.generate([str(tmp_path / "corrupt.wav")])
    with pytest.raises(ValueError, match="empty audio|holds no samples"):
        model.generate([np.zeros(0, dtype=np.float32)])
    stereo = tmp_path / "stereo.wav"  # the downmix warning goes to NeMo's logger (tests/test_bad_input.py)
    sf.write(stereo, np.stack([synth_wave(0, 1.0), synth_wave(1, 1.0)], axis=1), 16000)
    assert len(model.generate([str(stereo)], max_new_tokens=2)) == 1
    from omegaconf import open_dict

    with open_dict(model.cfg):
        model.cfg.max_audio_seconds = 1.0
    with pytest.raises(ValueError, match=r"longer than max_audio_seconds=1"):
        model.generate([wavs[1]], task="qa", max_new_tokens=2)
    model.cfg.long_audio = "chunk"
    assert len(model.generate([wavs[1]], task="asr", max_new_tokens=2)) == 1  # 1.5 s -> two chunks


def test_load_from_an_exp_manager_style_checkpoint(tiny_cfg, tmp_path, wavs):
    torch.manual_seed(0)
    cfg = tiny_cfg.copy()
    cuts = write_tiny_cuts(tmp_path / "data", n=4)
    cfg.train_ds = {"cuts_path": str(cuts), "batch_size": 2, "shuffle": False, "num_workers": 0}
    model = AuRAModel(cfg)
    trainer = Trainer(accelerator="cpu", max_steps=2, logger=False, enable_progress_bar=False,
                      callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)], limit_val_batches=0)
    trainer.fit(model)
    model.eval()
    expected = model.generate_ids(wavs, task="asr", max_new_tokens=5)
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    assert AuRAModel.load_checkpoint(str(ckpt)).eval().generate_ids(wavs, task="asr", max_new_tokens=5) == expected
    # Lightning's own loader: the config travels in the ckpt hyper-parameters; the LLM skeleton that the
    # training process kept in a temporary folder may be gone (the LLM directory is then read again).
    Path(torch.load(ckpt, weights_only=False)["hyper_parameters"]["cfg"]["student"]["skeleton"]).unlink()
    loaded = AuRAModel.load_from_checkpoint(str(ckpt), map_location="cpu").eval()
    assert loaded.generate_ids(wavs, task="asr", max_new_tokens=5) == expected
    with pytest.raises(ValueError, match="not an AuRA training checkpoint"):
        torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
        AuRAModel.load_checkpoint(str(tmp_path / "other.ckpt"))


def test_command_line_goes_on_after_bad_items(model, wavs, tmp_path, capsys):
    nemo_path = tmp_path / "free.nemo"
    model.export_encoder_free(str(nemo_path))
    manifest = tmp_path / "in.json"
    lines = [json.dumps({"audio_filepath": wavs[0], "context": "one two", "id": 7}), "{not json",
             json.dumps({"duration": 1.0}), json.dumps({"audio_filepath": str(tmp_path / "missing.wav")}),
             json.dumps({"audio_filepath": "u1.wav", "question": "what is said?"})]  # relative to the manifest
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.json"
    code = infer_main([f"model_path={nemo_path}", f"manifest={manifest}", f"output={out}", "batch_size=2",
                       "task=qa", "max_new_tokens=3"])
    assert code == 0  # some items succeeded
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 5 and "pred_answer" in rows[0] and rows[0]["id"] == 7 and "pred_answer" in rows[4]
    assert rows[0]["pred_answer"] == model.generate(wavs[:1], contexts=["one two"], max_new_tokens=3)[0]
    assert rows[4]["pred_answer"] == model.generate(wavs[1:2], questions=["what is said?"], max_new_tokens=3)[0]
    assert "not valid JSON" in rows[1]["error"] and "in.json:2" in rows[1]["error"]
    assert "in.json:3: missing field(s) ['audio_filepath']" in rows[2]["error"]
    assert "in.json:4" in rows[3]["error"] and "missing.wav" in rows[3]["error"]
    assert not list(tmp_path.glob("*.tmp"))  # written through a temporary file, renamed
    printed = capsys.readouterr().out
    assert "5 items, 2 ok, 3 failed" in printed and "in.json:4" in printed
    asr_out = tmp_path / "asr.json"
    assert infer_main([f"model_path={nemo_path}", f"manifest={manifest}", f"output={asr_out}", "task=asr",
                       "max_new_tokens=2", "generation.do_sample=true", "generation.seed=1"]) == 0
    assert "pred_text" in json.loads(asr_out.read_text().splitlines()[0])
    bad_only = tmp_path / "bad.json"
    bad_only.write_text(json.dumps({"audio_filepath": "nope.wav"}) + "\n")
    assert infer_main([f"model_path={nemo_path}", f"manifest={bad_only}", f"output={tmp_path / 'o2.json'}"]) == 1


def test_merge_lora_keeps_outputs_and_drops_adapters(model, wavs, tmp_path):
    from transformers import AutoModelForCausalLM

    src = tmp_path / "free.nemo"
    model.export_encoder_free(str(src))
    before = AuRAModel.restore_from(str(src), map_location="cpu").eval()
    with torch.no_grad():
        inputs = before.embed_audio_and_text(*_prompt_batch(before, wavs))
        ref = before.llm(inputs_embeds=inputs["inputs_embeds"], attention_mask=inputs["attention_mask"]).logits
    merged_path = merge_file(str(src), str(tmp_path / "merged.nemo"), hf_dir=str(tmp_path / "hf"))
    merged = AuRAModel.restore_from(str(merged_path), map_location="cpu").eval()
    assert not any("lora_" in n for n, _ in merged.named_parameters()) and merged.cfg.lora is None
    with torch.no_grad():
        inputs = merged.embed_audio_and_text(*_prompt_batch(merged, wavs))
        out = merged.llm(inputs_embeds=inputs["inputs_embeds"], attention_mask=inputs["attention_mask"]).logits
    assert torch.allclose(out, ref, atol=1e-4)
    assert merged.generate_ids(wavs, max_new_tokens=4) == before.generate_ids(wavs, max_new_tokens=4)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert (tmp_path / "hf" / "patch_embedding.pt").is_file() and hf.config.num_hidden_layers == 4
    with pytest.raises(ValueError, match="no LoRA adapters to merge"):
        merged.merge_lora()


def test_merge_lora_of_a_full_model_keeps_its_distillation_layers(model, wavs, tmp_path):
    """A merged model that still has its teacher restores: its layer map no longer follows `lora`."""
    model.save_to(str(tmp_path / "full.nemo"))
    merged = AuRAModel.restore_from(str(merge_file(str(tmp_path / "full.nemo"), str(tmp_path / "m.nemo")))).eval()
    assert merged.cfg.lora is None and merged.cfg.merged_lora.num_layers == 2
    assert merged.distillation.student_layers == model.distillation.student_layers
    assert merged.lora_depth == model.lora_depth == 2  # K outlives the merge (the CTC layer, the layer map)
    assert merged.generate_ids(wavs[:1], max_new_tokens=3) == model.generate_ids(wavs[:1], max_new_tokens=3)


def _prompt_batch(model, wavs):
    audio, lens = model._waveforms(wavs, None, None), None
    from nemo_aura.parts.audio import collate_waveforms
    from nemo_aura.parts.prompting import right_pad

    audio, lens = collate_waveforms(audio)
    ids = [model.prompts.encode(model.prompts.user_message("qa"))[0] for _ in wavs]
    return audio, lens, right_pad(ids, model.pad_id), torch.tensor([len(i) for i in ids])


def test_load_checkpoint_refuses_a_pickle_that_runs_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    bad = tmp_path / "crafted.ckpt"
    torch.save({"hyper_parameters": {"cfg": {}}, "state_dict": {}, "x": Payload()}, bad)
    with pytest.raises(ValueError, match="crafted.ckpt: not loaded: it holds objects other than weights"):
        AuRAModel.load_checkpoint(str(bad))
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "cut.ckpt").write_bytes(bad.read_bytes()[:100])
    with pytest.raises(ValueError, match="cut.ckpt: not"):
        AuRAModel.load_checkpoint(str(tmp_path / "cut.ckpt"))
    other = tmp_path / "ctc.ckpt"  # another NeMo model's checkpoint: named before any AuRA code reads its config
    torch.save({"hyper_parameters": {"cfg": {"target": "nemo.collections.asr.models.EncDecCTCModel"}}, "state_dict": {}},
               other)
    with pytest.raises(ValueError, match=r"ctc.ckpt: holds a .*EncDecCTCModel, not an AuRA model"):
        AuRAModel.load_checkpoint(str(other))


def test_restore_from_refuses_another_model_class_and_names_a_corrupt_file(tmp_path):
    from nemo_aura.testing import build_tiny_ctc_nemo

    ctc = build_tiny_ctc_nemo(tmp_path / "ctc.nemo")
    with pytest.raises(ValueError, match=r"ctc.nemo: holds a .*EncDecCTCModel, not an AuRA model"):
        AuRAModel.restore_from(str(ctc))
    cut = tmp_path / "cut.nemo"
    cut.write_bytes(Path(ctc).read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"cut.nemo: not a (readable )?\.nemo model"):
        AuRAModel.restore_from(str(cut))
    with pytest.raises(FileNotFoundError, match="is a directory"):
        AuRAModel.restore_from(str(tmp_path))


def test_command_line_help_prints_usage(capsys):
    from nemo_aura.infer import main as infer_main

    assert infer_main(["--help"]) == 0
    assert "model_path=aura.nemo manifest=in.json output=out.json" in capsys.readouterr().out
    proc = __import__("subprocess").run([__import__("sys").executable, "-m", "nemo_aura.merge_lora", "--help"],
                                        capture_output=True, text=True)
    assert proc.returncode == 0 and "in.nemo out.nemo" in proc.stdout
