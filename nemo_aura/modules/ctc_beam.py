"""Beam search with a character n-gram LM for the character CTC head (``decoding.strategy: beam_batch``).

NeMo's batched CTC beam search (``BatchedBeamCTCComputer``) with its n-gram LM (``NGramGPULanguageModel``, read from
ARPA) does the search; this module adapts it to one audio span of the character head and makes it cheap on a CPU:

- runs of frames where the blank is near-certain are cut to one frame (``blank_collapse``): they cannot change any
  hypothesis, but each costs a full LM step; one is kept so that a repeated character stays two characters;
- the LM's next-token scores are cached per LM state (``CachedNGramLM``): NeMo's PyTorch fallback walks the backoff
  chain for every hypothesis at every frame, while the states a beam visits repeat across frames and utterances;
- context biasing: the words of the text a question is asked about (``context``) and any fixed key phrases are
  boosted by NeMo's phrase-boosting tree (``GPUBoostingTreeModel``, fused beside the LM as NeMo's GPU-PB does). A
  speaker asking about a passage says its names, and the names a character LM has never seen are the words the read
  spells worst; one tree per distinct phrase set, built in milliseconds and cached.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path
from typing import Callable

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


def context_phrases(context: str | None, min_chars: int = 3, capitalized_only: bool = False) -> list[str]:
    """The distinct words of ``context`` with at least ``min_chars`` letters or digits, in order of first use,
    stripped of the punctuation around them ("Volkov's" -> "Volkov"): what a question about the context may say.
    ``capitalized_only``: the capitalised ones alone (names, and the words that open a sentence)."""
    if not context:
        return []
    seen: dict[str, None] = {}
    for word in context.split():
        word = re.sub(r"('s|'|\u2019s)$", "", word.strip(".,;:!?\"()[]{}"))
        if sum(ch.isalnum() for ch in word) >= min_chars and (not capitalized_only or word[:1].isupper()):
            seen.setdefault(word, None)
    return list(seen)


class _LabelTokenizer:
    """The part of NeMo's ``TokenizerSpec`` that ``GPUBoostingTreeModel.from_config`` uses, over the head's labels."""

    def __init__(self, text_to_labels: Callable[[str], list[int]], vocab_size: int):
        self.text_to_ids, self.vocab_size = text_to_labels, vocab_size


class CTCBeamDecoder:
    """One audio span's CTC log-probs -> its best label sequence by beam search, optionally fused with an n-gram LM
    over the same labels (``lm_path``: ARPA written by ``nemo_aura.parts.char_lm`` or KenLM over ``chr(id + 100)``)."""

    #: Context-biasing trees kept (the own and the control question of a multi-fact item share a context).
    max_trees = 16

    def __init__(self, num_labels: int, beam_size: int = 8, lm_path: str | Path | None = None,
                 lm_alpha: float = 1.0, beam_beta: float = 0.0, beam_threshold: float = 20.0,
                 blank_collapse: float = 0.99, boosting_tree_alpha: float = 0.0, boosting_tree: dict | None = None,
                 text_to_labels: Callable[[str], list[int]] | None = None, llm_rescoring_weight: float = 0.0):
        """``boosting_tree_alpha`` > 0 boosts phrases (0: off): ``boosting_tree`` holds NeMo's
        ``BoostingTreeModelConfig`` fields (``context_score``, ``depth_scaling``, ``key_phrases_list``: phrases
        boosted in every utterance, ...) and ours: ``from_context`` (default true: the words of the context passed
        with each utterance), ``min_chars`` (3: shorter words are the LM's business) and ``capitalized_only``. ``text_to_labels`` spells a
        phrase in the head's labels. ``llm_rescoring_weight`` > 0: the head rescores the beam's N-best with the
        LLM (``CharacterCTCHead.decode_text``)."""
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
        self.lm_alpha = lm_alpha
        self.llm_rescoring_weight = float(llm_rescoring_weight or 0.0)
        if self.llm_rescoring_weight < 0:
            raise ValueError(f"ctc_decoding.beam.llm_rescoring_weight must be >= 0, got {llm_rescoring_weight}")
        self.boosting_tree_alpha = float(boosting_tree_alpha or 0.0)
        self.boosting_tree = dict(boosting_tree or {})
        unknown = set(self.boosting_tree) - BOOSTING_TREE_KEYS
        if unknown:
            raise ValueError(f"ctc_decoding.beam.boosting_tree: unknown keys {sorted(unknown)}; known: "
                             f"{sorted(BOOSTING_TREE_KEYS)}")
        if self.boosting_tree_alpha < 0:
            raise ValueError(f"ctc_decoding.beam.boosting_tree_alpha must be >= 0, got {boosting_tree_alpha}")
        if self.boosting_tree_alpha and text_to_labels is None:
            raise ValueError("context biasing needs text_to_labels: how a phrase is spelt in the head's labels")
        self.text_to_labels = text_to_labels
        self._trees: OrderedDict[tuple[str, ...], CachedNGramLM] = OrderedDict()
        self.computer = BatchedBeamCTCComputer(
            blank_index=num_labels, beam_size=beam_size, fusion_models=[self.lm] if self.lm else None,
            fusion_models_alpha=[lm_alpha] if self.lm else None, beam_beta=beam_beta, beam_threshold=beam_threshold,
            allow_cuda_graphs=False,
        )

    def phrases_for(self, context: str | None) -> tuple[str, ...]:
        """What is boosted for an utterance asked about ``context``: the fixed key phrases and the context's words
        (none while ``boosting_tree_alpha`` is 0)."""
        if not self.boosting_tree_alpha:
            return ()
        fixed = [str(p) for p in self.boosting_tree.get("key_phrases_list") or []]
        own = context_phrases(context, int(self.boosting_tree.get("min_chars", 3)),
                              bool(self.boosting_tree.get("capitalized_only", False))) \
            if self.boosting_tree.get("from_context", True) else []
        spelt = [p for p in dict.fromkeys(fixed + own) if self.text_to_labels(p)]
        return tuple(spelt)

    def _tree(self, phrases: tuple[str, ...]) -> CachedNGramLM:
        from nemo.collections.asr.parts.context_biasing.boosting_graph_batched import (
            BoostingTreeModelConfig, GPUBoostingTreeModel)

        if phrases not in self._trees:
            nemo_keys = {k: v for k, v in self.boosting_tree.items() if k in NEMO_BOOSTING_TREE_KEYS}
            cfg = BoostingTreeModelConfig(**{**nemo_keys, "key_phrases_list": list(phrases), "use_triton": False})
            tokenizer = _LabelTokenizer(self.text_to_labels, self.num_labels)
            self._trees[phrases] = CachedNGramLM(GPUBoostingTreeModel.from_config(cfg, tokenizer=tokenizer))
        self._trees.move_to_end(phrases)
        while len(self._trees) > self.max_trees:
            self._trees.popitem(last=False)
        return self._trees[phrases]

    @torch.no_grad()
    def _search(self, log_probs: Tensor, context: str | None):
        frames = collapse_blank_runs(log_probs.float(), self.blank_collapse)[None]
        phrases = self.phrases_for(context)
        models, alphas = ([self.lm], [self.lm_alpha]) if self.lm else ([], [])
        if phrases:
            models, alphas = models + [self._tree(phrases)], alphas + [self.boosting_tree_alpha]
        self.computer.fusion_models, self.computer.fusion_models_alpha = (models, alphas) if models else (None, None)
        return self.computer(frames, torch.tensor([frames.shape[1]], device=frames.device))

    def _labels(self, hyp) -> Tensor:
        labels = torch.as_tensor(hyp.y_sequence, dtype=torch.long).flatten().cpu()
        return labels[(labels >= 0) & (labels < self.num_labels)]

    def __call__(self, log_probs: Tensor, context: str | None = None) -> tuple[Tensor, float]:
        """(T, num_labels + 1) log-probs (blank last) -> (labels of the best hypothesis, its score); ``context``:
        the text the utterance is about, whose words are boosted when context biasing is on."""
        best = self._search(log_probs, context).to_hyps_list(score_norm=False)[0]
        return self._labels(best), float(best.score)

    def nbest(self, log_probs: Tensor, context: str | None = None) -> list[tuple[Tensor, float]]:
        """The beam's distinct hypotheses as (labels, score), best first (for rescoring)."""
        found = self._search(log_probs, context).to_nbest_hyps_list(score_norm=False)[0].n_best_hypotheses
        out: dict[tuple[int, ...], tuple[Tensor, float]] = {}
        for hyp in sorted(found, key=lambda h: -float(h.score)):
            labels = self._labels(hyp)
            out.setdefault(tuple(labels.tolist()), (labels, float(hyp.score)))
        return list(out.values())


#: NeMo's ``BoostingTreeModelConfig`` fields a model config may set (the phrases themselves come per utterance).
NEMO_BOOSTING_TREE_KEYS = frozenset({"key_phrases_list", "context_score", "depth_scaling", "unk_score",
                                     "score_per_phrase", "uniform_weights"})
BOOSTING_TREE_KEYS = NEMO_BOOSTING_TREE_KEYS | {"from_context", "min_chars", "capitalized_only"}

#: Which of a context's words are boosted: all of them, or the capitalised ones (``capitalized_only``).
BOOST_WORDS = ("all", "capitalized")


def context_boosting_tree(context_score: float, words: str = "all") -> dict:
    """The ``boosting_tree`` config that boosts each utterance's context words (``words``: one of ``BOOST_WORDS``)."""
    if words not in BOOST_WORDS:
        raise ValueError(f"boosted words {words!r}: expected one of {BOOST_WORDS}")
    return {"context_score": context_score, "capitalized_only": words == "capitalized"}

