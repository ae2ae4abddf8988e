"""Training plumbing: teacher-target cache, Lhotse dataloaders + Lightning fit, teachers from local artefacts."""
import json
import shutil

import pytest
import soundfile as sf
import torch
from lhotse import CutSet, Recording
from lightning.pytorch import Trainer
from omegaconf import OmegaConf

from nemo_aura import AuRAModel
from nemo_aura.data.dataset import AuRADataset
from nemo_aura.data.teacher_cache import build_teacher_cache
from nemo_aura.modules.teachers import NeMoEncoderTeacher, WhisperTeacher
from conftest import ROOT
from nemo_aura.testing import build_tiny_ctc_nemo, synth_wave, write_tiny_cuts


def dataset_for(model: AuRAModel) -> AuRADataset:
    return AuRADataset(prompts=model.prompts, sample_rate=model.sample_rate, pad_id=model.pad_id)


def test_teacher_cache_gives_the_online_loss_and_resumes(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    model = AuRAModel(tiny_cfg).eval()
    cuts = CutSet.from_file(write_tiny_cuts(tmp_path / "data", n=5))
    manifest = build_teacher_cache(model, cuts, tmp_path / "cache", batch_size=2)
    cached = CutSet.from_file(manifest)
    assert len(cached) == 5 and all(c.custom["teacher_layers"] == model.distillation.teacher_layers for c in cached)

    batch = dataset_for(model)[cached]
    assert set(batch["teacher_targets"]) == set(model.distillation.teacher_layers)
    online = {k: v for k, v in batch.items() if not k.startswith("teacher_target")}
    with torch.no_grad():
        loss_cached = model.compute_losses(batch)["loss"]
        loss_online = model.compute_losses(online)["loss"]
    assert torch.allclose(loss_cached, loss_online, atol=2e-3), (loss_cached, loss_online)

    # Interrupted run: manifest not yet written, one array half-written -> only that one is recomputed.
    meta = tmp_path / "cache" / "cache.json"
    meta.unlink()
    (tmp_path / "cache" / "cuts.jsonl.gz").unlink()
    shutil.move(tmp_path / "cache" / "targets", tmp_path / "cache" / "targets.partial")
    victim = sorted((tmp_path / "cache" / "targets.partial").rglob("*.npy"))[0]
    victim.write_bytes(victim.read_bytes()[:40])
    build_teacher_cache(model, cuts, tmp_path / "cache", batch_size=2)
    assert json.loads(meta.read_text())["computed_now"] == 1
    assert not (tmp_path / "cache" / "targets.partial").exists()


def test_teacher_cache_links_the_same_audio_from_another_cache(tiny_cfg, tmp_path):
    """Data-scale presets: a larger corpus's cache links the smaller one's arrays of the very same audio."""
    torch.manual_seed(0)
    model = AuRAModel(tiny_cfg).eval()
    small = CutSet.from_file(write_tiny_cuts(tmp_path / "data", n=4))
    build_teacher_cache(model, small, tmp_path / "x1", batch_size=2)
    larger = list(CutSet.from_file(write_tiny_cuts(tmp_path / "data", n=6)))  # the same 4 wavs + 2 new ones
    changed = tmp_path / "data" / "utt001-other.wav"  # same id, other audio file: must not be reused
    sf.write(changed, torch.randn(20000).numpy() * 0.1, 16000)  # as long as utt001: only the file differs
    larger[1] = _with_audio(larger[1], changed)
    manifest = build_teacher_cache(model, CutSet.from_cuts(larger), tmp_path / "x2", batch_size=2, reuse_from=tmp_path / "x1")
    meta = json.loads((tmp_path / "x2" / "cache.json").read_text())
    assert (meta["linked_from_other_cache"], meta["computed_now"]) == (3, 3)
    ours, theirs = ({c.id: c.load_custom("teacher_targets") for c in CutSet.from_file(m)}
                    for m in (manifest, tmp_path / "x1" / "cuts.jsonl.gz"))
    assert all((ours[i] == theirs[i]).all() for i in ("utt000", "utt002", "utt003"))
    assert ours["utt001"].shape == theirs["utt001"].shape and not (ours["utt001"] == theirs["utt001"]).all()
    other_cfg = tiny_cfg.copy()
    other_cfg.patch_embedding.patch_size = 2
    with pytest.raises(ValueError, match="another teacher/patch config"):
        build_teacher_cache(AuRAModel(other_cfg), CutSet.from_cuts(larger), tmp_path / "x3", reuse_from=tmp_path / "x1")


def _with_audio(cut, wav):
    """``cut`` with its recording replaced by ``wav`` (same id)."""
    from lhotse.utils import fastcopy

    rec = Recording.from_file(wav, recording_id=cut.recording.id)
    return fastcopy(cut, recording=rec, duration=rec.duration,
                    supervisions=[fastcopy(s, duration=rec.duration) for s in cut.supervisions])


def test_stale_cache_is_refused(tiny_cfg, tmp_path):
    model = AuRAModel(tiny_cfg)
    cuts = CutSet.from_file(write_tiny_cuts(tmp_path / "data", n=2))
    manifest = build_teacher_cache(model, cuts, tmp_path / "cache")
    other_cfg = tiny_cfg.copy()
    other_cfg.patch_embedding.patch_size = 2
    other = AuRAModel(other_cfg)
    with pytest.raises(ValueError, match="another teacher/patch config"):
        build_teacher_cache(other, cuts, tmp_path / "cache")
    with pytest.raises(ValueError, match="rebuild it"):
        other.compute_losses(dataset_for(other)[CutSet.from_file(manifest)])


def test_lightning_fit_through_lhotse_dataloader(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    cuts_path = write_tiny_cuts(tmp_path / "data", n=6)
    cfg = tiny_cfg.copy()
    ds = {"cuts_path": str(cuts_path), "batch_size": 3, "shuffle": True, "seed": 0, "num_workers": 0}
    cfg.train_ds = ds
    cfg.validation_ds = {**ds, "shuffle": False}
    model = AuRAModel(cfg)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer = Trainer(
        accelerator="cpu", max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        limit_val_batches=1, val_check_interval=2, num_sanity_val_steps=0,
    )
    trainer.fit(model)
    assert trainer.global_step == 4
    assert "val_distill_cos_layer1" in trainer.callback_metrics
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in frozen.items())
    assert all(not torch.equal(params[n], v) for n, v in trainable.items())
    opt_params = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert opt_params == {id(p) for p in model.parameters() if p.requires_grad}


def test_dataset_resamples_other_rates(tiny_cfg, tmp_path):
    model = AuRAModel(tiny_cfg)
    path = tmp_path / "8k.wav"
    sf.write(path, synth_wave(0, 1.0, sample_rate=8000), 8000)
    cut = Recording.from_file(path).to_cut()
    from lhotse import SupervisionSegment

    cut.supervisions = [SupervisionSegment(id="s", recording_id=cut.recording_id, start=0, duration=1.0, text="one two")]
    batch = dataset_for(model)[CutSet.from_cuts([cut])]
    assert batch["audio_lens"].tolist() == [16000]


def test_whisper_teacher_from_a_local_directory(tmp_path):
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    cfg = WhisperConfig(
        **OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / "aura_tiny.yaml").teacher.config),
        pad_token_id=0, bos_token_id=1, eos_token_id=1, decoder_start_token_id=1,
    )
    torch.manual_seed(0)
    hf = WhisperForConditionalGeneration(cfg).eval()
    hf.save_pretrained(tmp_path / "whisper")
    WhisperFeatureExtractor(feature_size=80, chunk_length=10).save_pretrained(tmp_path / "whisper")
    teacher = WhisperTeacher(pretrained_path=str(tmp_path / "whisper"))
    wave = torch.from_numpy(synth_wave(0, 2.0))
    out = teacher(wave[None], torch.tensor([len(wave)]), layers=[1, 3])
    feats = teacher.feature_extractor([wave.numpy()], sampling_rate=16000, return_tensors="pt").input_features
    last_block = []
    hook = hf.model.encoder.layers[-1].register_forward_hook(lambda m, i, o: last_block.append(o[0] if isinstance(o, tuple) else o))
    with torch.no_grad():
        ref = hf.model.encoder(feats, output_hidden_states=True).hidden_states
    hook.remove()
    assert out.lengths.tolist() == [100]  # 2 s at 50 Hz
    assert torch.allclose(out.hidden_states[1], ref[1], atol=1e-5)
    # the last block's output is taken before Whisper's final layer norm: compare values to the pre-norm state
    pre_norm = last_block[0]
    assert torch.allclose(out.hidden_states[3], pre_norm, atol=1e-5)
    assert not torch.allclose(out.hidden_states[3], ref[3], atol=1e-3)  # HF's last hidden state is after the norm
    with pytest.raises(FileNotFoundError, match="not a local directory"):
        WhisperTeacher(pretrained_path=str(tmp_path / "nowhere"))


