"""The student's own audio front end: what replaces the ASR encoder at inference time."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from nemo.collections.asr.modules import AudioToMelSpectrogramPreprocessor


class AudioPatchEmbedding(nn.Module):
    """log-mel frames -> patches of ``patch_size`` frames -> small MLP -> LLM-width tokens.

    The log-mel front end is NeMo's ``AudioToMelSpectrogramPreprocessor`` owned by the student, so the
    deployed model needs no teacher component. With a 10 ms hop, ``patch_size=8`` gives 12.5 tokens/s,
    ``patch_size=2`` gives 50 tokens/s (one token per Whisper encoder frame).
    Stacking ``patch_size`` frames and applying a linear layer is a conv with kernel = stride, as in VoRA.
    """

    def __init__(
        self,
        output_dim: int,
        preprocessor: dict,
        patch_size: int = 8,
        hidden_dim: int = 1024,
        dropout: float = 0.0,
    ):
        super().__init__()
        if patch_size < 1:
            raise ValueError(f"patch_embedding.patch_size must be >= 1, got {patch_size}")
        preprocessor = {"pad_to": 0, **dict(preprocessor)}
        self.preprocessor = AudioToMelSpectrogramPreprocessor(**preprocessor)
        self.patch_size = patch_size
        self.num_mels = int(preprocessor.get("features", 64))
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

    @property
    def frame_shift_seconds(self) -> float:
        return float(self.preprocessor.featurizer.hop_length) / self.sample_rate

    @property
    def token_rate_hz(self) -> float:
        return 1.0 / (self.frame_shift_seconds * self.patch_size)

    def num_frames(self, audio_lens: Tensor) -> Tensor:
        """Valid log-mel frames per waveform length (what the preprocessor reports), without running it."""
        return self.preprocessor.featurizer.get_seq_len(audio_lens).long()

    def num_patches(self, num_frames: Tensor) -> Tensor:
        return torch.div(num_frames + self.patch_size - 1, self.patch_size, rounding_mode="floor")

    def forward(self, audio: Tensor, audio_lens: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T) waveform, (B,) lengths -> (B, N, output_dim) tokens, (B,) token counts."""
        feats, feat_lens = self.preprocessor(input_signal=audio, length=audio_lens)  # (B, F, T)
        feats = feats.transpose(1, 2)  # (B, T, F)
        num_frames = feats.shape[1]
        pad = (-num_frames) % self.patch_size
        if pad:
            feats = nn.functional.pad(feats, (0, 0, 0, pad))
        batch, frames, mels = feats.shape
        patches = feats.reshape(batch, frames // self.patch_size, self.patch_size * mels)
        return self.proj(patches), self.num_patches(feat_lens)
