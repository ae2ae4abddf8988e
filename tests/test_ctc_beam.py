"""Beam search with a character n-gram LM for the character CTC head (``parts/char_lm.py``, ``modules/ctc_beam.py``)."""
from __future__ import annotations

import math

import pytest
import torch

from nemo_aura.modules.ctc_beam import CTCBeamDecoder, collapse_blank_runs
from nemo_aura.parts.char_lm import kneser_ney_arpa_lines, lexicon_sentences, vocabulary_words, write_arpa

ALPHA = "abct "  # a toy label set: ids 0..4, blank 5


def ids(text: str) -> list[int]:
    return [ALPHA.index(ch) for ch in text]


def toy_lm(tmp_path, texts, order=3):
    return write_arpa(tmp_path / "toy.arpa", kneser_ney_arpa_lines((ids(t) for t in texts), len(ALPHA), order))


def test_kneser_ney_arpa_is_a_normalised_lm_that_prefers_its_training_text(tmp_path):
    """Read back by NeMo's ARPA reader, every state's next-label distribution (labels + end of sentence) sums to 1,
    and a training sentence scores above the same letters shuffled."""
    from nemo.collections.asr.parts.submodules.ngram_lm import NGramGPULanguageModel

    path = toy_lm(tmp_path, ["cat a bat", "a cat", "bat cat", "ta ta"], order=4)
    lm = NGramGPULanguageModel.from_file(path, vocab_size=len(ALPHA), normalize_unk=False, use_triton=False)
    states = torch.arange(lm.num_states)
    scores, _ = lm.advance(states)
    totals = scores.exp().sum(-1) + lm.get_final(states).exp()
    reachable = totals > 0.5  # the start state above <s> only backs off; every real context sums to 1
    assert reachable.sum() > 10
    assert torch.allclose(totals[reachable], torch.ones_like(totals[reachable]), atol=1e-4)
    seen, shuffled = lm.score_sentences(torch.tensor([ids("a cat"), ids("t aac")]), bos=True, eos=True).sum(-1)
    assert seen > shuffled + 2.0
    with pytest.raises(ValueError, match="sentence 1: token ids \\[7\\]"):
        kneser_ney_arpa_lines([[0, 1], [7]], len(ALPHA), 3)
    with pytest.raises(ValueError, match="no sentences"):
        kneser_ney_arpa_lines([], len(ALPHA), 3)


class _Vocab:
    """A stand-in HF tokenizer: only ``get_vocab`` is read."""

    def __init__(self, vocab: dict):
        self.vocab = vocab

    def get_vocab(self) -> dict:
        return dict(self.vocab)


def test_vocabulary_words_are_the_llms_whole_word_tokens_commonest_first():
    vocab = {"\u0120cat": 7, "\u0120tab": 3, "ta": 1, "\u0120at": 2, "\u0120ca1": 4, "\u2581bat": 5, "<s>": 0,
             "\u0120caf\u00e9": 6, "\u0120acta": 9}
    assert vocabulary_words(_Vocab(vocab)) == ["tab", "bat", "cat", "acta"]  # by id; no fragment, digit or non-ASCII
    assert vocabulary_words(_Vocab(vocab), limit=2) == ["tab", "bat"]
    assert vocabulary_words(_Vocab(vocab), min_chars=2) == ["at", "tab", "bat", "cat", "acta"]

    class Wrapped:  # NeMo's AutoTokenizer holds the HF one
        tokenizer = _Vocab(vocab)

    assert vocabulary_words(Wrapped(), limit=1) == ["tab"]
    with pytest.raises(TypeError, match="get_vocab"):
        vocabulary_words(object())


