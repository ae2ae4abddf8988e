"""The offline model converters, on small synthetic files whose tensors are known (no packages, no downloads)."""
import json

import numpy as np
import pytest
import torch

from nemo_aura.assets.ct2_whisper import convert_ct2_whisper, read_ct2_file
from nemo_aura.testing import write_ct2_model

SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|de|>", "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
N_TIMESTAMPS = 5  # the tokenizer lacks them, as in the packages; the converter adds <|0.00|>..<|0.08|>
HEADS = 2


@pytest.fixture
def tiny_whisper(tmp_path):
    """A random HF Whisper, its tokenizer.json and a CTranslate2 config.json, in ``tmp_path``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["hello world the quick brown fox"] * 4, trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_special_tokens(SPECIALS)
    tok.save(str(tmp_path / "tokenizer.json"))
    vocab = tok.get_vocab()
    cfg = WhisperConfig(vocab_size=len(vocab) + N_TIMESTAMPS, num_mel_bins=80, d_model=32, encoder_layers=2,
                        decoder_layers=2, encoder_attention_heads=HEADS, decoder_attention_heads=HEADS,
                        encoder_ffn_dim=64, decoder_ffn_dim=48, max_source_positions=1500, max_target_positions=64,
                        pad_token_id=vocab["<|endoftext|>"], bos_token_id=vocab["<|endoftext|>"],
                        eos_token_id=vocab["<|endoftext|>"], decoder_start_token_id=vocab["<|startoftranscript|>"])
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(cfg).eval()
    ct2_config = {"lang_ids": [vocab["<|en|>"], vocab["<|de|>"]], "suppress_ids": [1, 2],
                  "suppress_ids_begin": [vocab["<|endoftext|>"]], "alignment_heads": [[1, 0]]}
    (tmp_path / "config.json").write_text(json.dumps(ct2_config))
    return model, vocab


def read_ct2_resolved(path):
    return read_ct2_file(path).resolved()


def ct2_variables(model) -> dict[str, np.ndarray]:
    """Lay a HF Whisper out as CTranslate2 does: fused q/k/v with a zero k bias, fused cross-attention k/v,
    gamma/beta norms, int16 scalar head counts; mostly float16 with some float32 variables."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    out: dict[str, np.ndarray] = {}

    def put(dst, src, names=("weight", "bias"), dtype=np.float16):
        for ct2_name, hf_name in zip(names, ("weight", "bias")):
            out[f"{dst}/{ct2_name}"] = sd[f"{src}.{hf_name}"].astype(dtype)

    def fused(dst, prefix, parts, dtype=np.float16):
        out[f"{dst}/weight"] = np.concatenate([sd[f"{prefix}.{p}_proj.weight"] for p in parts]).astype(dtype)
        out[f"{dst}/bias"] = np.concatenate([np.zeros_like(sd[f"{prefix}.v_proj.bias"]) if p == "k"
                                             else sd[f"{prefix}.{p}_proj.bias"] for p in parts]).astype(dtype)

    for side, n in (("encoder", model.config.encoder_layers), ("decoder", model.config.decoder_layers)):
        for i in range(n):
            p, d = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            fused(f"{d}/self_attention/linear_0", f"{p}.self_attn", "qkv")
            put(f"{d}/self_attention/linear_1", f"{p}.self_attn.out_proj")
            put(f"{d}/self_attention/layer_norm", f"{p}.self_attn_layer_norm", ("gamma", "beta"), np.float32)
            put(f"{d}/ffn/linear_0", f"{p}.fc1", dtype=np.float32)
            put(f"{d}/ffn/linear_1", f"{p}.fc2")
            put(f"{d}/ffn/layer_norm", f"{p}.final_layer_norm", ("gamma", "beta"))
            if side == "decoder":
                put(f"{d}/attention/linear_0", f"{p}.encoder_attn.q_proj")
                fused(f"{d}/attention/linear_1", f"{p}.encoder_attn", "kv")
                put(f"{d}/attention/linear_2", f"{p}.encoder_attn.out_proj")
                put(f"{d}/attention/layer_norm", f"{p}.encoder_attn_layer_norm", ("gamma", "beta"))
        put(f"{side}/layer_norm", f"model.{side}.layer_norm", ("gamma", "beta"))
        out[f"{side}/position_encodings/encodings"] = sd[f"model.{side}.embed_positions.weight"].astype(np.float16)
        out[f"{side}/num_heads"] = np.array(HEADS, dtype=np.int16)
        out[f"{side}/pre_norm"] = np.array(1, dtype=np.int8)
    put("encoder/conv1", "model.encoder.conv1")
    put("encoder/conv2", "model.encoder.conv2")
    out["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"].astype(np.float16)
    out["decoder/scale_embeddings"] = np.array(0, dtype=np.int8)
    return out


