"""Levers for reading the internalized audio (issue 7): textual-teacher KL, transcript-loss warm-up."""
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