def test_lexicon_lines_hold_every_word_once_in_a_fixed_order_and_teach_the_lm_its_spelling(tmp_path):
    from nemo.collections.asr.parts.submodules.ngram_lm import NGramGPULanguageModel

    words = ["cab", "tact", "abba", "cat", "bat", "tab", "acta"]
    lines = lexicon_sentences(words, words_per_line=3, seed=1)
    assert [len(x.split()) for x in lines] == [3, 3, 1] and sorted(" ".join(lines).split()) == sorted(words)
    assert lexicon_sentences(words, words_per_line=3, seed=1) == lines  # reruns build the same LM
    with pytest.raises(ValueError, match="words_per_line"):
        lexicon_sentences(words, words_per_line=0)
    # transcripts that never spell "tact": with the lexicon the LM prefers it to a sound-alike
    texts = ["a cat", "a bat", "cat a bat"]
    plain = toy_lm(tmp_path, texts, order=4)
    taught = write_arpa(tmp_path / "lexicon.arpa", kneser_ney_arpa_lines(
        (ids(t) for t in texts + lexicon_sentences(words)), len(ALPHA), 4))
    scores = {}
    for name, path in (("plain", plain), ("taught", taught)):
        lm = NGramGPULanguageModel.from_file(path, vocab_size=len(ALPHA), normalize_unk=False, use_triton=False)
        right, wrong = lm.score_sentences(torch.tensor([ids("a tact"), ids("a tacc")]), bos=True, eos=True).sum(-1)
        scores[name] = float((right - wrong).detach())
    assert scores["taught"] > scores["plain"] + 1.0


def frames(spec: list[dict]) -> torch.Tensor:
    """Log-probs (T, 6) from per-frame {label: prob}; the rest of each frame's mass is shared by the others."""
    rows = []
    for probs in spec:
        rest = (1.0 - sum(probs.values())) / (len(ALPHA) + 1 - len(probs))
        row = [probs.get(ALPHA[i] if i < len(ALPHA) else "_", rest) for i in range(len(ALPHA) + 1)]
        rows.append([math.log(max(p, 1e-9)) for p in row])
    return torch.tensor(rows)


def test_collapse_keeps_one_frame_of_each_certain_blank_run_so_repeats_stay_apart():
    lp = frames([{"a": 0.98}, {"_": 0.999}, {"_": 0.999}, {"_": 0.999}, {"a": 0.98}, {"_": 0.5, "a": 0.4}])
    kept = collapse_blank_runs(lp, 0.99)
    assert kept.shape[0] == 4 and torch.equal(kept[1], lp[1]) and torch.equal(kept[2], lp[4])
    assert torch.equal(collapse_blank_runs(lp, 0.0), lp)  # off


def test_beam_search_alone_follows_the_acoustics_and_the_lm_settles_what_they_leave_open(tmp_path):
    """'ca?': the frame after 'a' is 't' 0.45 against 'b' 0.55. Without an LM the beam writes 'cab'; an LM that has
    only seen 'cat' makes it 'cat'; the blank-run collapse changes neither."""
    lp = frames([{"c": 0.97}, {"_": 0.999}, {"a": 0.97}, {"_": 0.999}, {"_": 0.999}, {"b": 0.55, "t": 0.44},
                 {"_": 0.999}])
    plain = CTCBeamDecoder(num_labels=len(ALPHA), beam_size=4, blank_collapse=0.0)
    assert "".join(ALPHA[i] for i in plain(lp)[0].tolist()) == "cab"
    lm = toy_lm(tmp_path, ["cat", "a cat", "cat a"])
    for collapse in (0.0, 0.99):
        fused = CTCBeamDecoder(num_labels=len(ALPHA), beam_size=4, lm_path=lm, lm_alpha=1.0, blank_collapse=collapse)
        labels, score = fused(lp)
        assert "".join(ALPHA[i] for i in labels.tolist()) == "cat" and score < 0
    with pytest.raises(FileNotFoundError, match="ngram_lm_model: '.*missing.arpa' does not exist"):
        CTCBeamDecoder(num_labels=len(ALPHA), lm_path=tmp_path / "missing.arpa")
    (tmp_path / "model.bin").write_bytes(b"\x00\x01binary")
    with pytest.raises(ValueError, match="'.*model.bin' is not an ARPA file"):
        CTCBeamDecoder(num_labels=len(ALPHA), lm_path=tmp_path / "model.bin")


def test_cached_lm_gives_the_lms_own_scores(tmp_path):
    from nemo.collections.asr.parts.submodules.ngram_lm import NGramGPULanguageModel

    from nemo_aura.modules.ctc_beam import CachedNGramLM

    lm = NGramGPULanguageModel.from_file(toy_lm(tmp_path, ["cat a bat", "a cat"]), vocab_size=len(ALPHA),
                                         use_triton=False)
    cached = CachedNGramLM(lm, max_states=3)
    states = torch.tensor([1, 2, 1, 5, 7, 2])
    for _ in range(2):  # cold, then (partly evicted) warm
        got_scores, got_next = cached.advance(states)
        scores, next_states = lm.advance(states)
        assert torch.equal(got_scores, scores) and torch.equal(got_next, next_states)
    assert len(cached._rows) <= 3


