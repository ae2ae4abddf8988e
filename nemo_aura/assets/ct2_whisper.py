"""CTranslate2 Whisper (``model.bin``, binary version 6) -> a Hugging Face ``WhisperForConditionalGeneration`` dir.

Registry packages ship Whisper only in CTranslate2 form (fp16, fused attention projections); the recipe and
the teachers load plain Hugging Face directories, so this module reads the CTranslate2 file itself (no
``ctranslate2`` runtime needed) and rewrites it.

The CTranslate2 layout, little-endian: ``u32 version, str spec, u32 revision, u32 n_vars``, then per
variable ``str name, u8 rank, rank x u32 shape, u8 dtype, u32 nbytes, bytes``; then ``u32 n_aliases``
and ``(str alias, str target)`` pairs. A ``str`` is ``u16 length`` (counting a trailing NUL) + bytes.
"""
from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np

PathLike = Union[str, Path]

CT2_BINARY_VERSION = 6
# dtype code -> numpy dtype; bfloat16 (5) has no numpy dtype and is widened to float32 on read.
CT2_DTYPES: dict[int, np.dtype] = {0: np.dtype(np.float32), 1: np.dtype(np.int8), 2: np.dtype(np.int16),
                                   3: np.dtype(np.int32), 4: np.dtype(np.float16)}
BFLOAT16_CODE = 5
CT2_DTYPE_CODES: dict[np.dtype, int] = {dtype: code for code, dtype in CT2_DTYPES.items()}


