"""Builders for tiny, download-free models and data: used by the tests and by the tiny recipe preset (CI)."""
from __future__ import annotations

import io
import math
import struct
from pathlib import Path

import numpy as np
import soundfile as sf

CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TOKENIZER_TEXT = [
    "user assistant system", "repeat exactly what is said in the audio", "answer the spoken question in a few words",
    "context using the", "what is the capital of france paris", "the quick brown fox jumps over the lazy dog",
    "one two three four five six seven eight nine ten", "hello world how are you today",
]


def build_tiny_llm(out_dir: Path, num_layers: int = 4, hidden: int = 64, seed: int = 0) -> Path:
    """A random tiny Llama + a BPE tokenizer trained here, with ChatML special tokens."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists():
        return out_dir
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=CHATML_SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(TOKENIZER_TEXT * 4, trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(hf_tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=num_layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=hf_tok.bos_token_id, eos_token_id=hf_tok.eos_token_id, pad_token_id=hf_tok.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = hf_tok.eos_token_id
    model.save_pretrained(out_dir)
    hf_tok.save_pretrained(out_dir)
    return out_dir


def tiny_conformer_teacher_cfg() -> dict:
    """A 2-layer Conformer with NeMo's mel front end (a stand-in for Canary/FastConformer)."""
    return {
        "type": "nemo",
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "sample_rate": 16000, "features": 80, "window_size": 0.025, "window_stride": 0.01, "dither": 0.0,
        },
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConformerEncoder",
            "feat_in": 80, "n_layers": 2, "d_model": 32, "subsampling": "striding", "subsampling_factor": 4,
            "ff_expansion_factor": 2, "n_heads": 2, "conv_kernel_size": 9, "self_attention_model": "rel_pos",
            "dropout": 0.0, "dropout_pre_encoder": 0.0, "dropout_emb": 0.0, "dropout_att": 0.0,
        },
    }


def synth_wave(seed: int, seconds: float, sample_rate: int = 16000) -> np.ndarray:
    """A deterministic chirp + tone mixture: 'speech-like' enough for front ends, cheap to make."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = rng.uniform(120, 300)
    wave = 0.3 * np.sin(2 * math.pi * (f0 * t + rng.uniform(50, 200) * t**2))
    wave += 0.1 * np.sin(2 * math.pi * rng.uniform(500, 2000) * t) * (np.sin(2 * math.pi * 3 * t) > 0)
    wave += 0.01 * rng.standard_normal(len(t))
    return wave.astype(np.float32)


def write_tiny_cuts(out_dir: Path, n: int = 6, seed: int = 0, task: str = "asr"):
    """Write ``n`` wavs and a Lhotse CutSet (jsonl.gz) with transcripts (and QA fields for task=qa)."""
    from lhotse import CutSet, Recording, SupervisionSegment

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    words = TOKENIZER_TEXT[-3].split()
    cuts = []
    for i in range(n):
        path = out_dir / f"utt{i:03d}.wav"
        sf.write(path, synth_wave(seed + i, 1.0 + 0.25 * (i % 4)), 16000)
        rec = Recording.from_file(path, recording_id=f"utt{i:03d}")
        text = " ".join(words[i % len(words): i % len(words) + 3])
        cut = rec.to_cut()
        cut.supervisions = [SupervisionSegment(id=rec.id, recording_id=rec.id, start=0, duration=rec.duration, text=text)]
        cut.custom = {"task": task}
        if task == "qa":
            cut.custom.update({"answers": [words[i % len(words)]], "context": "one two three"})
        cuts.append(cut)
    cutset = CutSet.from_cuts(cuts)
    path = out_dir / "cuts.jsonl.gz"
    cutset.to_file(path)
    return path


def build_tiny_ctc_nemo(path: Path, seed: int = 0) -> Path:
    """A random 2-layer Conformer-CTC ``.nemo`` (char vocabulary): a stand-in for a user's NeMo ASR model."""
    import torch
    from omegaconf import OmegaConf
    from nemo.collections.asr.models import EncDecCTCModel

    parts = tiny_conformer_teacher_cfg()
    vocab = list("abcdefghijklmnopqrstuvwxyz '")
    cfg = OmegaConf.create({
        "preprocessor": parts["preprocessor"], "encoder": parts["encoder"],
        "decoder": {"_target_": "nemo.collections.asr.modules.ConvASRDecoder", "feat_in": parts["encoder"]["d_model"],
                    "num_classes": len(vocab), "vocabulary": vocab},
        "labels": vocab,
    })
    torch.manual_seed(seed)
    EncDecCTCModel(cfg=cfg).eval().save_to(str(path))
    return Path(path)


