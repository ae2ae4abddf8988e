"""A character n-gram LM for the character CTC head's beam search, written as ARPA for NeMo's n-gram LM.

NeMo fuses an n-gram LM into batched CTC beam search (``BatchedBeamCTCComputer`` + ``NGramGPULanguageModel``, CPU
or GPU) and reads it from ARPA, where each token id is written as the character ``chr(id + token_offset)`` (what
NeMo's ``train_kenlm.py`` feeds KenLM's ``lmplz``). ``lmplz`` is a C++ binary that no PyPI wheel ships, and the
LMs needed here are small (a few MB of transcripts), so this module estimates one in Python: interpolated
Kneser-Ney with one discount per order (Chen & Goodman's ``D = n1 / (n1 + 2 n2)``), the estimate ``lmplz
--interpolate_unigrams`` and SRILM's ``-interpolate -kndiscount`` write, stored in ARPA's backoff form (seen n-grams
carry their interpolated probability, contexts their backoff weight), so any ARPA reader gives the same numbers.
"""
from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Sequence

from nemo_aura.parts.files import write_text_atomic

BOS, EOS = "<s>", "</s>"
# Markers byte-level BPE (GPT-2, SmolLM, Llama 3) and SentencePiece put on a token that starts a word.
WORD_START_MARKERS = ("\u0120", "\u2581")
# NeMo's ARPA reader maps token ids to characters from this offset (DEFAULT_TOKEN_OFFSET of its ngram_lm module).
TOKEN_OFFSET = 100


def kneser_ney_arpa_lines(sentences: Iterable[Sequence[int]], vocab_size: int, order: int) -> list[str]:
    """ARPA text (lines) of an order-``order`` interpolated Kneser-Ney LM over token ids ``0..vocab_size-1``.

    Every id gets a unigram (interpolated with the uniform distribution), so no token is out of vocabulary; ids
    outside the range are an error naming the sentence."""
    if order < 1:
        raise ValueError(f"n-gram order must be >= 1, got {order}")
    raw: list[Counter] = [Counter() for _ in range(order + 1)]  # raw[n][gram]; symbols: ids, BOS, EOS
    n_sentences = 0
    for s_idx, ids in enumerate(sentences):
        bad = [i for i in ids if not 0 <= int(i) < vocab_size]
        if bad:
            raise ValueError(f"sentence {s_idx}: token ids {bad[:5]} outside 0..{vocab_size - 1}")
        seq = (BOS,) + tuple(int(i) for i in ids) + (EOS,)
        n_sentences += 1
        for end in range(1, len(seq)):
            for n in range(1, min(order, end + 1) + 1):
                raw[n][seq[end + 1 - n:end + 1]] += 1
    if not n_sentences:
        raise ValueError("no sentences to estimate an n-gram LM from")
    # Kneser-Ney: below the top order a gram counts its distinct left extensions, except grams pinned at <s>
    # (they have none) which keep their raw counts.
    counts: list[Counter] = [Counter() for _ in range(order + 1)]
    counts[order] = raw[order]
    for n in range(1, order):
        for gram, c in raw[n].items():
            if gram[0] == BOS:
                counts[n][gram] = c
        for gram in raw[n + 1]:
            if gram[1] != BOS:
                counts[n][gram[1:]] += 1
    discounts = [0.0] * (order + 1)
    for n in range(1, order + 1):
        n1 = sum(1 for c in counts[n].values() if c == 1)
        n2 = sum(1 for c in counts[n].values() if c == 2)
        discounts[n] = n1 / (n1 + 2 * n2) if n1 + 2 * n2 else 0.5
        discounts[n] = min(max(discounts[n], 0.1), 0.9)

    ctx_total: list[dict] = [defaultdict(float) for _ in range(order + 1)]
    ctx_types: list[dict] = [defaultdict(int) for _ in range(order + 1)]
    for n in range(1, order + 1):
        for gram, c in counts[n].items():
            ctx_total[n][gram[:-1]] += c
            ctx_types[n][gram[:-1]] += 1

    prob: list[dict] = [dict() for _ in range(order + 1)]
    # Unigrams: discounted continuation counts interpolated with the uniform over the vocabulary + </s>.
    symbols = list(range(vocab_size)) + [EOS]
    total1, types1, d1 = ctx_total[1][()], ctx_types[1][()], discounts[1]
    for sym in symbols:
        c = counts[1].get((sym,), 0)
        prob[1][(sym,)] = max(c - d1, 0.0) / total1 + d1 * types1 / total1 / len(symbols)
    for n in range(2, order + 1):
        d = discounts[n]
        for gram, c in counts[n].items():
            ctx = gram[:-1]
            gamma = d * ctx_types[n][ctx] / ctx_total[n][ctx]
            prob[n][gram] = max(c - d, 0.0) / ctx_total[n][ctx] + gamma * prob[n - 1][gram[1:]]

    def backoff(gram: tuple) -> float | None:
        n = len(gram) + 1
        if n > order or gram not in ctx_total[n]:
            return None
        return discounts[n] * ctx_types[n][gram] / ctx_total[n][gram]

    def sym(s) -> str:
        return s if isinstance(s, str) else chr(int(s) + TOKEN_OFFSET)

    lines = ["\\data\\"]
    sections = []
    for n in range(1, order + 1):
        entries = sorted(prob[n].items(), key=lambda kv: tuple(str(x) for x in kv[0]))
        if n == 1:
            entries = [((BOS,), None)] + entries
        rows = []
        for gram, p in entries:
            lp = -99.0 if p is None else math.log10(p)
            bo = backoff(gram)
            row = f"{lp:.6f}\t{' '.join(sym(s) for s in gram)}"
            rows.append(row + (f"\t{math.log10(bo):.6f}" if bo is not None and n < order else ""))
        sections.append((n, rows))
        lines.append(f"ngram {n}={len(rows)}")
    lines.append("")
    for n, rows in sections:
        lines.append(f"\\{n}-grams:")
        lines.extend(rows)
        lines.append("")
    lines.append("\\end\\")
    return lines


