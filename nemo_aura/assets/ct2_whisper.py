"""CTranslate2 Whisper (``model.bin``, binary version 6) -> a Hugging Face ``WhisperForConditionalGeneration`` dir.

The CTranslate2 layout, little-endian: ``u32 version, str name, u32 revision, u32 n_vars``, then per
variable ``str name, u8 rank, rank x u32 shape, u8 dtype, u32 nbytes, bytes``; then ``u32 n_aliases``
and ``(str alias, str target)`` pairs. A ``str`` is ``u16 length`` (with a trailing NUL) + bytes.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
CT2_DTYPE_CODES = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.int32): 3,
                   np.dtype(np.float16): 4}
SUPPORTED_VERSION = 6


@dataclass
class CT2Model:
    """The variables of a CTranslate2 model file, with aliases resolved to their targets."""

    name: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)

    def get(self, key: str) -> np.ndarray:
        return self.variables[self.aliases.get(key, key)]

    def __contains__(self, key: str) -> bool:
        return key in self.variables or key in self.aliases


class _Reader:
    def __init__(self, data: bytes, path: str):
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError(f"{self.path}: truncated CTranslate2 file (wanted {n} bytes at offset {self.pos}, "
                             f"file has {len(self.data)})")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def string(self) -> str:
        (length,) = self.unpack("H")
        return self.take(length).rstrip(b"\0").decode("utf-8")


def read_ct2_model(path: str | Path | list[str | Path]) -> CT2Model:
    """Parse a ``model.bin`` (or its parts, concatenated in the given order)."""
    parts = [Path(p) for p in (path if isinstance(path, (list, tuple)) else [path])]
    for p in parts:
        if not p.is_file():
            raise FileNotFoundError(f"CTranslate2 model file '{p}' does not exist")
    data = b"".join(p.read_bytes() for p in parts)
    where = " + ".join(str(p) for p in parts)
    r = _Reader(data, where)
    (version,) = r.unpack("I")
    if version != SUPPORTED_VERSION:
        raise ValueError(f"{where}: CTranslate2 binary version {version}; this converter reads version {SUPPORTED_VERSION}")
    name = r.string()
    (revision,) = r.unpack("I")
    (n_vars,) = r.unpack("I")
    variables = {}
    for _ in range(n_vars):
        var = r.string()
        (rank,) = r.unpack("B")
        shape = r.unpack(f"{rank}I") if rank else ()
        (code,) = r.unpack("B")
        (nbytes,) = r.unpack("I")
        raw = r.take(nbytes)
        if code not in CT2_DTYPES:
            raise ValueError(f"{where}: variable {var!r} has unknown dtype code {code}")
        variables[var] = _decode(raw, CT2_DTYPES[code], shape)
    aliases = {}
    if r.pos < len(data):
        (n_aliases,) = r.unpack("I")
        for _ in range(n_aliases):
            alias = r.string()
            aliases[alias] = r.string()
    return CT2Model(name=name, revision=revision, variables=variables, aliases=aliases)


def _decode(raw: bytes, dtype, shape) -> np.ndarray:
    if dtype == "bfloat16":
        as_u32 = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
        return as_u32.view(np.float32).reshape(shape)
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def write_ct2_model(path: str | Path, model: CT2Model) -> None:
    """Write ``model`` in the same format (used by tests to make synthetic files; float32/float16/int)."""
    def string(s: str) -> bytes:
        b = s.encode("utf-8") + b"\0"
        return struct.pack("<H", len(b)) + b

    buf = io.BytesIO()
    buf.write(struct.pack("<I", SUPPORTED_VERSION) + string(model.name) + struct.pack("<I", model.revision))
    buf.write(struct.pack("<I", len(model.variables)))
    for name, value in model.variables.items():
        value = np.asarray(value, order="C")  # (ascontiguousarray would turn scalars into 1-D arrays)
        buf.write(string(name) + struct.pack("<B", value.ndim) + struct.pack(f"<{value.ndim}I", *value.shape))
        buf.write(struct.pack("<B", CT2_DTYPE_CODES[value.dtype]) + struct.pack("<I", value.nbytes) + value.tobytes())
    buf.write(struct.pack("<I", len(model.aliases)))
    for alias, target in model.aliases.items():
        buf.write(string(alias) + string(target))
    Path(path).write_bytes(buf.getvalue())


# ---------------------------------------------------------------------------------------------- to HF
_LAYER = re.compile(r"^(encoder|decoder)/layer_(\d+)/(.+)$")
_COMMON = {  # CTranslate2 sub-name -> HF sub-name, inside one layer
    "self_attention/linear_1": "self_attn.out_proj",
    "self_attention/layer_norm": "self_attn_layer_norm",
    "ffn/linear_0": "fc1",
    "ffn/linear_1": "fc2",
    "ffn/layer_norm": "final_layer_norm",
    "attention/linear_0": "encoder_attn.q_proj",
    "attention/linear_2": "encoder_attn.out_proj",
    "attention/layer_norm": "encoder_attn_layer_norm",
}
_TOP = {
    "encoder/conv1": "model.encoder.conv1", "encoder/conv2": "model.encoder.conv2",
    "encoder/layer_norm": "model.encoder.layer_norm", "decoder/layer_norm": "model.decoder.layer_norm",
    "decoder/embeddings": "model.decoder.embed_tokens",
}
_SCALARS = {"activation", "alibi", "alignment_heads", "alignment_layer", "num_heads", "pre_norm",
            "scale_embeddings", "start_from_zero_embedding"}
_PARAM = {"weight": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}


def ct2_to_hf_state_dict(model: CT2Model) -> dict[str, np.ndarray]:
    """Rename and split CTranslate2 Whisper variables into HF ``WhisperForConditionalGeneration`` tensors (fp32)."""
    out: dict[str, np.ndarray] = {}
    for name, value in model.variables.items():
        side, _, rest = name.partition("/")
        if rest in _SCALARS or name == "decoder/projection/weight":
            continue
        value = value.astype(np.float32)
        if rest == "position_encodings/encodings":
            out[f"model.{side}.embed_positions.weight"] = value
            continue
        module, _, param = name.rpartition("/")
        if param not in _PARAM:
            raise ValueError(f"unexpected CTranslate2 Whisper variable {name!r}")
        if module in _TOP:
            out[f"{_TOP[module]}.{_PARAM[param]}"] = value
            continue
        m = _LAYER.match(module)
        if not m:
            raise ValueError(f"unexpected CTranslate2 Whisper variable {name!r}")
        side, index, sub = m.groups()
        prefix = f"model.{side}.layers.{index}"
        hf_param = _PARAM[param]
        if sub == "self_attention/linear_0":  # fused q, k, v (k has no bias)
            q, k, v = np.split(value, 3, axis=0)
            out[f"{prefix}.self_attn.q_proj.{hf_param}"] = q
            out[f"{prefix}.self_attn.v_proj.{hf_param}"] = v
            if hf_param == "weight":
                out[f"{prefix}.self_attn.k_proj.weight"] = k
        elif sub == "attention/linear_1":  # cross-attention fused k, v
            k, v = np.split(value, 2, axis=0)
            out[f"{prefix}.encoder_attn.v_proj.{hf_param}"] = v
            if hf_param == "weight":
                out[f"{prefix}.encoder_attn.k_proj.weight"] = k
        elif sub in _COMMON:
            out[f"{prefix}.{_COMMON[sub]}.{hf_param}"] = value
        else:
            raise ValueError(f"unexpected CTranslate2 Whisper variable {name!r}")
    out["proj_out.weight"] = out["model.decoder.embed_tokens.weight"]
    return out


def whisper_config_from_ct2(model: CT2Model, ct2_config: dict, tokenizer_vocab: dict[str, int]):
    """A ``WhisperConfig`` read off the tensor shapes, the CTranslate2 config.json and the tokenizer."""
    from transformers import WhisperConfig

    layers = lambda side: 1 + max(int(m.group(2)) for n in model.variables if (m := _LAYER.match(n.rpartition("/")[0])) and m.group(1) == side)  # noqa: E731
    vocab, d_model = model.get("decoder/embeddings/weight").shape
    eot = tokenizer_vocab["<|endoftext|>"]
    return WhisperConfig(
        vocab_size=int(vocab), num_mel_bins=int(model.get("encoder/conv1/weight").shape[1]), d_model=int(d_model),
        encoder_layers=layers("encoder"), decoder_layers=layers("decoder"),
        encoder_attention_heads=int(model.get("encoder/num_heads")), decoder_attention_heads=int(model.get("decoder/num_heads")),
        encoder_ffn_dim=int(model.get("encoder/layer_0/ffn/linear_0/weight").shape[0]),
        decoder_ffn_dim=int(model.get("decoder/layer_0/ffn/linear_0/weight").shape[0]),
        max_source_positions=int(model.get("encoder/position_encodings/encodings").shape[0]),
        max_target_positions=int(model.get("decoder/position_encodings/encodings").shape[0]),
        pad_token_id=eot, bos_token_id=eot, eos_token_id=eot,
        decoder_start_token_id=tokenizer_vocab["<|startoftranscript|>"],
        suppress_tokens=None, begin_suppress_tokens=None,  # they belong to the generation config
        tie_word_embeddings=True,
    )


def whisper_generation_config(config, ct2_config: dict, vocab: dict[str, int]):
    """What ``generate(language=..., task=...)`` needs: language/task ids, no-timestamps id, suppressions."""
    from transformers import GenerationConfig

    lang_ids = set(ct2_config.get("lang_ids", []))
    by_id = {i: t for t, i in vocab.items()}
    lang_to_id = {by_id[i]: i for i in sorted(lang_ids) if i in by_id}
    gen = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id, pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, max_length=config.max_target_positions,
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [220, config.eos_token_id])),
        no_timestamps_token_id=vocab["<|notimestamps|>"], is_multilingual=bool(lang_to_id),
        alignment_heads=ct2_config.get("alignment_heads"),
    )
    if lang_to_id:
        gen.lang_to_id = lang_to_id
        gen.task_to_id = {"transcribe": vocab["<|transcribe|>"], "translate": vocab["<|translate|>"]}
    return gen


def find_ct2_files(model_dir: Path) -> tuple[list[Path], Path, Path]:
    """``model.bin`` (or its ``.partN`` pieces, in order), ``config.json`` and ``tokenizer.json`` of a package dir."""
    bins = [model_dir / "model.bin"] if (model_dir / "model.bin").is_file() else sorted(
        model_dir.glob("model.bin.part*"), key=lambda p: int(p.name.rsplit("part", 1)[1]))
    if not bins:
        raise FileNotFoundError(f"no CTranslate2 model.bin (or model.bin.partN) in '{model_dir}'")
    for name in ("config.json", "tokenizer.json"):
        if not (model_dir / name).is_file():
            raise FileNotFoundError(f"'{model_dir / name}' is missing (needed beside the CTranslate2 model.bin)")
    return bins, model_dir / "config.json", model_dir / "tokenizer.json"


def convert_ct2_whisper(model_files: list[Path], ct2_config: Path, tokenizer_json: Path, out_dir: Path) -> Path:
    """Write a complete HF Whisper directory (fp32 safetensors, tokenizer, feature extractor, generation config)."""
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizerFast

    model = read_ct2_model(model_files)
    if model.name != "WhisperSpec":
        raise ValueError(f"{model_files[0]}: a {model.name} model, not a CTranslate2 Whisper (WhisperSpec)")
    cfg_json = json.loads(Path(ct2_config).read_text())
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(tokenizer_json))
    vocab = tokenizer.get_vocab()
    config = whisper_config_from_ct2(model, cfg_json, vocab)
    hf = WhisperForConditionalGeneration(config)
    state = {k: torch.from_numpy(v) for k, v in ct2_to_hf_state_dict(model).items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "proj_out.weight"]
    if missing or unexpected:
        raise ValueError(f"CTranslate2 -> HF Whisper mapping incomplete: missing={missing[:8]} unexpected={unexpected[:8]}")
    hf.generation_config = whisper_generation_config(config, cfg_json, vocab)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(out_dir)
    return out_dir