def test_nemo_teacher_from_a_dotnemo_file(tmp_path):
    from nemo.collections.asr.models import ASRModel

    build_tiny_ctc_nemo(tmp_path / "tiny_ctc.nemo")
    asr = ASRModel.restore_from(str(tmp_path / "tiny_ctc.nemo"), map_location="cpu").eval()
    teacher = NeMoEncoderTeacher(nemo_path=str(tmp_path / "tiny_ctc.nemo"))
    wave = torch.from_numpy(synth_wave(1, 1.5))[None]
    lens = torch.tensor([wave.shape[1]])
    out = teacher(wave, lens, layers=[2])
    with torch.no_grad():
        feats, feat_lens = asr.preprocessor(input_signal=wave, length=lens)
        encoded, enc_lens = asr.encoder(audio_signal=feats, length=feat_lens)
    assert out.lengths.tolist() == enc_lens.tolist()
    assert torch.allclose(out.hidden_states[2], encoded.transpose(1, 2), atol=1e-5)
    assert all(not p.requires_grad for p in teacher.parameters())
    with pytest.raises(FileNotFoundError, match="missing.nemo"):
        NeMoEncoderTeacher(nemo_path=str(tmp_path / "missing.nemo"))


def test_whisper_teacher_shorter_windows(tiny_cfg):
    """A short window is used when the batch fits (close to the full window's states), else the full one (exact)."""
    cfg = dict(tiny_cfg.teacher.config)
    full = WhisperTeacher(config=cfg)
    short = WhisperTeacher(config=cfg, window_seconds=[2])
    short.load_state_dict(full.state_dict())
    assert len(short.windows) == 2
    wave = torch.from_numpy(synth_wave(0, 1.5))[None]
    lens = torch.tensor([wave.shape[1]])
    a, b = full(wave, lens, [1, 3]), short(wave, lens, [1, 3])
    assert a.lengths.tolist() == b.lengths.tolist() == [75]
    assert torch.nn.functional.cosine_similarity(a.hidden_states[1][0, :75], b.hidden_states[1][0, :75], dim=-1).min() > 0.9
    long_wave = torch.from_numpy(synth_wave(1, 3.0))[None]
    long_lens = torch.tensor([long_wave.shape[1]])
    assert torch.equal(full(long_wave, long_lens, [3]).hidden_states[3], short(long_wave, long_lens, [3]).hidden_states[3])
    assert short.encoder.embed_positions.num_embeddings == full.max_frames  # restored after the short pass