def write_arpa(path: str | Path, lines: list[str]) -> Path:
    """Write ARPA lines to ``path`` through a temporary name (a killed run leaves no half file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def vocabulary_words(tokenizer, limit: int | None = None, min_chars: int = 3) -> list[str]:
    """The words of an LLM's subword vocabulary, most frequent first: tokens that start a word, letters only, at
    least ``min_chars`` long (shorter word-start tokens are mostly fragments, "th", "re"; the short function words
    are in every transcript anyway).

    A BPE vocabulary numbers its tokens in merge order, so a lower id is a commoner string; the first ``limit`` are
    the LLM's commonest words. They teach a character LM how the words its reader knows are spelt, beyond the
    training transcripts (no training question names the country a closed-book test question asks about).
    ``tokenizer`` is a HF tokenizer or NeMo's wrapper of one (``.tokenizer``)."""
    hf = getattr(tokenizer, "tokenizer", tokenizer)
    if not hasattr(hf, "get_vocab"):
        raise TypeError(f"{type(tokenizer).__name__}: expected a HF tokenizer (get_vocab) or NeMo's wrapper of one")
    words = []
    for token, idx in hf.get_vocab().items():
        word = token[1:]
        if token[:1] in WORD_START_MARKERS and len(word) >= min_chars and word.isascii() and word.isalpha():
            words.append((idx, word))
    words.sort()
    return [w for _, w in words[:limit]]


def lexicon_sentences(words: Sequence[str], words_per_line: int = 8, seed: int = 0) -> list[str]:
    """``words`` as pseudo-sentences of ``words_per_line`` words in a fixed random order.

    Sentence-long lines keep a word list from swamping the LM's sentence starts and ends; the random order keeps
    the n-grams across word boundaries uninformative instead of repeating the vocabulary's own order."""
    if words_per_line < 1:
        raise ValueError(f"words_per_line must be >= 1, got {words_per_line}")
    order = list(words)
    random.Random(seed).shuffle(order)
    return [" ".join(order[i:i + words_per_line]) for i in range(0, len(order), words_per_line)]

