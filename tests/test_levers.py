"""Levers for reading the internalized audio: textual-teacher KL, transcript-loss warm-up."""
import pytest
import torch
from lhotse import CutSet
from omegaconf import open_dict

from nemo_aura import AuRAModel
from nemo_aura.data.dataset import AuRADataset
from nemo_aura.testing import write_tiny_cuts


def qa_batch(model, tmp_path):
    cuts = CutSet.from_file(write_tiny_cuts(tmp_path / "qa", n=3, task="qa"))
    return AuRADataset(model.prompts, model.sample_rate, model.pad_id)[cuts]


def test_text_teacher_kl_trains_only_adapters_and_its_teacher_is_the_plain_llm(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    with open_dict(tiny_cfg):
        tiny_cfg.loss = {"distill_weight": 0.0, "lm_weight": 0.0, "text_teacher_weight": 1.0}
    model = AuRAModel(tiny_cfg)
    batch = qa_batch(model, tmp_path)
    text_ids, text_labels = model._text_version(batch)
    assert not (text_ids == model.audio_locator_id).any()
    assert ((text_labels != -100).sum(1) == batch["loss_mask"].sum(1)).all()  # same answer tokens in both runs
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(12):
        out = model.compute_losses(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["text_teacher_kl"].item())
    assert losses[0] > 0 and losses[-1] < 0.7 * losses[0], losses
    # the teacher run has the adapters off: it equals the base LLM that LoRA wraps
    with torch.no_grad(), model.llm.disable_adapter():
        a = model.llm(input_ids=text_ids).logits
    base = model.llm.get_base_model()
    lora_b = [m for n, m in base.named_modules() if n.endswith("lora_B.default")]
    assert lora_b and any(m.weight.abs().sum() > 0 for m in lora_b)  # adapters did train ...
    with torch.no_grad():
        saved = [m.weight.clone() for m in lora_b]
        for m in lora_b:
            m.weight.zero_()
        b = model.llm(input_ids=text_ids).logits  # ... and zeroing them reproduces the teacher
        for m, w in zip(lora_b, saved):
            m.weight.copy_(w)
    assert torch.allclose(a, b, atol=1e-5)


def test_transcript_loss_warmup_ramps_the_weight(tiny_cfg):
    with open_dict(tiny_cfg):
        tiny_cfg.loss = {"distill_weight": 1.0, "lm_weight": 0.5, "lm_warmup_steps": 10}
    model = AuRAModel(tiny_cfg)
    assert model.lm_weight == 0.5  # no trainer: the configured weight

    class FakeTrainer:
        global_step = 4

    model._trainer = FakeTrainer()
    model.train()
    assert model.lm_weight == pytest.approx(0.25)
    FakeTrainer.global_step = 50
    assert model.lm_weight == pytest.approx(0.5)


def _train_steps(model, batch, steps, key):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(steps):
        out = model.compute_losses(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out[key].item())
    model.eval()
    return losses


def test_vocab_ctc_at_the_last_lora_layer_trains_and_is_left_out_of_the_export(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    with open_dict(tiny_cfg):
        tiny_cfg.loss = {"distill_weight": 0.0, "lm_weight": 0.0, "ctc_weight": 1.0}
    model = AuRAModel(tiny_cfg)
    d = model.llm.config.hidden_size
    assert model.parameter_counts()["ctc_head"] == d + 1 + d * d + d  # blank, scale, the square map (no classes)
    batch = qa_batch(model, tmp_path)
    losses = _train_steps(model, batch, 15, "ctc_loss")
    assert losses[0] > 0 and losses[-1] < 0.8 * losses[0], losses
    embeddings = model.llm.get_input_embeddings().weight
    assert not embeddings.requires_grad  # tied to the frozen vocabulary: only blank, scale and the map are new
    path = model.export_encoder_free(str(tmp_path / "free.nemo"))
    restored = AuRAModel.restore_from(path, map_location="cpu")
    assert restored.ctc_head is None and restored.ctc_weight == 0.0
    assert model.ctc_head is not None  # the export did not strip the training model


def test_audio_only_lora_keeps_text_answers_identical_to_the_base_llm(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    with open_dict(tiny_cfg):
        tiny_cfg.loss = {"distill_weight": 0.0, "lm_weight": 1.0}
        tiny_cfg.audio_span = {"lora": "audio"}
    model = AuRAModel(tiny_cfg)
    batch = qa_batch(model, tmp_path)
    losses = _train_steps(model, batch, 10, "lm_loss")
    assert losses[-1] < losses[0], losses
    lora_b = [m for n, m in model.llm.named_modules() if n.endswith("lora_B.default")]
    assert any(m.weight.abs().sum() > 0 for m in lora_b)  # the adapters trained ...
    ids = batch["transcript_ids"][:1]
    with torch.no_grad():
        with_adapters = model.llm(input_ids=ids).logits
        with model.llm.disable_adapter():
            base = model.llm(input_ids=ids).logits
    assert torch.allclose(with_adapters, base, atol=1e-6)  # ... yet text-only input sees the base LLM
    # with audio, the adapters act on the audio positions: outputs differ from the adapter-free model
    inputs = model.embed_audio_and_text(batch["audio"], batch["audio_lens"], batch["input_ids"], batch["input_lens"])
    with torch.no_grad():
        _, on = model.run_llm(inputs["inputs_embeds"], inputs["attention_mask"], [], True, inputs["audio_mask"])
        with model.llm.disable_adapter():
            _, off = model.run_llm(inputs["inputs_embeds"], inputs["attention_mask"], [], True, inputs["audio_mask"])
    assert not torch.allclose(on, off, atol=1e-4)
    with pytest.raises(ValueError, match="audio positions only"):
        model.merge_lora()
    with pytest.raises(ValueError, match="audio_mask"):
        model.run_llm(inputs["inputs_embeds"], inputs["attention_mask"], [], True)


def test_audio_only_lora_skips_the_adapter_math_on_calls_without_audio(tiny_cfg, tmp_path):
    """Decode steps and text-only chats hold no audio position: the LoRA matmuls are skipped (not computed and
    zeroed), a caller's disable_adapter() is respected, and a call that raised leaves the adapters usable."""
    torch.manual_seed(0)
    with open_dict(tiny_cfg):
        tiny_cfg.audio_span = {"lora": "audio"}
    model = AuRAModel(tiny_cfg).eval()
    calls = []
    lora_a = [m for n, m in model.llm.named_modules() if n.endswith("lora_A.default")]
    for m in lora_a:
        m.register_forward_hook(lambda *_: calls.append(1))
    batch = qa_batch(model, tmp_path)
    inputs = model.embed_audio_and_text(batch["audio"], batch["audio_lens"], batch["input_ids"], batch["input_lens"])

    def lora_calls(fn) -> int:
        calls.clear()
        with torch.no_grad():
            fn()
        return len(calls)

    def with_audio():
        return model.run_llm(inputs["inputs_embeds"], inputs["attention_mask"], [], True, inputs["audio_mask"])[1]

    def text_only():
        return model.llm(input_ids=batch["transcript_ids"][:1]).logits

    assert lora_calls(text_only) == 0
    assert lora_calls(with_audio) == len(lora_a)
    with model.llm.disable_adapter():
        assert lora_calls(with_audio) == 0
    assert lora_calls(with_audio) == len(lora_a)
    layer = model.llm.get_base_model().model.layers[-1]
    handle = layer.register_forward_pre_hook(lambda *_: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        text_only()
    handle.remove()
    assert lora_calls(with_audio) == len(lora_a)
    with model.audio_span.positions(torch.zeros_like(inputs["audio_mask"])):  # a mask with no audio: text only
        assert lora_calls(lambda: model.llm(inputs_embeds=inputs["inputs_embeds"])) == 0


@pytest.mark.parametrize("audio_span", [{"lora": "audio"}, {"attention": "bidirectional"}, {"lora": "audio", "attention": "bidirectional"}])
def test_generation_with_audio_span_settings_matches_a_full_forward(tiny_cfg, tmp_path, audio_span):
    """Greedy tokens from the KV-cached prefill path equal argmax decoding by full forwards (no cache)."""
    torch.manual_seed(0)
    with open_dict(tiny_cfg):
        tiny_cfg.audio_span = audio_span
    model = AuRAModel(tiny_cfg).eval()
    with torch.no_grad():  # LoRA starts at B = 0 (no effect): give the adapters weights that change the answer
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    batch = qa_batch(model, tmp_path)
    waves = [batch["audio"][i, : batch["audio_lens"][i]] for i in range(batch["audio"].shape[0])]
    ids = model.generate_ids(waves, max_new_tokens=5, batch_size=3, min_new_tokens=5)
    for i, wave in enumerate(waves):
        prompt = model.prompts.encode(model.prompts.user_message("qa"))[0]
        seq = []
        for _ in range(5):
            tokens = torch.tensor(prompt.tolist() + seq)[None]
            inputs = model.embed_audio_and_text(wave[None], torch.tensor([wave.numel()]), tokens, torch.tensor([tokens.shape[1]]))
            audio_mask = inputs["audio_mask"]
            with torch.no_grad():
                # generated tokens are text: the gate treats them so (audio positions only)
                _, logits = model.run_llm(inputs["inputs_embeds"], inputs["attention_mask"], [], True, audio_mask)
            seq.append(int(logits[0, -1].argmax()))
        assert ids[i][: len(seq)] == seq[: len(ids[i])], (i, ids[i], seq)


def test_bidirectional_audio_attention_lets_audio_tokens_see_ahead(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    model = AuRAModel(tiny_cfg)
    batch = qa_batch(model, tmp_path)
    inputs = model.embed_audio_and_text(batch["audio"], batch["audio_lens"], batch["input_ids"], batch["input_lens"])
    audio_mask, attn = inputs["audio_mask"], inputs["attention_mask"]
    with open_dict(model.cfg):
        model.cfg.audio_span = {"attention": "bidirectional"}
    model.setup_reading_levers()
    mask = model.audio_span.attention_mask(attn, audio_mask, model.llm.config)
    assert mask.shape == (attn.shape[0], 1, attn.shape[1], attn.shape[1])
    for b in range(attn.shape[0]):
        where = audio_mask[b].nonzero().flatten()
        first, last = int(where[0]), int(where[-1])
        assert mask[b, 0, first, last]  # an audio token sees the last audio token ...
        assert not mask[b, 0, first - 1, first]  # ... text before the audio does not
        assert mask[b, 0, last + 1, first] and not mask[b, 0, last, last + 1]  # causal elsewhere
    # the first audio state now depends on later audio: perturb the last audio token and compare
    capture = [1]
    with torch.no_grad():
        a, _ = model.run_llm(inputs["inputs_embeds"], attn, capture, False, audio_mask)
        bumped = inputs["inputs_embeds"].clone()
        b0 = audio_mask[0].nonzero().flatten()
        bumped[0, int(b0[-1])] += 1.0
        b, _ = model.run_llm(bumped, attn, capture, False, audio_mask)
    assert not torch.allclose(a[1][0, int(b0[0])], b[1][0, int(b0[0])])


def test_audio_span_rejects_unknown_settings(tiny_cfg):
    with open_dict(tiny_cfg):
        tiny_cfg.audio_span = {"lora": "text"}
    with pytest.raises(ValueError, match="audio_span.lora"):
        AuRAModel(tiny_cfg)


def test_fine_tuning_a_saved_model_switches_its_reading_levers(tiny_cfg, tmp_path):
    """init_from_nemo + the finetune config: audio_span and ctc_weight come from the overrides, or from the
    saved model when the override is absent (finetune.yaml's audio_span: null)."""
    from nemo_aura.train import build_model, compose_config

    with open_dict(tiny_cfg):
        tiny_cfg.audio_span = {"lora": "audio"}
    saved = str(tmp_path / "saved.nemo")
    AuRAModel(tiny_cfg).save_to(saved)
    cuts = write_tiny_cuts(tmp_path / "cuts", n=2)
    data = [f"model.train_ds.cuts_path={cuts}", f"model.validation_ds.cuts_path={cuts}", f"init_from_nemo={saved}"]
    kept = build_model(compose_config(data, config_name="finetune"), trainer=None)
    assert kept.audio_span.lora_scope == "audio" and kept.ctc_head is None
    switched = build_model(compose_config(
        data + ["model.audio_span={lora: all, attention: bidirectional}", "model.loss.ctc_weight=0.5"],
        config_name="finetune"), trainer=None)
    assert switched.audio_span.lora_scope == "all" and switched.audio_span.attention == "bidirectional"
    assert switched.ctc_head is not None and all(p.requires_grad for p in switched.ctc_head.parameters())
    assert "ctc_loss" in switched.compute_losses(AuRADataset(switched.prompts, switched.sample_rate, switched.pad_id)[CutSet.from_file(cuts)])
    with pytest.raises(ValueError, match="gradient checkpointing"):
        tiny_cfg.student.gradient_checkpointing = True
        AuRAModel(tiny_cfg)


def _lora_layers(model) -> set[int]:
    """Decoder layers whose q_proj carries the LoRA adapter."""
    return {int(n.split(".layers.")[1].split(".")[0]) for n, _ in model.llm.named_modules()
            if n.endswith("q_proj.lora_A.default")}


def test_lora_reading_layers_extend_a_trained_model_above_k_without_changing_it(tiny_cfg, tmp_path):
    """Lever 6: fine-tuning with model.lora.reading_layers=all puts LoRA on every decoder layer of a saved model;
    its trained LoRA is kept (outputs unchanged until the new layers train), K stays the distilled depth, the
    new adapters train, audio_span.lora=audio gates them like the others, and the result restores."""
    from nemo_aura.train import build_model, compose_config

    torch.manual_seed(0)
    with open_dict(tiny_cfg):
        tiny_cfg.loss = {"distill_weight": 0.0, "lm_weight": 1.0}
    trained = AuRAModel(tiny_cfg)
    batch = qa_batch(trained, tmp_path)
    _train_steps(trained, batch, 3, "lm_loss")
    saved = str(tmp_path / "trained.nemo")
    trained.save_to(saved)
    cuts = write_tiny_cuts(tmp_path / "cuts", n=2)
    data = [f"model.train_ds.cuts_path={cuts}", f"model.validation_ds.cuts_path={cuts}", f"init_from_nemo={saved}"]
    model = build_model(compose_config(data + ["model.lora.reading_layers=all"], config_name="finetune"), None)
    depth = model.num_llm_layers
    assert _lora_layers(trained) == {0, 1} and _lora_layers(model) == set(range(depth)) and depth > 2
    assert model.ctc_layer == 2 and model.cfg.lora.reading_layers == "all"
    new_params = [p for n, p in model.llm.named_parameters() if "lora_" in n and ".layers.3." in n]
    assert new_params and all(p.requires_grad for p in new_params)
    old = {k: v for k, v in trained.llm.state_dict().items() if "lora_" in k}
    now = model.llm.state_dict()
    assert all(torch.equal(now[k], v) for k, v in old.items())  # the trained LoRA is kept ...
    inputs = model.embed_audio_and_text(batch["audio"], batch["audio_lens"], batch["input_ids"], batch["input_lens"])
    with torch.no_grad():
        _, before = trained.run_llm(inputs["inputs_embeds"], inputs["attention_mask"], [], True)
        _, after = model.run_llm(inputs["inputs_embeds"], inputs["attention_mask"], [], True)
    assert torch.allclose(before, after, atol=1e-5)  # ... and the new layers start as identity
    _train_steps(model, batch, 3, "lm_loss")
    assert any(p.abs().sum() > 0 for n, p in model.llm.named_parameters() if "lora_B" in n and ".layers.3." in n)
    with open_dict(model.cfg):
        model.cfg.audio_span = {"lora": "audio"}
    model.setup_reading_levers()
    ids = batch["transcript_ids"][:1]
    with torch.no_grad():
        with_adapters = model.llm(input_ids=ids).logits
        with model.llm.disable_adapter():
            base = model.llm(input_ids=ids).logits
    assert torch.allclose(with_adapters, base, atol=1e-6)  # audio-only gates the new layers too
    model.save_to(str(tmp_path / "read.nemo"))
    restored = AuRAModel.restore_from(str(tmp_path / "read.nemo"), map_location="cpu")
    assert _lora_layers(restored) == set(range(depth))
    assert all(torch.equal(restored.llm.state_dict()[k], v) for k, v in model.llm.state_dict().items())
    assert restored.add_reading_lora("all") == []  # already there: nothing to add, nothing re-initialised
    with pytest.raises(ValueError, match="reading_layers"):
        restored.add_reading_lora("upper")
    with pytest.raises(ValueError, match=r"reading_layers \[9\]"):
        restored.add_reading_lora([9])


def test_spec_augment_masks_the_features_in_training_only_and_the_same_way_under_one_seed(tiny_cfg, tmp_path):
    """model.spec_augment: the patch embedding's tokens change in training (masked log-mel), not in eval, a
    seeded run draws the same masks, and a restored model fine-tuned with the key gets it (train.build_model)."""
    from nemo_aura.train import build_model, compose_config

    with open_dict(tiny_cfg):
        tiny_cfg.spec_augment = {"freq_masks": 2, "freq_width": 8, "time_masks": 4, "time_width": 0.1}
    model = AuRAModel(tiny_cfg)
    batch = AuRADataset(model.prompts, model.sample_rate, model.pad_id)[
        CutSet.from_file(write_tiny_cuts(tmp_path / "cuts", n=2))]
    audio, lens = batch["audio"], batch["audio_lens"]
    pe = model.patch_embedding.eval()
    clean, _ = pe(audio, lens)
    assert torch.equal(clean, pe(audio, lens)[0])
    pe.train()
    torch.manual_seed(3)
    masked, _ = pe(audio, lens)
    torch.manual_seed(3)
    assert torch.equal(masked, pe(audio, lens)[0])
    assert not torch.allclose(masked, clean)
    with pytest.raises(ValueError, match="spec_augment: unknown keys"):
        pe.set_spec_augment({"time_mask": 2})

    saved = str(tmp_path / "saved.nemo")
    with open_dict(tiny_cfg):
        tiny_cfg.spec_augment = None
    AuRAModel(tiny_cfg).save_to(saved)
    cuts = write_tiny_cuts(tmp_path / "train", n=2)
    data = [f"model.train_ds.cuts_path={cuts}", f"model.validation_ds.cuts_path={cuts}", f"init_from_nemo={saved}"]
    assert build_model(compose_config(data, config_name="finetune"), trainer=None).patch_embedding.spec_augment is None
    tuned = build_model(compose_config(data + ["+model.spec_augment={time_masks: 2, time_width: 0.05}"],
                                       config_name="finetune"), trainer=None)
    assert tuned.patch_embedding.spec_augment is not None
