"""Lever 5: the patch embedding's optional Whisper conv stem, initialised from the teacher's."""
import math

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from nemo_aura import AuRAModel
from nemo_aura.modules.patch_embedding import AudioPatchEmbedding
from nemo_aura.modules.teachers import build_teacher
from nemo_aura.testing import synth_wave, tiny_conformer_teacher_cfg
from test_model import make_batch

PRE = {"sample_rate": 16000, "features": 80, "window_size": 0.025, "window_stride": 0.01,
       "normalize": "per_feature", "dither": 0.0}
# full patches, one sample short/over a hop, a partial last patch, shorter than a patch, than a hop
LENGTHS = [16000, 15999, 16161, 12345, 8001, 400, 161, 100]


def embedding(stem="mlp", patch_size=4, seed=0, **kw) -> AudioPatchEmbedding:
    torch.manual_seed(seed)
    if stem == "whisper_conv":
        kw.setdefault("stem_channels", 32)
    return AudioPatchEmbedding(output_dim=16, preprocessor=PRE, patch_size=patch_size, hidden_dim=24,
                               stem=stem, **kw).eval()


def batch_of(lengths):
    audio = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        audio[i, :n] = torch.from_numpy(synth_wave(i, n / 16000 + 0.01))[:n]
    return audio, torch.tensor(lengths)


def test_mlp_stem_is_unchanged():
    pe = embedding()
    assert pe.stem == "mlp" and not any(k.startswith(("conv1", "conv2")) for k in pe.state_dict())
    audio, lens = batch_of(LENGTHS)
    with torch.no_grad():
        tokens, counts = pe(audio, lens)
        # the pre-stem implementation, inlined
        feats, feat_lens = pe.preprocessor(input_signal=audio, length=lens)
        feats = feats.transpose(1, 2)
        feats = torch.nn.functional.pad(feats, (0, 0, 0, (-feats.shape[1]) % 4))
        expected = pe.proj(feats.reshape(len(LENGTHS), feats.shape[1] // 4, 4 * 80))
    assert torch.equal(tokens, expected)
    frames = [n // 160 for n in LENGTHS]  # what NeMo reports as valid
    assert counts.tolist() == [math.ceil(f / 4) for f in frames] == pe.num_patches(pe.num_frames(lens)).tolist()


@pytest.mark.parametrize("patch_size", [2, 4, 8])
def test_whisper_conv_keeps_the_token_grid(patch_size):
    mlp, conv = embedding(patch_size=patch_size), embedding("whisper_conv", patch_size=patch_size)
    assert conv.preprocessor.featurizer.normalize is None and conv.preprocessor.featurizer.preemph is None
    audio, lens = batch_of(LENGTHS)
    with torch.no_grad():
        conv_tokens, conv_counts = conv(audio, lens)
        mlp_tokens, mlp_counts = mlp(audio, lens)
        assert conv_tokens.shape == mlp_tokens.shape and torch.isfinite(conv_tokens).all()
        assert conv_counts.tolist() == mlp_counts.tolist() == conv.num_patches(conv.num_frames(lens)).tolist()
        for i, n in enumerate(LENGTHS):  # padding in a batch does not change an item's valid tokens
            alone, (count,) = conv(audio[i:i + 1, :n], lens[i:i + 1])
            assert count.item() == conv_counts[i].item()
            assert alone.shape[1] == mlp(audio[i:i + 1, :n], lens[i:i + 1])[0].shape[1]
            torch.testing.assert_close(alone[0, :count], conv_tokens[i, :count], rtol=1e-4, atol=1e-5)


def test_init_from_teacher_copies_the_conv_stem(tiny_cfg):
    teacher = build_teacher(tiny_cfg.teacher)  # tiny Whisper: 80 mels, d_model 32
    pe = embedding("whisper_conv", stem_channels=32)
    pe.init_from_teacher(teacher)
    for name in ("conv1", "conv2"):
        for part in ("weight", "bias"):
            assert torch.equal(getattr(getattr(pe, name), part), getattr(getattr(teacher.encoder, name), part))
    with pytest.raises(ValueError, match=r"teacher conv1 has weight \(32, 80, 3\).*stem_channels"):
        embedding("whisper_conv", stem_channels=16).init_from_teacher(teacher)
    with pytest.raises(ValueError, match="teacher NeMoEncoderTeacher .*has no Whisper conv stem"):
        pe.init_from_teacher(build_teacher(tiny_conformer_teacher_cfg()))
    with pytest.raises(ValueError, match="needs patch_embedding.stem: whisper_conv"):
        embedding().init_from_teacher(teacher)


def test_model_with_teacher_initialised_stem_trains(tiny_cfg):
    cfg = OmegaConf.create(OmegaConf.to_container(tiny_cfg))
    with open_dict(cfg):
        cfg.patch_embedding.update({"stem": "whisper_conv", "stem_channels": 32, "init_from_teacher": True})
    torch.manual_seed(0)
    model = AuRAModel(cfg)
    pe = model.patch_embedding
    assert pe.stem == "whisper_conv"
    assert torch.equal(pe.conv1.weight, model.teacher.encoder.conv1.weight)
    assert torch.equal(pe.conv2.bias, model.teacher.encoder.conv2.bias)
    assert pe.conv1.weight.requires_grad and not model.teacher.encoder.conv1.weight.requires_grad

    model.train()
    batch = make_batch(model)
    loss = model.compute_losses(batch)["loss"]
    assert torch.isfinite(loss)
    loss.backward()
    for conv in (pe.conv1, pe.conv2):
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert model.teacher.encoder.conv1.weight.grad is None
    before = pe.conv1.weight.detach().clone()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-2).step()
    assert not torch.equal(before, pe.conv1.weight)


def test_clear_stem_errors():
    for bad in (3, 1):
        with pytest.raises(ValueError, match=f"patch_embedding.patch_size must be even .* got {bad}"):
            embedding("whisper_conv", patch_size=bad)
    with pytest.raises(ValueError, match="patch_embedding.stem_channels must be set"):
        embedding("whisper_conv", stem_channels=None)
    with pytest.raises(ValueError, match="patch_embedding.stem must be one of"):
        embedding("conv")
    with pytest.raises(ValueError, match="init_from_teacher needs patch_embedding.stem: whisper_conv"):
        embedding(init_from_teacher=True)
