"""AuRAModel on tiny configs: distillation learns, freezing holds, early stop is exact, export is encoder-free."""
import tarfile

import pytest
import torch

from nemo_aura import AuRAModel
from nemo_aura.modules import teachers as teachers_module
from nemo_aura.parts.restore import shared_parameter_aliases
from nemo_aura.parts.student import decoder_of
from nemo_aura.testing import synth_wave


def make_batch(model: AuRAModel, seconds=(1.5, 1.0), task="asr", answers=("one two three", "four five")):
    waves = [torch.from_numpy(synth_wave(i, s)) for i, s in enumerate(seconds)]
    audio = torch.zeros(len(waves), max(len(w) for w in waves))
    for i, w in enumerate(waves):
        audio[i, : len(w)] = w
    encoded = [model.prompts.encode(model.prompts.user_message(task), a) for a in answers]
    ids = [e[0] for e in encoded]
    masks = [e[1] for e in encoded]
    from nemo_aura.parts.prompting import right_pad

    return {
        "audio": audio,
        "audio_lens": torch.tensor([len(w) for w in waves]),
        "input_ids": right_pad(ids, model.pad_id),
        "input_lens": torch.tensor([len(i) for i in ids]),
        "loss_mask": right_pad(masks, False),
    }


def train_steps(model: AuRAModel, batch: dict, steps: int, lr: float = 3e-3) -> list[float]:
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    losses = []
    for _ in range(steps):
        loss = model.compute_losses(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def frozen_snapshot(model: AuRAModel) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}


@pytest.mark.parametrize("teacher", ["whisper", "conformer"])
def test_distillation_loss_drops_and_only_adapters_train(teacher, tiny_cfg, tiny_conformer_cfg):
    torch.manual_seed(0)
    model = AuRAModel(tiny_cfg if teacher == "whisper" else tiny_conformer_cfg)
    batch = make_batch(model)
    before = frozen_snapshot(model)
    assert any(n.startswith("teacher.") for n in before) and any(n.startswith("llm.") for n in before)

    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    losses = train_steps(model, batch, steps=12)
    assert losses[-1] < 0.8 * losses[0], losses

    # gradients reached only patch embedding, distillation heads and LoRA of layers < K
    k = model.cfg.lora.num_layers
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    for name in trainable:
        assert name.startswith(("patch_embedding.", "distillation.")) or ".lora_" in name, name
    lora_layers = {int(n.split(".layers.")[1].split(".")[0]) for n in trainable if ".lora_" in n}
    assert lora_layers == set(range(k))
    # ... every trainable tensor moved, while frozen weights are bit-identical
    params = dict(model.named_parameters())
    assert [n for n, v in start.items() if torch.equal(v, params[n])] == []
    for name, value in before.items():
        assert torch.equal(value, dict(model.named_parameters())[name]), f"frozen {name} changed"
    assert model.teacher.training is False


def test_early_stopped_forward_matches_full_forward(tiny_cfg):
    torch.manual_seed(0)
    model = AuRAModel(tiny_cfg).eval()
    batch = make_batch(model)
    inputs = model.embed_audio_and_text(batch["audio"], batch["audio_lens"], batch["input_ids"], batch["input_lens"])
    k = model.cfg.lora.num_layers
    layers = list(range(1, k + 1))
    with torch.no_grad():
        early, logits = model.run_llm(inputs["inputs_embeds"], inputs["attention_mask"], layers, need_logits=False)
        full, full_logits = model.run_llm(inputs["inputs_embeds"], inputs["attention_mask"], layers, need_logits=True)
    assert logits is None and full_logits is not None
    for layer in layers:
        torch.testing.assert_close(early[layer], full[layer], rtol=0, atol=1e-6)
    assert len(decoder_of(model.llm).layers) == model.num_llm_layers  # the cut is undone


def test_transcript_loss_joins_distillation(tiny_cfg):
    tiny_cfg.loss.lm_weight = 0.5
    model = AuRAModel(tiny_cfg)
    out = model.compute_losses(make_batch(model))
    assert out["loss"].item() == pytest.approx(out["distill_loss"].item() + 0.5 * out["lm_loss"].item(), rel=1e-5)


