"""The student's own audio front end: what replaces the ASR encoder at inference time."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from nemo.collections.asr.modules import AudioToMelSpectrogramPreprocessor, SpectrogramAugmentation
from nemo.utils import logging

STEMS = ("mlp", "whisper_conv")
# Preprocessor settings forced by the whisper_conv stem: Whisper's log-mel has no pre-emphasis and no
# per-feature normalisation, and the copied conv weights expect Whisper's absolute scale.
_WHISPER_PREPROCESSOR = {"normalize": None, "preemph": None}


def patch_count(num_frames: Tensor, patch_size: int) -> Tensor:
    """Audio tokens for ``num_frames`` feature frames: a last, partial patch is padded, not dropped."""
    return torch.div(num_frames + patch_size - 1, patch_size, rounding_mode="floor")


class AudioPatchEmbedding(nn.Module):
    """log-mel frames -> patches of ``patch_size`` frames -> small MLP -> LLM-width tokens.

    The log-mel front end is NeMo's ``AudioToMelSpectrogramPreprocessor`` owned by the student, so the
    deployed model needs no teacher component. With a 10 ms hop, ``patch_size=8`` gives 12.5 tokens/s,
    ``patch_size=2`` gives 50 tokens/s (one token per Whisper encoder frame).
    Stacking ``patch_size`` frames and applying a linear layer is a conv with kernel = stride, as in VoRA.

    ``stem="whisper_conv"`` puts Whisper's conv stem first (conv k3 + GELU, conv k3 stride 2 + GELU: 100 ->
    50 Hz, ``stem_channels`` wide), then stacks ``patch_size // 2`` of its frames; ``init_from_teacher``
    copies the stem from a Whisper teacher. The stem sees Whisper-scaled features: the preprocessor runs
    without pre-emphasis/normalisation, ln -> log10, then Whisper's ``max(x, max - 8)`` and ``(x + 4) / 4``
    per item. NeMo's mel filterbank is close to, not equal to, Whisper's: the copy is an initialisation.
    The token grid is the same as with the mlp stem (``num_patches`` does not depend on the stem).
    """

    def __init__(
        self,
        output_dim: int,
        preprocessor: dict,
        patch_size: int = 8,
        hidden_dim: int = 1024,
        dropout: float = 0.0,
        stem: str = "mlp",
        stem_channels: int | None = None,
        init_from_teacher: bool = False,
    ):
        super().__init__()
        if patch_size < 1:
            raise ValueError(f"patch_embedding.patch_size must be >= 1, got {patch_size}")
        if stem not in STEMS:
            raise ValueError(f"patch_embedding.stem must be one of {list(STEMS)}, got {stem!r}")
        preprocessor = {"pad_to": 0, **dict(preprocessor)}
        if stem == "whisper_conv":
            if patch_size < 2 or patch_size % 2:
                raise ValueError(
                    f"patch_embedding.patch_size must be even and >= 2 with stem whisper_conv (its conv halves "
                    f"the frame rate), got {patch_size}"
                )
            if not stem_channels or stem_channels < 1:
                raise ValueError(
                    "patch_embedding.stem_channels must be set with stem whisper_conv: the teacher's d_model "
                    f"(512 for Whisper-base), got {stem_channels}"
                )
            if not preprocessor.get("log", True):
                raise ValueError("patch_embedding.preprocessor.log must be true with stem whisper_conv")
            changed = {k: preprocessor[k] for k, v in _WHISPER_PREPROCESSOR.items() if preprocessor.get(k, v) != v}
            if changed:
                logging.warning("stem whisper_conv: preprocessor %s overridden by %s (Whisper's feature scale)",
                               changed, _WHISPER_PREPROCESSOR)
            preprocessor.update(_WHISPER_PREPROCESSOR)
        elif init_from_teacher:
            raise ValueError("patch_embedding.init_from_teacher needs patch_embedding.stem: whisper_conv")
        self.preprocessor = AudioToMelSpectrogramPreprocessor(**preprocessor)
        self.spec_augment: SpectrogramAugmentation | None = None
        self.patch_size = patch_size
        self.stem = stem
        self.num_mels = int(preprocessor.get("features", 64))
        if stem == "whisper_conv":
            self.conv1 = nn.Conv1d(self.num_mels, stem_channels, kernel_size=3, padding=1)
            self.conv2 = nn.Conv1d(stem_channels, stem_channels, kernel_size=3, stride=2, padding=1)
            patch_dim = stem_channels * (patch_size // 2)
        else:
            patch_dim = self.num_mels * patch_size
        self.proj = nn.Sequential(
            nn.LayerNorm(patch_dim),
            nn.Linear(patch_dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, output_dim),
        )

    @property
    def sample_rate(self) -> int:
        return int(self.preprocessor._sample_rate)

    def num_frames(self, audio_lens: Tensor) -> Tensor:
        """Valid log-mel frames per waveform length (what the preprocessor reports), without running it."""
        return self.preprocessor.featurizer.get_seq_len(audio_lens).long()

    def num_patches(self, num_frames: Tensor) -> Tensor:
        return patch_count(num_frames, self.patch_size)

    def set_spec_augment(self, spec_augment: dict | None) -> None:
        """NeMo's SpecAugment on the log-mel in training (``None``: off). A few hours of synthetic speech are
        learnt by heart within a few epochs; masking time and frequency bands is the ASR recipes' usual cure.
        Its masks draw from torch's generator, so a seeded run masks the same way every time."""
        if not spec_augment:
            self.spec_augment = None
            return
        try:  # NeMo's constructor knows its keys (freq/time/rect masks ...)
            self.spec_augment = SpectrogramAugmentation(**spec_augment)
        except TypeError as e:
            raise ValueError(f"spec_augment: unknown keys in {sorted(spec_augment)} for NeMo's "
                             f"SpectrogramAugmentation ({e})") from None

    @torch.no_grad()
    def init_from_teacher(self, teacher: nn.Module) -> None:
        """Copy the teacher encoder's ``conv1``/``conv2`` (a Whisper teacher) into the whisper_conv stem."""
        if self.stem != "whisper_conv":
            raise ValueError(f"init_from_teacher needs patch_embedding.stem: whisper_conv (this one is {self.stem!r})")
        encoder = getattr(teacher, "encoder", None)
        convs = [getattr(encoder, name, None) for name in ("conv1", "conv2")]
        if not all(isinstance(c, nn.Conv1d) for c in convs):
            raise ValueError(
                f"patch_embedding.init_from_teacher: teacher {type(teacher).__name__} "
                f"({type(encoder).__name__}) has no Whisper conv stem (encoder.conv1/conv2)"
            )
        for name, src in zip(("conv1", "conv2"), convs):
            dst = getattr(self, name)
            if src.weight.shape != dst.weight.shape or (src.stride, src.padding) != (dst.stride, dst.padding):
                raise ValueError(
                    f"patch_embedding.init_from_teacher: teacher {name} has weight {tuple(src.weight.shape)} "
                    f"(stride {src.stride[0]}) but the stem's is {tuple(dst.weight.shape)} (stride {dst.stride[0]}); "
                    "set patch_embedding.stem_channels to the teacher's d_model and "
                    "patch_embedding.preprocessor.features to its num_mel_bins"
                )
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)

    def _whisper_scale(self, feats: Tensor, feat_lens: Tensor, frames: int) -> Tensor:
        """NeMo ln-mel (B, F, T) -> Whisper's scale, right-padded to ``frames`` as Whisper pads silence."""
        x = feats / math.log(10.0)
        valid = torch.arange(x.shape[-1], device=x.device)[None, :] < feat_lens[:, None]  # (B, T)
        peak = x.masked_fill(~valid[:, None, :], float("-inf")).amax(dim=(1, 2), keepdim=True)  # (B, 1, 1)
        peak = peak.nan_to_num(neginf=0.0)  # an item without valid frames: finite silence, no NaN in the batch
        floor = peak - 8.0
        x = torch.where(valid[:, None, :], torch.maximum(x, floor), floor)
        if frames > x.shape[-1]:
            x = torch.cat([x, floor.expand(-1, x.shape[1], frames - x.shape[-1])], dim=-1)
        return (x + 4.0) / 4.0

    def forward(self, audio: Tensor, audio_lens: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T) waveform, (B,) lengths -> (B, N, output_dim) tokens, (B,) token counts."""
        feats, feat_lens = self.preprocessor(input_signal=audio, length=audio_lens)  # (B, F, T)
        if self.spec_augment is not None and self.training:
            feats = self.spec_augment(input_spec=feats, length=feat_lens)
        if self.stem == "whisper_conv":
            frames = -(-feats.shape[-1] // self.patch_size) * self.patch_size
            # one more silence frame than kept: conv1 sees silence, not zeros, past the end (as in Whisper), so
            # an item's tokens do not depend on how much the batch pads it
            x = self._whisper_scale(feats, feat_lens, frames + 1)
            x = nn.functional.gelu(self.conv1(x)[..., :frames])
            x = nn.functional.gelu(self.conv2(x)).transpose(1, 2)  # (B, frames / 2, C) at 50 Hz
            batch, steps, channels = x.shape
            per_patch = self.patch_size // 2
            patches = x.reshape(batch, steps // per_patch, per_patch * channels)
            return self.proj(patches), self.num_patches(feat_lens)
        feats = feats.transpose(1, 2)  # (B, T, F)
        num_frames = feats.shape[1]
        pad = (-num_frames) % self.patch_size
        if pad:
            feats = nn.functional.pad(feats, (0, 0, 0, pad))
        batch, frames, mels = feats.shape
        patches = feats.reshape(batch, frames // self.patch_size, self.patch_size * mels)
        return self.proj(patches), self.num_patches(feat_lens)
