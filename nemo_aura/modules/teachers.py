"""Frozen ASR encoders that provide the per-layer targets of the distillation.

Both kinds share one interface: ``teacher(audio, audio_lens, layers)`` returns the outputs of the
requested encoder blocks (1-based) and the number of valid frames per item. A teacher is frozen,
stays in eval mode, is outside the optimizer, and is never part of the encoder-free export.
"""
from __future__ import annotations

import json
import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from nemo_aura.parts.layers import capture_layer_outputs, truncated_layers


@dataclass
class TeacherOutput:
    """Per-layer encoder states ``{layer: (B, T, D)}`` and valid frame counts ``(B,)``."""

    hidden_states: dict[int, Tensor]
    lengths: Tensor


class Teacher(nn.Module):
    """Base class: freezing and eval mode are enforced here, once, for every teacher."""

    num_layers: int
    hidden_size: int

    def freeze(self) -> None:
        for param in self.parameters():
            param.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "Teacher":
        # A teacher never leaves eval mode: no dropout, no dither, fixed targets.
        return super().train(False)

    @property
    def _layer_owner(self) -> tuple[nn.Module, str]:
        """The module holding the encoder blocks, and the attribute name of its block list."""
        return self.encoder, "layers"

    def encode(self, audio: Tensor, audio_lens: Tensor) -> Tensor:
        """Run the encoder (its blocks collected by hooks); return valid frame counts."""
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, audio: Tensor, audio_lens: Tensor, layers: list[int]) -> TeacherOutput:
        if not layers:
            raise ValueError("teacher called without any layer to return")
        owner, attr = self._layer_owner
        # The teacher is the fixed reference: fp32 even inside a bf16-autocast training step (its feature
        # extractors also hand tensors to numpy, which has no bf16).
        with torch.autocast(device_type=audio.device.type, enabled=False), \
                truncated_layers(owner, max(layers), attr), capture_layer_outputs(getattr(owner, attr), layers) as states:
            lengths = self.encode(audio.float(), audio_lens)
        return TeacherOutput(hidden_states={k: v.float() for k, v in states.items()}, lengths=lengths)


def _check_local_dir(path: str, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"{what}: '{path}' is not a local directory (no model hub is used by nemo-aura)")
    return p


def _load_prefixed_safetensors(model_dir: Path, prefix: str) -> dict[str, Tensor] | None:
    """Read only the tensors under ``prefix`` from a (possibly sharded) safetensors checkpoint."""
    from safetensors import safe_open

    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (model_dir / "model.safetensors").exists():
        files = ["model.safetensors"]
    else:
        return None
    tensors = {}
    for name in files:
        with safe_open(str(model_dir / name), framework="pt") as f:
            for key in f.keys():
                if key.startswith(prefix):
                    tensors[key[len(prefix):]] = f.get_tensor(key)
    return tensors


class WhisperTeacher(Teacher):
    """The encoder of a Hugging Face Whisper model (any size), from a local directory or a config.

    Whisper always encodes a padded 30 s window (``max_source_positions`` frames at 50 Hz); only the
    frames covering real audio are valid targets. ``window_seconds`` lists shorter windows to use when a
    batch fits (as whisper.cpp's ``audio_ctx``): the encoder runs on the first positions only, which
    costs ~1/4 at 10 s; on Whisper-base the states of real frames stay within cosine >= 0.97 of the
    30 s ones (measured, see README). Empty = always the full window (exact).
    """

    def __init__(self, pretrained_path: str | None = None, config: dict | None = None,
                 window_seconds: list[float] | None = None):
        super().__init__()
        from transformers import WhisperConfig, WhisperFeatureExtractor
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        if (pretrained_path is None) == (config is None):
            raise ValueError("teacher (whisper): give exactly one of 'pretrained_path' or 'config'")
        if pretrained_path is not None:
            model_dir = _check_local_dir(pretrained_path, "teacher.pretrained_path")
            wcfg = WhisperConfig.from_pretrained(model_dir)
        else:
            model_dir = None
            wcfg = WhisperConfig(**config)
        wcfg._attn_implementation = "sdpa"
        self.encoder = WhisperEncoder(wcfg)
        if model_dir is not None:
            self._load_weights(model_dir)
        full_window_seconds = wcfg.max_source_positions * 2 * 160 / 16000
        if model_dir is not None and (model_dir / "preprocessor_config.json").exists():
            self.feature_extractor = WhisperFeatureExtractor.from_pretrained(model_dir)
        else:
            self.feature_extractor = WhisperFeatureExtractor(
                feature_size=wcfg.num_mel_bins, chunk_length=int(round(full_window_seconds))
            )
        expected = wcfg.max_source_positions * 2
        if self.feature_extractor.nb_max_frames != expected:
            raise ValueError(
                f"Whisper feature extractor gives {self.feature_extractor.nb_max_frames} frames but the encoder "
                f"expects {expected} (max_source_positions={wcfg.max_source_positions})"
            )
        self.num_layers = wcfg.encoder_layers
        self.hidden_size = wcfg.d_model
        self.max_frames = wcfg.max_source_positions
        full = self.max_frames * 2 * self.feature_extractor.hop_length  # samples in the full window
        self.windows = sorted({min(full, int(w * self.sample_rate)) for w in (window_seconds or [])} | {full})
        self.freeze()

    def _load_weights(self, model_dir: Path) -> None:
        tensors = _load_prefixed_safetensors(model_dir, "model.encoder.")
        if tensors is None:
            from transformers import WhisperModel

            self.encoder.load_state_dict(WhisperModel.from_pretrained(model_dir).encoder.state_dict())
            return
        missing, unexpected = self.encoder.load_state_dict(tensors, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"Whisper encoder weights in {model_dir} do not fit its config.json: "
                f"missing={missing} unexpected={unexpected}"
            )

    @property
    def sample_rate(self) -> int:
        return int(self.feature_extractor.sampling_rate)

    def encode(self, audio: Tensor, audio_lens: Tensor) -> Tensor:
        window = pick_window(self.windows, int(audio_lens.max()))
        if window is None:
            too_long = [i for i, n in enumerate(audio_lens.tolist()) if n > self.windows[-1]]
            raise ValueError(
                f"items {too_long} are longer than the Whisper teacher's {self.windows[-1] / self.sample_rate:.0f} s window"
            )
        waves = [audio[i, :n].float().cpu().numpy() for i, n in enumerate(audio_lens.tolist())]
        feats = self.feature_extractor(
            waves, sampling_rate=self.sample_rate, return_tensors="pt", padding="max_length", max_length=window
        ).input_features
        param = next(self.encoder.parameters())
        hop = self.feature_extractor.hop_length
        positions = window // hop // 2
        with whisper_window(self.encoder, positions):  # a shorter window: the first positions only
            self.encoder(feats.to(device=param.device, dtype=param.dtype))
        frames = torch.tensor([math.ceil(math.ceil(n / hop) / 2) for n in audio_lens.tolist()])
        return frames.clamp(1, positions).to(audio.device)