def test_encoder_free_export(tiny_cfg, tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = AuRAModel(tiny_cfg)
    batch = make_batch(model)
    train_steps(model, batch, steps=3)
    path = model.export_encoder_free(str(tmp_path / "aura_encoder_free.nemo"))

    with tarfile.open(path) as tar:
        weights = next(m for m in tar.getmembers() if m.name.endswith("model_weights.ckpt"))
        state = torch.load(tar.extractfile(weights), map_location="cpu")
    assert state and not [k for k in state if k.startswith(("teacher.", "distillation."))]
    assert any(k.startswith("patch_embedding.") for k in state) and any(".lora_" in k for k in state)
    assert model.teacher is not None and model.distillation is not None  # the live model is untouched

    def no_teacher(*args, **kwargs):
        raise AssertionError("restoring the encoder-free model must not build a teacher")

    monkeypatch.setattr(teachers_module, "build_teacher", no_teacher)
    monkeypatch.setattr("nemo_aura.models.aura_model.build_teacher", no_teacher)
    restored = AuRAModel.restore_from(path, map_location="cpu")
    assert restored.teacher is None and restored.distillation is None
    assert restored.parameter_counts()["total"] == model.parameter_counts()["deployable"]
    # restored from a memory-mapped checkpoint into an uninitialised skeleton: the tied weights stay tied
    assert shared_parameter_aliases(restored) == shared_parameter_aliases(model) != []

    model.eval(), restored.eval()
    with torch.no_grad():
        a = model.embed_audio_and_text(batch["audio"], batch["audio_lens"], batch["input_ids"], batch["input_lens"])
        b = restored.embed_audio_and_text(batch["audio"], batch["audio_lens"], batch["input_ids"], batch["input_lens"])
        la = model.llm(inputs_embeds=a["inputs_embeds"], attention_mask=a["attention_mask"]).logits
        lb = restored.llm(inputs_embeds=b["inputs_embeds"], attention_mask=b["attention_mask"]).logits
    torch.testing.assert_close(la, lb)
    answers = restored.generate([batch["audio"][0, : batch["audio_lens"][0]]], task="asr", max_new_tokens=4)
    assert answers == model.generate([batch["audio"][0, : batch["audio_lens"][0]]], task="asr", max_new_tokens=4)
    assert len(answers) == 1 and isinstance(answers[0], str)


def test_full_model_round_trip(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    model = AuRAModel(tiny_cfg)
    batch = make_batch(model)
    train_steps(model, batch, steps=2)
    model.save_to(str(tmp_path / "full.nemo"))
    restored = AuRAModel.restore_from(str(tmp_path / "full.nemo"), map_location="cpu")
    model.eval(), restored.eval()
    with torch.no_grad():
        assert restored.compute_losses(batch)["loss"].item() == pytest.approx(model.compute_losses(batch)["loss"].item(), rel=1e-6)


def test_batched_generation_matches_single(tiny_cfg):
    torch.manual_seed(0)
    model = AuRAModel(tiny_cfg).eval()
    waves = [torch.from_numpy(synth_wave(i, s)) for i, s in enumerate((1.0, 2.0, 1.5))]
    together = model.generate_ids(waves, task="asr", max_new_tokens=6, min_new_tokens=6)
    alone = [model.generate_ids([w], task="asr", max_new_tokens=6, min_new_tokens=6)[0] for w in waves]
    assert together == alone  # left padding and position handling do not change any item's answer
    assert [len(t) for t in together] == [6, 6, 6]
    assert model.generate(waves[:1], task="asr", max_new_tokens=6) == [
        model.tokenizer.tokenizer.decode(alone[0], skip_special_tokens=True).strip()
    ]


def test_clear_errors(tiny_cfg, tmp_path):
    model = AuRAModel(tiny_cfg)
    with pytest.raises(ValueError, match="exactly once"):
        model.generate([torch.from_numpy(synth_wave(0, 1.0))], prompts="Transcribe this.")
    with pytest.raises(ValueError, match="holds no samples"):
        model.generate([torch.zeros(0)])
    batch = make_batch(model)
    batch["audio_lens"][1] = 0
    with pytest.raises(ValueError, match=r"empty audio \(0 samples\) in batch items \[1\]"):
        model.compute_losses(batch)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        model.generate([str(tmp_path / "missing.wav")])

    bad = tiny_cfg.copy()
    bad.distillation.layer_map = [[1, 9]]
    with pytest.raises(ValueError, match="teacher layer 9 is outside the teacher's layers 1..3"):
        AuRAModel(bad)
    bad = tiny_cfg.copy()
    bad.teacher.config.num_mel_bins = 80
    bad.patch_embedding.preprocessor.sample_rate = 8000
    with pytest.raises(ValueError, match="teacher sample rate 16000 Hz differs from the patch embedding's 8000 Hz"):
        AuRAModel(bad)
    bad = tiny_cfg.copy()
    bad.prompts = {"asr": "Transcribe:"}
    with pytest.raises(ValueError, match="has no \\{audio\\} placeholder"):
        AuRAModel(bad)
    bad = tiny_cfg.copy()
    bad.student.pretrained_path = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere' is not a local Hugging Face model directory"):
        AuRAModel(bad)
    bad = tiny_cfg.copy()
    bad.lora.num_layers = 9
    with pytest.raises(ValueError, match="lora.num_layers=9 does not fit the LLM's 4 decoder layers"):
        AuRAModel(bad)


def test_teacher_comparison_by_value():
    from nemo_aura.parts.export_proof import compare_to_teacher

    torch.manual_seed(0)
    teacher = {"teacher.w": torch.randn(8, 8), "teacher.ln": torch.ones(8, 8), "teacher.conv": torch.randn(4, 3, 3)}
    export = {"llm.w": teacher["teacher.w"].clone(), "llm.ln": torch.ones(8, 8), "llm.other": torch.randn(8, 8),
              "patch_embedding.conv1.weight": teacher["teacher.conv"] + 0.05 * torch.randn(4, 3, 3)}
    proof = compare_to_teacher(export, teacher)
    assert proof["teacher_tensors_compared"] == 2  # the constant one carries nothing
    found = {(c["tensor"], c["identical"]) for c in proof["teacher_valued_examples"]}
    assert found == {("llm.w", True), ("patch_embedding.conv1.weight", False)}  # a copy, and a trained copy
    allowed = compare_to_teacher(export, teacher, stem_copied=True)
    assert allowed["teacher_valued_tensors_in_export"] == 1 and allowed["stem_copied_from_teacher"][0]["correlation"] > 0.9
    assert compare_to_teacher({"teacher.x": torch.randn(8, 8)}, {})["teacher_named_tensors_in_export"] == 1


def test_export_proof_by_value_and_a_fresh_process_without_the_teacher_dir(tiny_cfg, tmp_path):
    """The stem copied from a Whisper teacher directory (lever 5) is reported, nothing else matches any teacher
    tensor, and the export restores and answers in a process where the teacher directory cannot be read (where
    the full model, which needs it, fails)."""
    import json

    from omegaconf import open_dict

    from nemo_aura.parts.export_proof import compare_to_teacher, directory_tensors, nemo_state_dict, run_guarded
    from nemo_aura.testing import build_tiny_whisper_dir

    whisper = build_tiny_whisper_dir(tmp_path / "whisper")
    with open_dict(tiny_cfg):
        tiny_cfg.teacher = {"type": "whisper", "pretrained_path": str(whisper)}
        tiny_cfg.patch_embedding.update(stem="whisper_conv", stem_channels=32, init_from_teacher=True)
    torch.manual_seed(0)
    model = AuRAModel(tiny_cfg)
    train_steps(model, make_batch(model), steps=2)
    model.save_to(str(tmp_path / "full.nemo"))
    model.export_encoder_free(str(tmp_path / "free.nemo"))
    full = nemo_state_dict(tmp_path / "full.nemo")
    teacher = {k: v for k, v in full.items() if k.startswith(("teacher.", "distillation."))}
    teacher.update(directory_tensors(whisper))
    proof = compare_to_teacher(nemo_state_dict(tmp_path / "free.nemo"), teacher, stem_copied=True)
    assert proof["teacher_named_tensors_in_export"] == 0 and proof["teacher_valued_tensors_in_export"] == 0
    assert proof["teacher_tensors_compared"] >= 40  # the random tiny Whisper's non-constant tensors (of 138)
    assert {c["tensor"] for c in proof["stem_copied_from_teacher"]} >= {"patch_embedding.conv1.weight"}
    code = f"""
from nemo_aura import AuRAModel
try:
    AuRAModel.restore_from({str(tmp_path / 'full.nemo')!r})
    full = "restored"
except Exception as e:
    full = repr(e)
free = AuRAModel.restore_from({str(tmp_path / 'free.nemo')!r}).eval()
blocked_by_full = list(_guard_report()["teacher_dir_access_blocked"])
import torch
answer = free.generate([torch.zeros(8000)], task="asr", max_new_tokens=2)[0]
print(json.dumps({{"full": full, "blocked_by_full": blocked_by_full, "answer": answer, **_guard_report()}}))
"""
    proc = run_guarded(code, [whisper], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "unreadable in this check" in report["full"] and report["blocked_by_full"]  # the guard holds
    assert report["teacher_dir_access_blocked"] == report["blocked_by_full"]  # the export reached for nothing more
    assert report["teacher_dir_files_mapped"] == [] and isinstance(report["answer"], str)