def build_tiny_whisper_dir(out_dir: Path, seed: int = 0) -> Path:
    """A random tiny Whisper (``aura_tiny.yaml``'s teacher config) saved as a local HF directory with a feature
    extractor and a small character tokenizer: a stand-in for a Whisper teacher or the cascade's ASR directory."""
    import json

    import torch
    from omegaconf import OmegaConf
    from transformers import (WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                              WhisperProcessor, WhisperTokenizer)

    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists():
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate("abcdefghijklmnopqrstuvwxyzĠ")}))
    (out_dir / "merges.txt").write_text("#version: 0.2\n")
    specials = ["<|startoftranscript|>", "<|notimestamps|>"]
    tokenizer = WhisperTokenizer(str(out_dir / "vocab.json"), str(out_dir / "merges.txt"), additional_special_tokens=specials)
    eos, start = tokenizer.convert_tokens_to_ids(["<|endoftext|>", specials[0]])
    preset = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "model" / "aura_tiny.yaml").teacher.config
    config = WhisperConfig(**{**OmegaConf.to_container(preset), "vocab_size": len(tokenizer)}, pad_token_id=eos,
                           bos_token_id=eos, eos_token_id=eos, decoder_start_token_id=start)
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    model.generation_config.decoder_start_token_id, model.generation_config.eos_token_id = start, eos
    model.save_pretrained(out_dir)
    seconds = config.max_source_positions * 2 // 100
    WhisperProcessor(WhisperFeatureExtractor(feature_size=config.num_mel_bins, chunk_length=seconds), tokenizer).save_pretrained(out_dir)
    return out_dir


def piper_available() -> bool:
    """Whether the piper engine and its voice are installed (recipes/aura/local/install_voices.sh)."""
    from nemo_aura.data.tts import piper_voice_path

    try:
        import piper  # noqa: F401

        piper_voice_path()
        return True
    except (ImportError, RuntimeError):
        return False


def write_ct2_model(path, variables: dict[str, np.ndarray], aliases: dict[str, str] | None = None, *,
                    spec: str = "WhisperSpec", revision: int = 3, version: int | None = None) -> Path:
    """Write variables (float32/float16/int8/int16/int32, scalars allowed) in the CTranslate2 layout.

    Used by the tests to build synthetic files; ``version`` exists so they can write a wrong one.
    """
    from nemo_aura.assets.ct2_whisper import CT2_BINARY_VERSION, CT2_DTYPE_CODES

    version = CT2_BINARY_VERSION if version is None else version

    def string(s: str) -> bytes:
        b = s.encode("utf-8") + b"\0"
        return struct.pack("<H", len(b)) + b

    buf = io.BytesIO()
    buf.write(struct.pack("<I", version) + string(spec) + struct.pack("<I", revision))
    buf.write(struct.pack("<I", len(variables)))
    for name, value in variables.items():
        value = np.asarray(value, order="C")  # (ascontiguousarray would turn a scalar into a 1-D array)
        if value.dtype not in CT2_DTYPE_CODES:
            raise TypeError(f"variable {name!r}: dtype {value.dtype} cannot be written to a CTranslate2 file")
        buf.write(string(name) + struct.pack("<B", value.ndim) + struct.pack(f"<{value.ndim}I", *value.shape))
        buf.write(struct.pack("<BI", CT2_DTYPE_CODES[value.dtype], value.nbytes) + value.tobytes())
    aliases = aliases or {}
    buf.write(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        buf.write(string(alias) + string(target))
    Path(path).write_bytes(buf.getvalue())
    return Path(path)
