"""Beam search with a character n-gram LM for the character CTC head (``decoding.strategy: beam_batch``).

NeMo's batched CTC beam search (``BatchedBeamCTCComputer``) with its n-gram LM (``NGramGPULanguageModel``, read from
ARPA) does the search; this module adapts it to one audio span of the character head and makes it cheap on a CPU:

- runs of frames where the blank is near-certain are cut to one frame (``blank_collapse``): they cannot change any
  hypothesis, but each costs a full LM step; one is kept so that a repeated character stays two characters;
- the LM's next-token scores are cached per LM state (``CachedNGramLM``): NeMo's PyTorch fallback walks the backoff
  chain for every hypothesis at every frame, while the states a beam visits repeat across frames and utterances.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import Tensor


class CachedNGramLM:
    """``NGramGPULanguageModel``'s fusion interface (``advance``, ``get_init_states``, ``get_final``, ``to``) with
    ``advance`` rows cached per state, least recently used first out beyond ``max_states`` (a row is the vocabulary's
    scores and next states: ~0.8 kB for 95 characters, so at most ~3 MB)."""

    def __init__(self, lm, max_states: int = 4096):
        self.lm = lm
        self.max_states = max_states
        self._rows: OrderedDict[int, tuple[Tensor, Tensor]] = OrderedDict()

    def to(self, device):
        self.lm.to(device)
        return self

    def get_init_states(self, batch_size: int, bos: bool = True) -> Tensor:
        return self.lm.get_init_states(batch_size=batch_size, bos=bos)

    def get_final(self, states: Tensor) -> Tensor:
        return self.lm.get_final(states)

    @torch.no_grad()
    def advance(self, states: Tensor, eos_id: int | None = None) -> tuple[Tensor, Tensor]:
        if eos_id is not None:
            return self.lm.advance(states, eos_id=eos_id)
        keys = states.tolist()
        missing = sorted({k for k in keys if k not in self._rows})
        if missing:
            scores, next_states = self.lm.advance(torch.tensor(missing, dtype=states.dtype, device=states.device))
            for key, row_scores, row_states in zip(missing, scores, next_states):
                self._rows[key] = (row_scores, row_states)
        rows = [self._rows[k] for k in keys]
        for key in keys:
            self._rows.move_to_end(key)
        while len(self._rows) > self.max_states:
            self._rows.popitem(last=False)
        return torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])


def collapse_blank_runs(log_probs: Tensor, blank_threshold: float) -> Tensor:
    """(T, C + 1) log-probs, blank last -> the frames left when every run of frames whose blank probability exceeds
    ``blank_threshold`` is cut to its first frame."""
    if not 0.0 < blank_threshold < 1.0:
        return log_probs
    blank = log_probs[:, -1] > torch.log(torch.tensor(blank_threshold))
    repeated = torch.zeros_like(blank)
    repeated[1:] = blank[1:] & blank[:-1]
    return log_probs[~repeated]


class CTCBeamDecoder:
    """One audio span's CTC log-probs -> its best label sequence by beam search, optionally fused with an n-gram LM
    over the same labels (``lm_path``: ARPA written by ``nemo_aura.parts.char_lm`` or KenLM over ``chr(id + 100)``)."""

    def __init__(self, num_labels: int, beam_size: int = 8, lm_path: str | Path | None = None,
                 lm_alpha: float = 1.0, beam_beta: float = 0.0, beam_threshold: float = 20.0,
                 blank_collapse: float = 0.99):
        from nemo.collections.asr.parts.submodules.ctc_batched_beam_decoding import BatchedBeamCTCComputer

        if beam_size < 1:
            raise ValueError(f"decoding.beam.beam_size must be >= 1, got {beam_size}")
        self.num_labels = num_labels
        self.blank_collapse = blank_collapse
        self.lm = None
        if lm_path:
            from nemo.collections.asr.parts.submodules.ngram_lm import NGramGPULanguageModel

            if not Path(lm_path).is_file():
                raise FileNotFoundError(f"ctc_decoding.beam.ngram_lm_model: '{lm_path}' does not exist")
            with open(lm_path, encoding="utf-8", errors="replace") as f:
                first = f.readline().strip()
            if first != "\\data\\":
                raise ValueError(f"ctc_decoding.beam.ngram_lm_model: '{lm_path}' is not an ARPA file (its first line is "
                                 f"{first[:40]!r}, expected '\\data\\')")
            self.lm = CachedNGramLM(NGramGPULanguageModel.from_file(lm_path, vocab_size=num_labels,
                                                                   use_triton=False))
        self.computer = BatchedBeamCTCComputer(
            blank_index=num_labels, beam_size=beam_size, fusion_models=[self.lm] if self.lm else None,
            fusion_models_alpha=[lm_alpha] if self.lm else None, beam_beta=beam_beta, beam_threshold=beam_threshold,
            allow_cuda_graphs=False,
        )

    @torch.no_grad()
    def __call__(self, log_probs: Tensor) -> tuple[Tensor, float]:
        """(T, num_labels + 1) log-probs (blank last) -> (labels of the best hypothesis, its score)."""
        frames = collapse_blank_runs(log_probs.float(), self.blank_collapse)[None]
        hyps = self.computer(frames, torch.tensor([frames.shape[1]], device=frames.device))
        best = hyps.to_hyps_list(score_norm=False)[0]
        labels = torch.as_tensor(best.y_sequence, dtype=torch.long).flatten().cpu()
        return labels[(labels >= 0) & (labels < self.num_labels)], float(best.score)
