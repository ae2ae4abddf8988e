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

Length (``reading.span``): ``frames`` keeps one position per patch, each pulled to the state of the token it speaks
(generation unchanged); ``collapsed`` pools each token's patches into one position before layer K+1 (the span the
upper layers see is as long as the text), with a ``BoundaryHead`` that finds the token starts at inference. Measured
without training (the text-state oracle): repeated token states make the upper layers stutter, collapsed ones read
exactly as the text does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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


def frames_target(tokens: list[Tensor], index: list[Tensor], num_patches: int) -> Tensor:
    """The ``frames`` target on the (B, N, D) patch grid: item b's patch i gets ``tokens[b][index[b][i]]``."""
    out = tokens[0].new_zeros(len(tokens), num_patches, tokens[0].shape[-1])
    for b, (t, i) in enumerate(zip(tokens, index)):
        out[b, : len(i)] = t[i]
    return out


def text_aligned_loss(student: Tensor, target: Tensor, mask: Tensor, mse_weight: float = 0.1,
                      centered: bool = True) -> dict[str, Tensor]:
    """``1 - cos`` plus ``mse_weight`` x the MSE relative to the target's energy, over the real patches.

    ``student``, ``target``: (B, N, D) on the patch grid; ``mask``: (B, N) real patches. The relative MSE matches the
    scale too (the residual stream above K adds to these states as they are); cosine alone would leave it free.
    ``centered``: the cosine is taken after subtracting the batch's mean target state from both sides. An LLM's
    mid-layer states share one large direction (SmolLM2 layer 6: 73 of a norm of ~100; two different tokens have
    cosine ~0.5), so the plain cosine is mostly that direction; centred, it measures which token a state is.
    """
    student, target = student.float(), target.float()
    weight = mask.to(torch.float32)
    denom = weight.sum().clamp_min(1.0)
    if centered:
        mean = ((target * weight.unsqueeze(-1)).sum((0, 1)) / denom).detach()
        cos = F.cosine_similarity(student - mean, target - mean, dim=-1, eps=1e-6)
    else:
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


# ------------------------------------------------------------------ the collapsed span (one position per token)
def segment_starts(index: Tensor) -> Tensor:
    """True where a patch starts a new token segment of an alignment ``index`` (N,): the first patch, and each change."""
    starts = torch.ones_like(index, dtype=torch.bool)
    starts[1:] = index[1:] != index[:-1]
    return starts


def pool_segments(states: Tensor, starts: Tensor) -> Tensor:
    """Mean of ``states`` (N, D) over each segment that ``starts`` (N,) opens: (number of segments, D)."""
    starts = starts.clone()
    starts[0] = True  # the span always opens a segment
    segment = starts.long().cumsum(0) - 1
    count = int(segment[-1]) + 1
    sums = states.new_zeros(count, states.shape[-1]).index_add_(0, segment, states)
    sizes = torch.bincount(segment, minlength=count).clamp_min(1).to(states.dtype)
    return sums / sizes[:, None]


class BoundaryHead(nn.Module):
    """Where a spoken token starts, read off the layer-K state of each patch (norm + linear -> one logit per patch).

    At inference it is what splits the span into token segments (``pool_segments``), so the collapsed span needs
    nothing but the audio; in training its targets are the starts of the character alignment's segments.
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(hidden_size), nn.Linear(hidden_size, 1))

    def forward(self, states: Tensor) -> Tensor:
        return self.net(states.float()).squeeze(-1)

    def starts(self, states: Tensor, threshold: float = 0.5) -> Tensor:
        return torch.sigmoid(self(states)) > threshold
