"""CTC over the LLM's own vocabulary at the last LoRA layer: a text-shaped target, and a reading interface.

The teacher's states tell the audio tokens *what the audio sounds like*; the frozen upper layers only know
how to read text. Scoring each audio state against the LLM's (frozen) input embedding matrix and training
with CTC on the transcript's own token ids pulls those states towards the embeddings of the words spoken,
i.e. towards inputs the frozen layers already understand. The only new weights are the blank's vector and
a temperature; the vocabulary side is tied to the embeddings (no output matrix to learn).

With ``reading.span: vocab`` the head is also how the model reads: its greedy tokens (``greedy_tokens``) replace
the audio span, and the frozen LLM reads them as text; a transcript is those tokens themselves.

``CharacterCTCHead`` (``loss.ctc_vocabulary: characters``) is the same interface over characters: it writes text,
which the LLM's tokenizer turns into the tokens the span is replaced by.
"""
from __future__ import annotations

import math
import unicodedata

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def greedy_path(logits: Tensor) -> tuple[Tensor, float]:
    """(N, C + 1) logits, blank last -> the best path's classes (argmax per frame, repeats merged, blanks dropped:
    standard greedy CTC decoding) and that path's log-probability (as NeMo's greedy CTC)."""
    best_lp, best = logits.log_softmax(-1).max(-1)
    keep = torch.ones_like(best, dtype=torch.bool)
    keep[1:] = best[1:] != best[:-1]
    best = best[keep]
    return best[best != logits.shape[-1] - 1], float(best_lp.sum())


