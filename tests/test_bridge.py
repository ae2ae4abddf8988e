"""The bridge baseline: same LLM/prompts/token grid as AuRA, encoder kept, equal LoRA budget, cache-trainable."""
import torch
from lhotse import CutSet

from nemo_aura import AuRAModel
from nemo_aura.data.dataset import AuRADataset
from nemo_aura.data.teacher_cache import build_teacher_cache
from nemo_aura.models.bridge_model import BridgeModel, bridge_config_from_aura
from nemo_aura.testing import write_tiny_cuts


def test_bridge_matches_aura_budget_trains_from_cache_and_round_trips(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    aura = AuRAModel(tiny_cfg)
    cfg = bridge_config_from_aura(tiny_cfg, aura.num_llm_layers)
    bridge = BridgeModel(cfg)
    a, b = aura.parameter_counts(), bridge.parameter_counts()
    per_rank_layer = a["lora"] // (tiny_cfg.lora.r * tiny_cfg.lora.num_layers)
    assert abs(b["lora"] - a["lora"]) <= per_rank_layer * aura.num_llm_layers  # within one rank on all layers
    assert b["teacher"] == 0 and all(not p.requires_grad for p in bridge.patch_embedding.encoder.parameters())

    cuts = CutSet.from_file(write_tiny_cuts(tmp_path / "data", n=4))
    cached = CutSet.from_file(build_teacher_cache(aura, cuts, tmp_path / "cache"))
    ds = AuRADataset(prompts=bridge.prompts, sample_rate=bridge.sample_rate, pad_id=bridge.pad_id)
    batch = ds[cached]
    online = {k: v for k, v in batch.items() if not k.startswith("teacher_target")}
    bridge.eval()
    with torch.no_grad():
        assert torch.allclose(bridge.compute_losses(batch)["loss"], bridge.compute_losses(online)["loss"], atol=1e-2)

    bridge.train()
    opt = torch.optim.AdamW([p for p in bridge.parameters() if p.requires_grad], lr=2e-2)
    losses = []
    for _ in range(15):
        loss = bridge.compute_losses(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3, losses  # near-uniform start (ln V); the LM loss falls steadily

    bridge.eval()
    path = tmp_path / "bridge.nemo"
    bridge.save_to(str(path))
    restored = AuRAModel.restore_from(str(path), map_location="cpu")
    assert isinstance(restored, BridgeModel)
    wave = [torch.from_numpy(cached[0].load_audio()[0])]
    assert restored.generate(wave, task="asr", max_new_tokens=5) == bridge.generate(wave, task="asr", max_new_tokens=5)


def test_both_model_classes_provide_what_the_inference_mixin_needs(tiny_cfg):
    """``InferenceHost`` is the mixin's contract: every attribute and method it names exists on a built model."""
    import inspect

    from nemo_aura.models.inference import InferenceHost

    aura = AuRAModel(tiny_cfg)
    bridge = BridgeModel(bridge_config_from_aura(tiny_cfg, aura.num_llm_layers))
    names = [n for n in vars(InferenceHost).get("__annotations__", {})] + [
        n for n, v in vars(InferenceHost).items() if inspect.isfunction(v) and not n.startswith("_")]
    for model in (aura, bridge):
        assert isinstance(model, InferenceHost)
        missing = [n for n in names if not hasattr(model, n)]
        assert not missing, (type(model).__name__, missing)


def test_bridge_learns_auras_reading_objective_at_layer_k_and_is_read_as_text(tiny_cfg, tmp_path):
    """``make_bridge.py --lora-on-first-k`` + ``conf/bridge_reading_ctc.yaml``: the bridge gets AuRA's LoRA on the same
    K layers and the character CTC at layer K, trained through its projector; generation reads the head's text as
    text, and that text is what the reader's row (``bridge_ctc_ft``) answers, restored through NeMo's ASRModel."""
    from omegaconf import open_dict

    from nemo_aura.modules.vocab_ctc import CharacterCTCHead
    from nemo_aura.scoring.systems import build_system

    torch.manual_seed(0)
    aura = AuRAModel(tiny_cfg)
    cfg = bridge_config_from_aura(tiny_cfg, aura.num_llm_layers, lora_on_all_layers=False)
    with open_dict(cfg):
        cfg.loss = {"distill_weight": 0.0, "ctc_weight": 1.0, "ctc_vocabulary": "characters", "ctc_upsample": 4}
        cfg.audio_span = {"lora": "audio"}
        cfg.reading = {"span": "vocab"}
    bridge = BridgeModel(cfg)
    assert bridge.lora_depth == aura.lora_depth and isinstance(bridge.ctc_head, CharacterCTCHead)
    cuts = CutSet.from_file(write_tiny_cuts(tmp_path / "asr", n=3, task="asr"))
    batch = AuRADataset(bridge.prompts, bridge.sample_rate, bridge.pad_id)[cuts]
    bridge.train()
    projector = bridge.patch_embedding.proj[1].weight.detach().clone()
    opt = torch.optim.AdamW([p for p in bridge.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(60):  # (a tiny random Whisper's states take ~300 steps to be transcribed; the loss falls at once)
        loss = bridge.compute_losses(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0] and not torch.equal(projector, bridge.patch_embedding.proj[1].weight)
    bridge.eval()
    audio = [batch["audio"][b, : batch["audio_lens"][b]] for b in range(3)]
    texts = [bridge.tokenizer.ids_to_text(ids) for ids in bridge.generate_ids(audio, task="asr")]
    path = tmp_path / "bridge.nemo"
    bridge.save_to(str(path))
    system = build_system("bridge_ctc_ft", {"bridge": str(path), "reader_dir": tiny_cfg.student.pretrained_path})
    assert [system.transcribe(a.numpy()) for a in audio] == texts
