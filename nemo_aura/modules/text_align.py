"""Text-aligned reading at layer K: the audio span's layer-K states pulled to the states the same frozen LLM has
at layer K for the transcript's tokens (the textual teacher: adapters off, the transcript in place of the audio).

Why: the frozen layers above K read text. Layer-wise distillation makes layers 1..K hold the speech in the acoustic
teacher's terms, which those layers have never seen; a span whose layer-K states look like the LLM's own states of
the words is readable by them as they are (an untrained oracle that feeds those text states, each repeated at the
patch rate, answers as often as reading the text does). Source-wise + layer-wise distillation: Whisper teaches the
lower layers, the LLM reading the transcript teaches layer K.

Alignment of patches to tokens: ``uniform_char_alignment`` spreads the transcript's characters evenly over the
utterance's patches and gives each patch the token that speaks the character at its centre. Synthesized and read
speech has a near-constant character rate, so this monotonic aligner needs neither a trained CTC head nor the
synthesizer's durations, and inference needs only the audio (nothing of the alignment is kept).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def uniform_char_alignment(token_chars: list[int], num_patches: int) -> Tensor:
    """For each of ``num_patches`` patches the index of the token whose characters cover the patch centre.

    ``token_chars``: the character length of each transcript token (0-length tokens get at least one character,
    so every token owns a share of the time). Monotonic, starts at token 0, ends at the last token.
    """
    if not token_chars:
        raise ValueError("uniform_char_alignment: an empty transcript has no tokens to align to")
    if num_patches < 1:
        raise ValueError(f"uniform_char_alignment: {num_patches} patches")
    ends = torch.tensor([max(1, int(c)) for c in token_chars], dtype=torch.float64).cumsum(0)
    centres = (torch.arange(num_patches, dtype=torch.float64) + 0.5) * (ends[-1] / num_patches)
    return torch.searchsorted(ends, centres, right=True).clamp_max(len(token_chars) - 1)


def text_aligned_loss(student: Tensor, target: Tensor, mask: Tensor, mse_weight: float = 0.1) -> dict[str, Tensor]:
    """``1 - cos`` plus ``mse_weight`` x the MSE relative to the target's energy, over the real patches.

    ``student``, ``target``: (B, N, D) on the patch grid; ``mask``: (B, N) real patches. The relative MSE matches the
    scale too (the residual stream above K adds to these states as they are); cosine alone would leave it free.
    """
    student, target = student.float(), target.float()
    weight = mask.to(torch.float32)
    denom = weight.sum().clamp_min(1.0)
    cos = F.cosine_similarity(student, target, dim=-1, eps=1e-6)
    rel_mse = ((student - target) ** 2).sum(-1) / (target**2).sum(-1).clamp_min(1e-6)
    cos_mean = (cos * weight).sum() / denom
    mse_mean = (rel_mse * weight).sum() / denom
    return {"loss": (1.0 - cos_mean) + mse_weight * mse_mean, "cos": cos_mean.detach(), "rel_mse": mse_mean.detach()}


class TokenCharLengths:
    """Character length of each token id as the tokenizer decodes it alone (memoised: a few thousand ids)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._lengths: dict[int, int] = {}

    def __call__(self, ids: list[int]) -> list[int]:
        out = []
        for i in ids:
            if i not in self._lengths:
                self._lengths[i] = len(self.tokenizer.ids_to_text([i]) if hasattr(self.tokenizer, "ids_to_text")
                                       else self.tokenizer.decode([i]))
            out.append(self._lengths[i])
        return out