class VocabCTCHead(nn.Module):
    """Cosine similarity of audio states to token vectors (+ a learned blank), scaled, then CTC.

    The token vectors start as the LLM's *centred* input embeddings: the embeddings share a large common direction
    (SmolLM2-135M: mean cosine 0.44 between random tokens), so raw cosines crowd together and a 49k-way softmax
    cannot become confident at any usable scale. A square map (identity at start) takes the states into that space.

    ``set_vocabulary`` restricts the head to the tokens of the training transcripts (a few thousand of 49k) and lets
    their vectors train, as a linear CTC probe's classes do: CTC only ever learns tokens it hears, and the full
    vocabulary made each step ~10x dearer (the (frames x 49k) logits dominate a step) and learning slow (per-token
    loss still ~6 after 300 steps on the default corpus). Without it the head scores the full, frozen vocabulary.
    """

    def __init__(self, hidden_size: int, init_scale: float = 20.0):
        super().__init__()
        self.blank = nn.Parameter(torch.randn(hidden_size) / math.sqrt(hidden_size))
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.proj = nn.Linear(hidden_size, hidden_size)
        nn.init.eye_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.register_buffer("token_ids", torch.zeros(0, dtype=torch.long))  # empty: the whole vocabulary
        self.classes = nn.Parameter(torch.zeros(0, hidden_size))

    @property
    def has_vocabulary(self) -> bool:
        return self.token_ids.numel() > 0

    @torch.no_grad()
    def set_vocabulary(self, token_ids: Tensor, embeddings: Tensor) -> None:
        """Score only ``token_ids`` (sorted, unique), their vectors initialised from the centred embeddings."""
        token_ids = torch.unique(token_ids.to(torch.long).cpu())
        centred = embeddings.float() - embeddings.float().mean(0, keepdim=True)
        self.token_ids = token_ids.to(self.blank.device)
        self.classes = nn.Parameter(F.normalize(centred[self.token_ids.to(centred.device)], dim=-1).to(self.blank.device))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a saved head may hold a vocabulary: take its size before the values are copied
        ids, classes = state_dict.get(prefix + "token_ids"), state_dict.get(prefix + "classes")
        if ids is not None and ids.shape != self.token_ids.shape:
            self.token_ids = torch.zeros_like(ids, device=self.blank.device)
        if classes is not None and classes.shape != self.classes.shape:
            self.classes = nn.Parameter(torch.zeros_like(classes, device=self.blank.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def logits(self, states: Tensor, embeddings: Tensor) -> Tensor:
        """(B, N, D) states, (V, D) embedding matrix -> (B, N, C + 1) logits over the head's classes (the vocabulary,
        or the ``set_vocabulary`` tokens); the blank is the last index."""
        if self.has_vocabulary:
            table = self.classes.float()
        else:
            table = embeddings.float()
            table = table - table.mean(0, keepdim=True)
        table = torch.cat([table, self.blank.unsqueeze(0).float()])
        return self.log_scale.exp() * F.normalize(self.proj(states.float()), dim=-1) @ F.normalize(table, dim=-1).T

    def class_targets(self, targets: Tensor, target_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Token ids -> class indices; tokens outside the head's vocabulary are dropped (they cannot be emitted)."""
        if not self.has_vocabulary:
            return targets, target_lens
        rows = []
        for row, n in zip(targets, target_lens.tolist()):
            row = row[:n]
            at = torch.searchsorted(self.token_ids, row).clamp(max=len(self.token_ids) - 1)
            rows.append(at[self.token_ids[at] == row])
        lens = torch.tensor([len(r) for r in rows], device=targets.device)
        return nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=0), lens

    def forward(self, states: Tensor, state_lens: Tensor, embeddings: Tensor, batch: dict) -> Tensor:
        """Mean CTC loss per target token (the batch's ``transcript_ids``); items whose transcript cannot fit their
        audio tokens count as 0."""
        logits = self.logits(states, embeddings)
        targets, target_lens = self.class_targets(batch["transcript_ids"].to(states.device),
                                                  batch["transcript_lens"].to(states.device))
        log_probs = logits.log_softmax(-1).transpose(0, 1)  # (N, B, C + 1)
        loss = F.ctc_loss(
            log_probs, targets, state_lens, target_lens,
            blank=logits.shape[-1] - 1, reduction="sum", zero_infinity=True,
        )
        return loss / target_lens.sum().clamp(min=1)

    @torch.no_grad()
    def greedy_tokens(self, states: Tensor, embeddings: Tensor) -> tuple[Tensor, float]:
        """(N, D) states of one audio span -> the token ids of its greedy path and that path's log-probability."""
        best, score = greedy_path(self.logits(states.unsqueeze(0), embeddings)[0])
        return (self.token_ids[best] if self.has_vocabulary else best), score

    def read(self, states: Tensor, embeddings: Tensor, tokenizer, context: str | None = None,
             rescorer=None) -> tuple[Tensor, str, float]:
        """(N, D) states of one audio span -> (LLM token ids, text, log-prob) of its greedy path (``context`` and
        ``rescorer`` are unused: only the character head's beam search biases and rescores)."""
        ids, score = self.greedy_tokens(states, embeddings)
        return ids, tokenizer.ids_to_text(ids.tolist()) if len(ids) else "", score


#: The character head's classes: printable ASCII (space to '~'); the blank is the last index. Text is NFKD-folded to
#: it first (accents dropped), so "Zoë" is learnt and written as "Zoe".
ALPHABET = "".join(chr(c) for c in range(32, 127))


def fold_to_alphabet(text: str) -> str:
    """The characters of ``text`` the character head can write: NFKD-folded, non-ASCII dropped, spaces single."""
    folded = unicodedata.normalize("NFKD", " ".join(text.split())).encode("ascii", "ignore").decode("ascii")
    return " ".join("".join(ch for ch in folded if ch in ALPHABET).split())


def text_to_labels(text: str) -> list[int]:
    """The character head's class indices spelling ``text`` (folded to its alphabet first)."""
    return [ALPHABET.index(ch) for ch in fold_to_alphabet(text)]


def labels_to_text(labels: Tensor) -> str:
    """The character head's class indices as text, spaces single and trimmed."""
    return " ".join("".join(ALPHABET[i] for i in labels.tolist()).split())


def rescorable_hypotheses(decoder, log_probs: Tensor, context: str | None, rescorer) -> list[tuple[str, float, float]]:
    """(text, beam score, the ``rescorer``'s log-likelihood) of each of the beam decoder's hypotheses."""
    hyps = decoder.nbest(log_probs, context=context)
    texts = [labels_to_text(labels) for labels, _ in hyps]
    return [(text, score, llm) for text, (_, score), llm in zip(texts, hyps, rescorer(texts))]


def pick_rescored(hypotheses: list[tuple[str, float, float]], weight: float) -> tuple[str, float]:
    """The hypothesis with the highest beam score + ``weight`` x LLM log-likelihood: (its text, that total)."""
    text, score, llm = max(hypotheses, key=lambda h: h[1] + weight * h[2])
    return text, score + weight * llm


class CharacterCTCHead(nn.Module):
    """CTC over characters at layer K, ``upsample`` outputs per audio token; the LLM reads the text tokenized.

    The token head's classes are the LLM's sub-words, each learnt only from the transcripts that say it: a few
    hours of speech hear most of those tokens a handful of times, and a name never heard in training has no
    trained class at all. Characters are few (95) and every utterance teaches all of them, which is how small-data
    CTC is usually trained. Speech carries ~15 characters a second against 12.5 audio tokens, so each layer-K state
    emits ``upsample`` consecutive CTC frames (4: 50 Hz). At inference the greedy characters are tokenized with the
    LLM's own tokenizer and read as text, like the token head's output.
    """

    def __init__(self, hidden_size: int, upsample: int = 4):
        super().__init__()
        if upsample < 1:
            raise ValueError(f"loss.ctc_upsample must be >= 1, got {upsample}")
        self.upsample = upsample
        self.norm = nn.LayerNorm(hidden_size)
        self.hidden = nn.Linear(hidden_size, hidden_size)
        self.out = nn.Linear(hidden_size, upsample * (len(ALPHABET) + 1))
        self.beam_decoder = None  # a ``modules.ctc_beam.CTCBeamDecoder`` (decoding.strategy beam_batch) or greedy

    def logits(self, states: Tensor) -> Tensor:
        """(B, N, D) -> (B, N * upsample, len(ALPHABET) + 1); the blank is the last index."""
        x = self.out(F.gelu(self.hidden(self.norm(states.float()))))
        return x.reshape(x.shape[0], x.shape[1] * self.upsample, len(ALPHABET) + 1)

    @staticmethod
    def class_targets(texts: list[str], device) -> tuple[Tensor, Tensor]:
        rows = [torch.tensor(text_to_labels(t), dtype=torch.long) for t in texts]
        lens = torch.tensor([len(r) for r in rows], device=device)
        return nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=0).to(device), lens

    def forward(self, states: Tensor, state_lens: Tensor, embeddings: Tensor, batch: dict) -> Tensor:
        """Mean CTC loss per target character (the batch's ``transcripts``); items whose text cannot fit their
        frames count as 0. ``embeddings`` is unused: the alphabet is the head's own."""
        logits = self.logits(states)
        targets, target_lens = self.class_targets(batch["transcripts"], states.device)
        loss = F.ctc_loss(
            logits.log_softmax(-1).transpose(0, 1), targets, state_lens * self.upsample, target_lens,
            blank=logits.shape[-1] - 1, reduction="sum", zero_infinity=True,
        )
        return loss / target_lens.sum().clamp(min=1)

    @torch.no_grad()
    def decode_text(self, states: Tensor, context: str | None = None, rescorer=None) -> tuple[str, float]:
        """(N, D) states of one audio span -> its CTC text and score: the beam decoder's best (with its LM, and
        ``context``'s words boosted where it biases) when the model set one, else the greedy path and its
        log-probability. With the decoder's ``llm_rescoring_weight`` > 0 and a ``rescorer`` (texts -> their
        log-likelihoods under the LLM), the beam's N-best are rescored: beam score + weight x LLM score."""
        logits = self.logits(states.unsqueeze(0))[0]
        if self.beam_decoder is None:
            labels, score = greedy_path(logits)
            return labels_to_text(labels), score
        weight = getattr(self.beam_decoder, "llm_rescoring_weight", 0.0)  # any callable decoder (log_probs, context)
        if rescorer is None or not weight:
            labels, score = self.beam_decoder(logits.log_softmax(-1), context=context)
            return labels_to_text(labels), score
        return pick_rescored(rescorable_hypotheses(self.beam_decoder, logits.log_softmax(-1), context, rescorer), weight)

    def read(self, states: Tensor, embeddings: Tensor, tokenizer, context: str | None = None,
             rescorer=None) -> tuple[Tensor, str, float]:
        """(N, D) states of one audio span -> (LLM token ids, text, score): its decoded text, tokenized as the LLM
        tokenizes any text; ``context``: the text the utterance is about (context biasing); ``rescorer``: see
        ``decode_text``."""
        text, score = self.decode_text(states, context, rescorer)
        return torch.tensor(tokenizer.text_to_ids(text) if text else [], dtype=torch.long), text, score