def test_context_words_are_boosted_only_for_the_utterance_that_is_asked_about_them(tmp_path):
    """'ca?' with 'b' 0.55 against 't' 0.44 and an LM that has seen 'cab' and never 'cat': the read is 'cab' until
    the utterance comes with a context saying 'cat' (NeMo's boosting tree beside the LM); a context without it, or
    the same decoder with biasing off, changes nothing. The same phrase set is one cached tree."""
    from nemo_aura.modules.ctc_beam import context_phrases

    lp = frames([{"c": 0.97}, {"_": 0.999}, {"a": 0.97}, {"_": 0.999}, {"_": 0.999}, {"b": 0.55, "t": 0.44},
                 {"_": 0.999}])
    lm = toy_lm(tmp_path, ["cab", "a cab", "cab a"])
    text = lambda labels: "".join(ALPHA[i] for i in labels.tolist())  # noqa: E731
    biased = CTCBeamDecoder(num_labels=len(ALPHA), beam_size=4, lm_path=lm, lm_alpha=1.0, boosting_tree_alpha=1.0,
                            boosting_tree={"context_score": 3.0, "min_chars": 3}, text_to_labels=ids)
    assert text(biased(lp)[0]) == "cab" and text(biased(lp, context="a bat")[0]) == "cab"
    assert biased.phrases_for("a cat, a bat.") == ("cat", "bat")
    assert text(biased(lp, context="a cat")[0]) == "cat" and text(biased(lp, context="a cat.")[0]) == "cat"
    assert len(biased._trees) == 2  # ("bat",) and ("cat",)
    off = CTCBeamDecoder(num_labels=len(ALPHA), beam_size=4, lm_path=lm, lm_alpha=1.0, text_to_labels=ids,
                         boosting_tree={"context_score": 3.0})
    assert off.phrases_for("a cat") == () and text(off(lp, context="a cat")[0]) == "cab"
    fixed = CTCBeamDecoder(num_labels=len(ALPHA), beam_size=4, lm_path=lm, lm_alpha=1.0, boosting_tree_alpha=1.0,
                           boosting_tree={"context_score": 3.0, "key_phrases_list": ["cat"], "from_context": False},
                           text_to_labels=ids)
    assert text(fixed(lp)[0]) == "cat"  # a fixed key phrase: every utterance
    assert context_phrases("Dmitri Volkov's cat moved to Oslo.", 4) == ["Dmitri", "Volkov", "moved", "Oslo"]
    assert context_phrases("Dmitri Volkov's cat moved to Oslo.", 3, capitalized_only=True) == ["Dmitri", "Volkov", "Oslo"]
    with pytest.raises(ValueError, match="boosting_tree: unknown keys \\['context_scor'\\]"):
        CTCBeamDecoder(num_labels=len(ALPHA), boosting_tree_alpha=1.0, boosting_tree={"context_scor": 1.0},
                       text_to_labels=ids)
    with pytest.raises(ValueError, match="boosting_tree_alpha must be >= 0"):
        CTCBeamDecoder(num_labels=len(ALPHA), boosting_tree_alpha=-1.0, text_to_labels=ids)


def test_nbest_lists_the_beams_distinct_hypotheses_best_first(tmp_path):
    lp = frames([{"c": 0.97}, {"_": 0.999}, {"a": 0.97}, {"_": 0.999}, {"b": 0.55, "t": 0.44}, {"_": 0.999}])
    decoder = CTCBeamDecoder(num_labels=len(ALPHA), beam_size=4, blank_collapse=0.0)
    found = decoder.nbest(lp)
    texts = ["".join(ALPHA[i] for i in labels.tolist()) for labels, _ in found]
    assert texts[:2] == ["cab", "cat"] and len(set(texts)) == len(texts)
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)
    best, score = decoder(lp)
    assert torch.equal(best, found[0][0]) and score == pytest.approx(found[0][1])
    with pytest.raises(ValueError, match="llm_rescoring_weight must be >= 0"):
        CTCBeamDecoder(num_labels=len(ALPHA), llm_rescoring_weight=-0.1)