# ---------------------------------------------------------------------------------------------- file format
@dataclass
class CT2File:
    """Everything a CTranslate2 ``model.bin`` holds; ``variables`` excludes the aliases."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)
    source: str = ""

    def resolved(self) -> dict[str, np.ndarray]:
        """The variables plus one entry per alias (the same array as its target)."""
        out = dict(self.variables)
        for alias, target in self.aliases.items():
            if target not in self.variables:
                raise ValueError(f"{self.source}: alias {alias!r} points to missing variable {target!r}")
            out[alias] = self.variables[target]
        return out


class _Reader:
    """Sequential little-endian reads that name the file and the offset when the data runs out."""

    def __init__(self, data: bytes | memoryview, source: str):
        self.data, self.pos, self.source = memoryview(data), 0, source

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise ValueError(f"{self.source}: truncated CTranslate2 file (needs {n} bytes at offset {self.pos}, "
                             f"only {len(self.data)} bytes in total)")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def string(self) -> str:
        (length,) = self.unpack("H")
        return bytes(self.take(length)).rstrip(b"\0").decode("utf-8")

    @property
    def at_end(self) -> bool:
        return self.pos >= len(self.data)


def _as_paths(path: PathLike | Sequence[PathLike]) -> list[Path]:
    return [Path(p) for p in ([path] if isinstance(path, (str, Path)) else path)]


def read_ct2_file(path: PathLike | Sequence[PathLike]) -> CT2File:
    """Parse a ``model.bin``, or its pieces (``model.bin.part1``, ``.part2``...) concatenated in the given order."""
    parts = _as_paths(path)
    for p in parts:
        if not p.is_file():
            raise FileNotFoundError(f"CTranslate2 model file '{p}' does not exist")
    source = " + ".join(str(p) for p in parts)
    r = _Reader(b"".join(p.read_bytes() for p in parts) if len(parts) > 1 else parts[0].read_bytes(), source)
    (version,) = r.unpack("I")
    if version != CT2_BINARY_VERSION:
        raise ValueError(f"{source}: CTranslate2 binary version {version}; this reader supports version "
                         f"{CT2_BINARY_VERSION} only")
    spec = r.string()
    (revision,) = r.unpack("I")
    (n_vars,) = r.unpack("I")
    variables = {}
    for _ in range(n_vars):
        name = r.string()
        (rank,) = r.unpack("B")
        shape = r.unpack(f"{rank}I") if rank else ()
        (code,) = r.unpack("B")
        (nbytes,) = r.unpack("I")
        variables[name] = _decode(r.take(nbytes), code, shape, f"{source}: variable {name!r}")
    aliases = {}
    if not r.at_end:  # files written before aliases existed end here
        (n_aliases,) = r.unpack("I")
        for _ in range(n_aliases):
            alias = r.string()
            aliases[alias] = r.string()
    return CT2File(spec=spec, revision=revision, variables=variables, aliases=aliases, source=source)


def _decode(raw: memoryview, code: int, shape: tuple[int, ...], what: str) -> np.ndarray:
    count = int(np.prod(shape, dtype=np.int64))
    if code == BFLOAT16_CODE:
        if len(raw) != 2 * count:
            raise ValueError(f"{what}: {len(raw)} bytes for shape {shape} in bfloat16")
        return (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(shape)
    if code not in CT2_DTYPES:
        raise ValueError(f"{what}: unknown CTranslate2 dtype code {code}")
    dtype = CT2_DTYPES[code]
    if len(raw) != dtype.itemsize * count:
        raise ValueError(f"{what}: {len(raw)} bytes for shape {shape} in {dtype}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


# ---------------------------------------------------------------------------------------------- names -> HF
_LAYER = re.compile(r"^(encoder|decoder)/layer_(\d+)/(.+)/(weight|bias|gamma|beta)$")
_PARAM = {"weight": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}
_IN_LAYER = {  # CTranslate2 module inside a layer -> HF module (the fused ones are split separately)
    "self_attention/linear_1": "self_attn.out_proj",
    "self_attention/layer_norm": "self_attn_layer_norm",
    "attention/linear_0": "encoder_attn.q_proj",
    "attention/linear_2": "encoder_attn.out_proj",
    "attention/layer_norm": "encoder_attn_layer_norm",
    "ffn/linear_0": "fc1",
    "ffn/linear_1": "fc2",
    "ffn/layer_norm": "final_layer_norm",
}
_TOP = {
    "encoder/conv1": "model.encoder.conv1",
    "encoder/conv2": "model.encoder.conv2",
    "encoder/layer_norm": "model.encoder.layer_norm",
    "decoder/layer_norm": "model.decoder.layer_norm",
    "decoder/embeddings": "model.decoder.embed_tokens",
    "decoder/projection": "proj_out",
}
# Scalar settings of the CTranslate2 spec; only num_heads is needed (read into the config), the others
# are fixed for Whisper (pre-norm, GELU, unscaled embeddings) and checked in `_check_whisper_settings`.
_SETTINGS = {"num_heads", "activation", "alibi", "alignment_heads", "alignment_layer", "pre_norm",
             "scale_embeddings", "start_from_zero_embedding"}


def ct2_to_hf_state_dict(variables: dict[str, np.ndarray], source: str = "model.bin") -> dict[str, np.ndarray]:
    """Rename and split CTranslate2 Whisper variables into HF ``WhisperForConditionalGeneration`` tensors (fp32).

    The fused self-attention ``linear_0`` holds q, k, v rows and the cross-attention ``linear_1`` k, v rows.
    CTranslate2 stores a zero bias for k, which Whisper does not have; it is dropped (a k bias adds the same
    amount to every key's score, so softmax ignores it anyway).
    """
    out: dict[str, np.ndarray] = {}
    for name, value in variables.items():
        side, _, rest = name.partition("/")
        if side in ("encoder", "decoder") and rest in _SETTINGS:
            continue
        value = np.asarray(value, dtype=np.float32)
        if side in ("encoder", "decoder") and rest == "position_encodings/encodings":
            out[f"model.{side}.embed_positions.weight"] = value
            continue
        module, _, param = name.rpartition("/")
        if module in _TOP and param in _PARAM:
            out[f"{_TOP[module]}.{_PARAM[param]}"] = value
            continue
        m = _LAYER.match(name)
        if not m:
            raise ValueError(f"{source}: unexpected variable {name!r} for a CTranslate2 Whisper model")
        side, index, sub, param = m.groups()
        prefix, hf_param = f"model.{side}.layers.{index}", _PARAM[param]
        if sub == "self_attention/linear_0":
            q, k, v = np.split(value, 3, axis=0)
            out[f"{prefix}.self_attn.q_proj.{hf_param}"] = q
            out[f"{prefix}.self_attn.v_proj.{hf_param}"] = v
            if hf_param == "weight":
                out[f"{prefix}.self_attn.k_proj.weight"] = k
        elif sub == "attention/linear_1" and side == "decoder":
            k, v = np.split(value, 2, axis=0)
            out[f"{prefix}.encoder_attn.v_proj.{hf_param}"] = v
            if hf_param == "weight":
                out[f"{prefix}.encoder_attn.k_proj.weight"] = k
        elif sub in _IN_LAYER and (side == "decoder" or not sub.startswith("attention/")):
            out[f"{prefix}.{_IN_LAYER[sub]}.{hf_param}"] = value
        else:
            raise ValueError(f"{source}: unexpected variable {name!r} for a CTranslate2 Whisper model")
    return out


def _num_layers(variables: Iterable[str], side: str) -> int:
    indices = {int(m.group(2)) for n in variables if (m := _LAYER.match(n)) and m.group(1) == side}
    return max(indices) + 1 if indices else 0


def _scalar(variables: dict[str, np.ndarray], name: str, source: str) -> int:
    if name not in variables:
        raise ValueError(f"{source}: variable {name!r} is missing (not a CTranslate2 Whisper model?)")
    return int(np.asarray(variables[name]).reshape(()))


def _check_whisper_settings(variables: dict[str, np.ndarray], source: str) -> None:
    """Refuse specs whose fixed settings differ from Whisper's: HF Whisper could not reproduce them."""
    expected = {"pre_norm": 1, "scale_embeddings": 0, "alibi": 0, "start_from_zero_embedding": 0}
    for side in ("encoder", "decoder"):
        for key, want in expected.items():
            name = f"{side}/{key}"
            if name in variables and int(np.asarray(variables[name]).reshape(())) != want:
                raise ValueError(f"{source}: {name} = {int(variables[name])}, HF Whisper needs {want}")


def whisper_config_from_ct2(variables: dict[str, np.ndarray], vocab: dict[str, int], source: str = "model.bin"):
    """A ``WhisperConfig`` read off the tensor shapes, the head-count scalars and the tokenizer's special ids."""
    from transformers import WhisperConfig

    def shape(name: str) -> tuple[int, ...]:
        if name not in variables:
            raise ValueError(f"{source}: variable {name!r} is missing (not a CTranslate2 Whisper model?)")
        return tuple(int(s) for s in variables[name].shape)

    vocab_size, d_model = shape("decoder/embeddings/weight")
    eot = _token_id(vocab, "<|endoftext|>")
    return WhisperConfig(
        vocab_size=vocab_size, d_model=d_model, num_mel_bins=shape("encoder/conv1/weight")[1],
        encoder_layers=_num_layers(variables, "encoder"), decoder_layers=_num_layers(variables, "decoder"),
        encoder_attention_heads=_scalar(variables, "encoder/num_heads", source),
        decoder_attention_heads=_scalar(variables, "decoder/num_heads", source),
        encoder_ffn_dim=shape("encoder/layer_0/ffn/linear_0/weight")[0],
        decoder_ffn_dim=shape("decoder/layer_0/ffn/linear_0/weight")[0],
        max_source_positions=shape("encoder/position_encodings/encodings")[0],
        max_target_positions=shape("decoder/position_encodings/encodings")[0],
        pad_token_id=eot, bos_token_id=eot, eos_token_id=eot,
        decoder_start_token_id=_token_id(vocab, "<|startoftranscript|>"),
        suppress_tokens=None, begin_suppress_tokens=None,  # they belong to the generation config
        scale_embedding=False, activation_function="gelu", tie_word_embeddings=True,
    )


def _token_id(vocab: dict[str, int], token: str) -> int:
    if token not in vocab:
        raise ValueError(f"the Whisper tokenizer has no {token} token")
    return vocab[token]


_LANGUAGE_TOKEN = re.compile(r"^<\|([a-z]{2,3}|haw|yue)\|>$")


def whisper_generation_config(config, ct2_config: dict, vocab: dict[str, int]):
    """What ``generate()`` needs: start/end ids, language and task ids, no-timestamps id, suppressions.

    Multilingual iff the vocabulary has the multilingual size (>= 51865), as in Whisper itself: an English-only
    model's vocabulary holds language tokens too, so their presence proves nothing. Language ids come from the
    CTranslate2 config (else from the ``<|xx|>`` tokens between start-of-transcript and ``<|translate|>``).
    """
    from transformers import GenerationConfig

    multilingual = config.vocab_size >= 51865
    sot = config.decoder_start_token_id
    gen = GenerationConfig(
        decoder_start_token_id=sot, pad_token_id=config.pad_token_id, bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id, max_length=config.max_target_positions,
        suppress_tokens=[int(i) for i in ct2_config.get("suppress_ids", [])],
        begin_suppress_tokens=[int(i) for i in ct2_config.get("suppress_ids_begin", [220, config.eos_token_id])],
        no_timestamps_token_id=_token_id(vocab, "<|notimestamps|>"), is_multilingual=multilingual,
        return_timestamps=False, max_initial_timestamp_index=50,
    )
    if ct2_config.get("alignment_heads"):
        gen.alignment_heads = [[int(a), int(b)] for a, b in ct2_config["alignment_heads"]]
    if "<|startofprev|>" in vocab:
        gen.prev_sot_token_id = vocab["<|startofprev|>"]
    if multilingual:
        by_id = {i: t for t, i in vocab.items()}
        lang_ids = ct2_config.get("lang_ids") or [
            i for t, i in vocab.items() if sot < i < vocab.get("<|translate|>", -1) and _LANGUAGE_TOKEN.match(t)]
        gen.lang_to_id = {by_id[int(i)]: int(i) for i in sorted(lang_ids)}
        gen.task_to_id = {"transcribe": _token_id(vocab, "<|transcribe|>"),
                          "translate": _token_id(vocab, "<|translate|>")}
    return gen


# ---------------------------------------------------------------------------------------------- conversion
@dataclass
class CT2WhisperFiles:
    """Where the pieces of one CTranslate2 Whisper model are."""

    model_bin: list[Path]
    config: Path
    tokenizer: Path


def _part_index(p: Path) -> int:
    return int(p.name.rsplit("part", 1)[1]) if ".part" in p.name else 0


def find_ct2_whisper_files(source: PathLike | Sequence[PathLike]) -> CT2WhisperFiles:
    """Resolve a model directory, or a list of files (``model.bin`` or its ``.partN`` pieces, optionally the
    ``config.json`` and ``tokenizer.json``), into the files to read. The JSON files default to the ones beside
    the first model file, as packages ship them."""
    paths = _as_paths(source)
    bins: list[Path] = []
    named: dict[str, Path] = {}
    for p in paths:
        if p.is_dir():
            found = [p / "model.bin"] if (p / "model.bin").is_file() else list(p.glob("model.bin.part*"))
            if not found:
                raise FileNotFoundError(f"no CTranslate2 model.bin (or model.bin.partN) in '{p}'")
            bins += found
        elif p.name in ("config.json", "tokenizer.json"):
            named[p.name] = p
        elif p.name == "model.bin" or re.fullmatch(r"model\.bin\.part\d+", p.name):
            if not p.is_file():
                raise FileNotFoundError(f"CTranslate2 model file '{p}' does not exist")
            bins.append(p)
        else:
            raise ValueError(f"'{p}': expected a model directory, model.bin(.partN), config.json or tokenizer.json")
    if not bins:
        raise FileNotFoundError(f"no CTranslate2 model.bin among {[str(p) for p in paths]}")
    bins.sort(key=_part_index)
    indices = [_part_index(p) for p in bins]
    if len(bins) > 1 and indices != list(range(1, len(bins) + 1)):
        raise ValueError(f"CTranslate2 model pieces must be model.bin.part1..N without gaps: {[str(p) for p in bins]}")
    for name in ("config.json", "tokenizer.json"):
        named.setdefault(name, bins[0].parent / name)
        if not named[name].is_file():
            raise FileNotFoundError(f"'{named[name]}' does not exist (needed with the CTranslate2 model.bin)")
    return CT2WhisperFiles(model_bin=bins, config=named["config.json"], tokenizer=named["tokenizer.json"])


def _add_timestamp_tokens(tokenizer, vocab_size: int, where: Path) -> None:
    """Give the ids after ``<|notimestamps|>`` their ``<|0.00|>``..``<|30.00|>`` tokens, as in OpenAI's tokenizer.

    CTranslate2 packages ship a tokenizer without them, one per 20 ms up to the end of the embedding table;
    without them the tokenizer would not cover the model's vocabulary."""
    from tokenizers import AddedToken

    first = tokenizer.convert_tokens_to_ids("<|notimestamps|>") + 1
    if len(tokenizer) == vocab_size:
        return
    if len(tokenizer) != first or vocab_size - first > 1501:
        raise ValueError(f"{where}: {len(tokenizer)} tokens do not fit the model's {vocab_size} embeddings")
    stamps = [AddedToken(f"<|{i * 0.02:.2f}|>", lstrip=False, rstrip=False, normalized=False, special=False)
              for i in range(vocab_size - first)]
    tokenizer.add_tokens(stamps)
    if len(tokenizer) != vocab_size or tokenizer.convert_tokens_to_ids("<|0.00|>") != first:
        raise ValueError(f"{where}: adding timestamp tokens gave {len(tokenizer)} tokens, expected {vocab_size}")


def convert_ct2_whisper(source: PathLike | Sequence[PathLike], out_dir: PathLike) -> Path:
    """Write a complete HF Whisper directory from a CTranslate2 one: config, fp32 ``model.safetensors``, fast
    tokenizer, ``preprocessor_config.json`` and ``generation_config.json``. Every tensor of the file must map to
    a Whisper parameter and every Whisper parameter must be filled, or it raises naming the file."""
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizerFast

    files = find_ct2_whisper_files(source)
    ct2 = read_ct2_file(files.model_bin)
    if ct2.spec != "WhisperSpec":
        raise ValueError(f"{ct2.source}: a CTranslate2 {ct2.spec!r} model, not a Whisper one (WhisperSpec)")
    variables = ct2.resolved()
    _check_whisper_settings(variables, ct2.source)
    ct2_config = json.loads(files.config.read_text())
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(files.tokenizer))
    config = whisper_config_from_ct2(variables, tokenizer.get_vocab(), ct2.source)
    _add_timestamp_tokens(tokenizer, config.vocab_size, files.tokenizer)
    vocab = tokenizer.get_vocab()

    state = {k: torch.from_numpy(v) for k, v in ct2_to_hf_state_dict(variables, ct2.source).items()}
    projection = state.pop("proj_out.weight", None)
    if projection is not None and not torch.equal(projection, state["model.decoder.embed_tokens.weight"]):
        raise ValueError(f"{ct2.source}: the output projection differs from the embeddings; only tied Whisper is supported")
    model = WhisperForConditionalGeneration(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if k != "proj_out.weight"}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k} {tuple(state[k].shape)} != {expected[k]}" for k in set(state) & set(expected)
             if tuple(state[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        raise ValueError(f"{ct2.source}: CTranslate2 -> HF Whisper mapping does not fit: missing={missing[:6]} "
                         f"unexpected={unexpected[:6]} wrong shapes={wrong[:6]}")
    model.load_state_dict(state, strict=False)
    model.tie_weights()
    model.generation_config = whisper_generation_config(config, ct2_config, vocab)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.model_max_length = config.max_target_positions
    tokenizer.save_pretrained(out_dir)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(out_dir)
    return out_dir
