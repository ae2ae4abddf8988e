"""The bridge baseline's front end (SALM-like): a frozen ASR encoder kept at inference + a projector.

It emits tokens on the same grid as AuRA's patch embedding (the mel-frame count of the same
preprocessor config divided by ``patch_size``), so both systems feed the LLM the same number of audio
tokens and the bridge can train from the stage-2 teacher cache (its encoder is frozen).
"""
from __future__ import annotations

from torch import Tensor, nn

from nemo.collections.asr.modules import AudioToMelSpectrogramPreprocessor

from nemo_aura.modules.distill import pool_to_length
from nemo_aura.modules.patch_embedding import patch_count
from nemo_aura.modules.teachers import build_teacher


class EncoderProjector(nn.Module):
    """audio -> frozen encoder layer ``layer`` -> average-pooled to the patch grid -> MLP -> LLM width."""

    def __init__(
        self, output_dim: int, encoder: dict, preprocessor: dict, patch_size: int = 8,
        layer: int | None = None, hidden_dim: int = 1024,
    ):
        super().__init__()
        self.encoder = build_teacher(encoder)
        self.layer = int(layer or self.encoder.num_layers)
        if not 1 <= self.layer <= self.encoder.num_layers:
            raise ValueError(f"bridge.layer={layer} is outside the encoder's layers 1..{self.encoder.num_layers}")
        # Only counts frames (to share AuRA's token grid); the encoder has its own front end.
        self.grid = AudioToMelSpectrogramPreprocessor(**{"pad_to": 0, **dict(preprocessor)})
        self.patch_size = patch_size
        width = self.encoder.hidden_size
        self.proj = nn.Sequential(
            nn.LayerNorm(width), nn.Linear(width, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, output_dim)
        )

    @property
    def sample_rate(self) -> int:
        return self.encoder.sample_rate

    def num_frames(self, audio_lens: Tensor) -> Tensor:
        return self.grid.featurizer.get_seq_len(audio_lens).long()

    def num_patches(self, num_frames: Tensor) -> Tensor:
        return patch_count(num_frames, self.patch_size)

    def encode(self, audio: Tensor, audio_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Frozen encoder states pooled to the token grid: (B, N, D_enc), (B,)."""
        lens = self.num_patches(self.num_frames(audio_lens))
        out = self.encoder(audio, audio_lens, [self.layer])
        return pool_to_length(out.hidden_states[self.layer], out.lengths, lens, int(lens.max())), lens

    def project(self, states: Tensor) -> Tensor:
        return self.proj(states.to(self.proj[1].weight.dtype))

    def forward(self, audio: Tensor, audio_lens: Tensor) -> tuple[Tensor, Tensor]:
        states, lens = self.encode(audio, audio_lens)
        return self.project(states), lens
