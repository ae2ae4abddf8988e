"""CTC over the LLM's own vocabulary at the last LoRA layer (issue 7, lever 2): a text-shaped target.

The teacher's states tell the audio tokens *what the audio sounds like*; the frozen upper layers only know
how to read text. Scoring each audio state against the LLM's (frozen) input embedding matrix and training
with CTC on the transcript's own token ids pulls those states towards the embeddings of the words spoken,
i.e. towards inputs the frozen layers already understand. The only new weights are the blank's vector and
a temperature; the vocabulary side is tied to the embeddings (no output matrix to learn).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class VocabCTCHead(nn.Module):
    """Cosine similarity of audio states to each token embedding (+ a learned blank), scaled, then CTC."""

    def __init__(self, hidden_size: int, init_scale: float = 10.0):
        super().__init__()
        self.blank = nn.Parameter(torch.randn(hidden_size) / math.sqrt(hidden_size))
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))

    def logits(self, states: Tensor, embeddings: Tensor) -> Tensor:
        """(B, N, D) states, (V, D) embedding matrix -> (B, N, V + 1) logits; the blank is index V."""
        table = torch.cat([embeddings, self.blank.unsqueeze(0).to(embeddings.dtype)])
        return self.log_scale.exp() * F.normalize(states.float(), dim=-1) @ F.normalize(table.float(), dim=-1).T

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