def test_stage2_cache_benchmark_warms_both_paths_before_timing(tmp_path, monkeypatch):
    """The cache-vs-online speed-up: each path is warmed up once before either is timed (not the online one cold)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("cache_teacher", ROOT / "recipes/aura/local/cache_teacher.py")
    cache_teacher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cache_teacher)

    class FakeDataset:
        def __init__(self, **kwargs):
            pass

        def __getitem__(self, cuts):
            return {"audio": torch.zeros(len(cuts)), "teacher_target_1": torch.zeros(len(cuts))}

    calls = []
    monkeypatch.setattr(cache_teacher, "AuRADataset", FakeDataset)
    monkeypatch.setattr(cache_teacher, "time_pass", lambda model, batches: calls.append(
        ("cache" if any(k.startswith("teacher_target") for k in batches[0]) else "online", len(batches))) or 1.0)
    model = torch.nn.Linear(2, 2)
    model.prompts, model.sample_rate, model.pad_id = None, 16000, 0
    cuts = CutSet.from_file(write_tiny_cuts(tmp_path, n=6))
    result = cache_teacher.benchmark(model, cuts, num_cuts=6, batch_size=2, epoch_cuts=6)
    assert calls == [("online", 1), ("cache", 1), ("online", 3), ("cache", 3)] and result["speedup"] == 1.0


def test_training_batches_come_in_the_same_order_on_every_run(tmp_path):
    """conf/distill.yaml's train_ds (inherited by every training config) shuffles with a fixed seed: two loaders
    built from it give the same batches, so reruns and side-by-side benchmarks see the same data."""
    from nemo.collections.common.data.lhotse.dataloader import get_lhotse_dataloader_from_config

    from nemo_aura.train import compose_config

    cuts = write_tiny_cuts(tmp_path / "cuts", n=12)

    class CutIds(torch.utils.data.Dataset):
        def __getitem__(self, batch):
            return [c.id for c in batch]

    cfg = compose_config([f"model.train_ds.cuts_path={cuts}", "model.train_ds.batch_duration=3"], config_name="distill")

    def order():
        loader = get_lhotse_dataloader_from_config(cfg.model.train_ds, global_rank=0, world_size=1, dataset=CutIds())
        return [ids for _, ids in zip(range(12), loader)]

    first = order()
    assert len(first) >= 4 and first == order()  # one epoch (or 12 batches) of 2-3 cuts each, twice alike
