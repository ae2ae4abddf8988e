"""CTC over the LLM's own vocabulary at the last LoRA layer: a text-shaped target, and a reading interface.

The teacher's states tell the audio tokens *what the audio sounds like*; the frozen upper layers only know
how to read text. Scoring each audio state against the LLM's (frozen) input embedding matrix and training
with CTC on the transcript's own token ids pulls those states towards the embeddings of the words spoken,
i.e. towards inputs the frozen layers already understand. The only new weights are the blank's vector and
a temperature; the vocabulary side is tied to the embeddings (no output matrix to learn).

With ``reading.span: vocab`` the head is also how the model reads: its greedy tokens (``greedy_tokens``) replace
the audio span, and the frozen LLM reads them as text; a transcript is those tokens themselves.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class VocabCTCHead(nn.Module):
    """Cosine similarity of audio states to each centred token embedding (+ a learned blank), scaled, then CTC.

    Centred: LLM input embeddings share a large common direction (SmolLM2-135M: mean cosine 0.44 between random
    tokens), so raw cosines crowd together and a 49k-way softmax cannot become confident at any usable scale (at
    scale 10 a state *equal* to its token's embedding still gets p ~ 0.005). Without the mean row, unrelated tokens
    sit near cosine 0 and a scale of ~20 separates the spoken token from the rest."""

    def __init__(self, hidden_size: int, init_scale: float = 20.0):
        super().__init__()
        self.blank = nn.Parameter(torch.randn(hidden_size) / math.sqrt(hidden_size))
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))

    def logits(self, states: Tensor, embeddings: Tensor) -> Tensor:
        """(B, N, D) states, (V, D) embedding matrix -> (B, N, V + 1) logits; the blank is index V."""
        table = embeddings.float()
        table = torch.cat([table - table.mean(0, keepdim=True), self.blank.unsqueeze(0).float()])
        return self.log_scale.exp() * F.normalize(states.float(), dim=-1) @ F.normalize(table, dim=-1).T

    def forward(
        self, states: Tensor, state_lens: Tensor, embeddings: Tensor, targets: Tensor, target_lens: Tensor
    ) -> Tensor:
        """Mean CTC loss per target token; items whose transcript cannot fit their audio tokens count as 0."""
        log_probs = self.logits(states, embeddings).log_softmax(-1).transpose(0, 1)  # (N, B, V + 1)
        loss = F.ctc_loss(
            log_probs, targets, state_lens, target_lens,
            blank=embeddings.shape[0], reduction="sum", zero_infinity=True,
        )
        return loss / target_lens.sum().clamp(min=1)

    @torch.no_grad()
    def greedy_tokens(self, states: Tensor, embeddings: Tensor) -> tuple[Tensor, float]:
        """(N, D) states of one audio span -> the token ids of its best path (argmax per position, repeats merged,
        blanks dropped: standard greedy CTC decoding) and that path's log-probability (as NeMo's greedy CTC)."""
        log_probs = self.logits(states.unsqueeze(0), embeddings)[0].log_softmax(-1)
        best_lp, best = log_probs.max(-1)
        keep = torch.ones_like(best, dtype=torch.bool)
        keep[1:] = best[1:] != best[:-1]
        best = best[keep]
        return best[best != embeddings.shape[0]], float(best_lp.sum())