def pick_window(windows: list[int], longest: int) -> int | None:
    """The shortest of ``windows`` (samples) that holds ``longest`` samples; None if none does."""
    return next((w for w in sorted(windows) if w >= longest), None)


@contextmanager
def whisper_window(encoder: nn.Module, count: int):
    """Run a Hugging Face ``WhisperEncoder`` (alone or inside a ``WhisperForConditionalGeneration``, which shares its
    config) on its first ``count`` positions, a window shorter than the padded 30 s (as whisper.cpp's
    ``audio_ctx``); the full window is restored afterwards. Feed it ``2 * count`` mel frames."""
    frames = encoder.config.max_source_positions
    if count == frames:
        yield
        return
    full = encoder.embed_positions
    encoder.embed_positions = nn.Embedding.from_pretrained(full.weight[:count], freeze=True)
    encoder.config.max_source_positions = count
    try:
        yield
    finally:
        encoder.embed_positions = full
        encoder.config.max_source_positions = frames


class NeMoEncoderTeacher(Teacher):
    """The preprocessor + encoder of a NeMo ASR model (Canary, FastConformer, Conformer, ...).

    Built from a ``.nemo`` (``ASRModel.restore_from``; decoders are dropped) or, for tests and custom
    models, from ``preprocessor``/``encoder`` configs with ``_target_``.
    """

    def __init__(self, nemo_path: str | None = None, preprocessor: dict | None = None, encoder: dict | None = None):
        super().__init__()
        if nemo_path is not None:
            from nemo.collections.asr.models import ASRModel

            path = Path(nemo_path).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"teacher.nemo_path: '{nemo_path}' is not a file")
            asr = ASRModel.restore_from(str(path), map_location="cpu")
            self.preprocessor, self.encoder = asr.preprocessor, asr.encoder
            del asr
        elif preprocessor is not None and encoder is not None:
            from nemo.core.classes import ModelPT

            self.preprocessor = ModelPT.from_config_dict(_as_dictconfig(preprocessor))
            self.encoder = ModelPT.from_config_dict(_as_dictconfig(encoder))
        else:
            raise ValueError("teacher (nemo): give 'nemo_path', or both 'preprocessor' and 'encoder' configs")
        if not hasattr(self.encoder, "layers"):
            raise ValueError(f"teacher encoder {type(self.encoder).__name__} has no 'layers' list to distil from")
        self.num_layers = len(self.encoder.layers)
        self.hidden_size = int(getattr(self.encoder, "d_model", None) or self.encoder._feat_out)
        self.freeze()

    @property
    def sample_rate(self) -> int:
        return int(self.preprocessor._sample_rate)

    def encode(self, audio: Tensor, audio_lens: Tensor) -> Tensor:
        feats, feat_lens = self.preprocessor(input_signal=audio, length=audio_lens)
        _, lengths = self.encoder(audio_signal=feats, length=feat_lens)
        return lengths


def _as_dictconfig(cfg) -> DictConfig:
    return cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)


def build_teacher(cfg: DictConfig | dict) -> Teacher:
    """``cfg.type`` is ``whisper`` or ``nemo``; the remaining keys go to the teacher's constructor."""
    cfg = OmegaConf.to_container(_as_dictconfig(cfg), resolve=True)
    kind = cfg.pop("type", None)
    if kind == "whisper":
        return WhisperTeacher(**cfg)
    if kind == "nemo":
        return NeMoEncoderTeacher(**cfg)
    raise ValueError(f"teacher.type must be 'whisper' or 'nemo', got {kind!r}")