ALIASES = {"decoder/projection/weight": "decoder/embeddings/weight"}


def write_split(tmp_path, variables, aliases=ALIASES):
    """Write a model.bin and split it unevenly into two pieces, as the PyPI packages ship it."""
    blob = write_ct2_model(tmp_path / "model.bin", variables, aliases)
    data = blob.read_bytes()
    parts = [tmp_path / "model.bin.part1", tmp_path / "model.bin.part2"]
    parts[0].write_bytes(data[: len(data) // 3])
    parts[1].write_bytes(data[len(data) // 3 :])
    return blob, parts


def test_reader_round_trip_with_aliases_and_parts(tmp_path, tiny_whisper):
    variables = ct2_variables(tiny_whisper[0])
    blob, parts = write_split(tmp_path, variables)
    ct2 = read_ct2_file(parts)
    assert ct2.spec == "WhisperSpec" and ct2.aliases == ALIASES and list(ct2.variables) == list(variables)
    for name, value in variables.items():
        assert ct2.variables[name].dtype == value.dtype and np.array_equal(ct2.variables[name], value), name
    assert ct2.variables["encoder/num_heads"].shape == () and int(ct2.variables["encoder/num_heads"]) == HEADS
    resolved = read_ct2_resolved(blob)
    assert np.array_equal(resolved["decoder/projection/weight"], variables["decoder/embeddings/weight"])


def test_convert_synthetic_ct2_whisper_against_known_tensors(tmp_path, tiny_whisper):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model, vocab = tiny_whisper
    _, parts = write_split(tmp_path, ct2_variables(model))
    out = convert_ct2_whisper(parts, tmp_path / "hf")  # config.json / tokenizer.json found beside part1

    converted = WhisperForConditionalGeneration.from_pretrained(out).eval()
    ref = model.state_dict()
    got = converted.state_dict()
    assert set(got) == set(ref)
    for name, tensor in got.items():
        tol = 1e-3 * ref[name].abs().max().item() + 1e-6  # float16 rounding of the stored variables
        assert torch.allclose(tensor, ref[name], atol=tol, rtol=0), name
    assert got["proj_out.weight"].data_ptr() == got["model.decoder.embed_tokens.weight"].data_ptr()  # tied

    config = converted.config
    assert (config.d_model, config.encoder_layers, config.decoder_layers) == (32, 2, 2)
    assert (config.encoder_attention_heads, config.encoder_ffn_dim, config.decoder_ffn_dim) == (HEADS, 64, 48)
    assert config.vocab_size == len(vocab) + N_TIMESTAMPS and config.max_target_positions == 64

    feats = torch.randn(1, 80, 3000)
    with torch.no_grad():
        a = model.model.encoder(feats).last_hidden_state
        b = converted.model.encoder(feats).last_hidden_state
    assert (a - b).abs().max() < 2e-2 and torch.nn.functional.cosine_similarity(a, b, dim=-1).min() > 0.9999

    gen = converted.generation_config
    assert gen.is_multilingual is False  # a 300-token vocabulary is below Whisper's multilingual size
    processor = WhisperProcessor.from_pretrained(out)
    assert processor.feature_extractor.feature_size == 80 and processor.feature_extractor.nb_max_frames == 3000
    assert len(processor.tokenizer) == config.vocab_size
    assert processor.tokenizer.convert_tokens_to_ids("<|0.00|>") == vocab["<|notimestamps|>"] + 1
    ids = converted.generate(feats, max_new_tokens=3)
    assert ids.shape[0] == 1


def test_generation_config_of_a_multilingual_vocabulary(tiny_whisper):
    """``generate(language=, task=)`` needs language/task ids; they come from the CTranslate2 config."""
    from transformers import WhisperConfig

    from nemo_aura.assets.ct2_whisper import whisper_generation_config

    _, vocab = tiny_whisper
    ct2_config = {"lang_ids": [vocab["<|en|>"], vocab["<|de|>"]], "suppress_ids": [1, 2], "alignment_heads": [[1, 0]]}
    config = WhisperConfig(vocab_size=51865, decoder_start_token_id=vocab["<|startoftranscript|>"],
                           eos_token_id=vocab["<|endoftext|>"], max_target_positions=64)
    gen = whisper_generation_config(config, ct2_config, vocab)
    assert gen.is_multilingual and gen.lang_to_id == {"<|en|>": vocab["<|en|>"], "<|de|>": vocab["<|de|>"]}
    assert gen.task_to_id == {"transcribe": vocab["<|transcribe|>"], "translate": vocab["<|translate|>"]}
    assert gen.no_timestamps_token_id == vocab["<|notimestamps|>"] and gen.suppress_tokens == [1, 2]
    assert gen.prev_sot_token_id == vocab["<|startofprev|>"] and gen.alignment_heads == [[1, 0]]


def test_ct2_reader_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        read_ct2_resolved(tmp_path / "missing.bin")
    bad = tmp_path / "v5.bin"
    write_ct2_model(bad, {"encoder/num_heads": np.array(2, dtype=np.int16)}, version=5)
    with pytest.raises(ValueError, match=r"v5\.bin: CTranslate2 binary version 5"):
        read_ct2_resolved(bad)
    write_ct2_model(tmp_path / "ok.bin", {"encoder/num_heads": np.array(2, dtype=np.int16),
                                          "encoder/conv1/weight": np.ones((4, 80, 3), dtype=np.float16)})
    data = (tmp_path / "ok.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[:-100])
    with pytest.raises(ValueError, match=r"cut\.bin: truncated CTranslate2 file"):
        read_ct2_resolved(tmp_path / "cut.bin")


def test_convert_errors_name_the_file(tmp_path, tiny_whisper):
    variables = ct2_variables(tiny_whisper[0])
    with pytest.raises(FileNotFoundError, match="model.bin"):
        convert_ct2_whisper(tmp_path / "model.bin", tmp_path / "hf")  # not written yet
    odd = dict(variables, **{"encoder/layer_0/mystery/weight": np.zeros((2, 2), dtype=np.float16)})
    write_ct2_model(tmp_path / "model.bin", odd, ALIASES)
    with pytest.raises(ValueError, match=r"model\.bin: unexpected variable 'encoder/layer_0/mystery/weight'"):
        convert_ct2_whisper(tmp_path / "model.bin", tmp_path / "hf")
    incomplete = {k: v for k, v in variables.items() if not k.startswith("decoder/layer_1/ffn/")}
    write_ct2_model(tmp_path / "model.bin", incomplete, ALIASES)
    with pytest.raises(ValueError, match=r"model\.bin: .*missing=\['model\.decoder\.layers\.1\.fc1"):
        convert_ct2_whisper(tmp_path / "model.bin", tmp_path / "hf")
    (tmp_path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        convert_ct2_whisper(tmp_path, tmp_path / "hf")


def test_gguf_missing_file_is_named(tmp_path):
    from nemo_aura.assets.gguf_llm import convert_gguf_llm

    with pytest.raises(FileNotFoundError, match="nothing.gguf"):
        convert_gguf_llm(tmp_path / "nothing.gguf", tmp_path / "out")
