"""SQuAD-style answer metrics and WER."""
from __future__ import annotations

import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, answers: list[str]) -> float:
    return float(any(normalize_answer(prediction) == normalize_answer(a) for a in answers))


def token_f1(prediction: str, answers: list[str]) -> float:
    """Best token-overlap F1 of ``prediction`` against any gold answer."""
    return max((_f1(prediction, a) for a in answers), default=0.0)


def _f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def normalize_transcript(text: str) -> str:
    """Lower case, punctuation removed (apostrophes kept), single spaces: the usual WER normalisation."""
    text = "".join(ch if ch not in _PUNCT or ch == "'" else " " for ch in text.lower())
    return " ".join(text.split())


def wer(hypotheses: list[str], references: list[str]) -> float:
    """Corpus WER (word edits / reference words) after ``normalize_transcript``."""
    from nemo.collections.asr.metrics.wer import word_error_rate

    if len(hypotheses) != len(references):
        raise ValueError(f"wer: {len(hypotheses)} hypotheses but {len(references)} references")
    return word_error_rate([normalize_transcript(h) for h in hypotheses], [normalize_transcript(r) for r in references])


def paired_bootstrap_interval(first: list[float], second: list[float], statistic: str = "ratio", resamples: int = 2000,
                              seed: int = 0, level: float = 0.95) -> tuple[float, float] | None:
    """Percentile interval of mean(first) / mean(second) (``statistic="ratio"``) or mean(first) - mean(second)
    (``"difference"``) over items resampled together (paired).

    Both lists score the same items in the same order; the interval says how much of a comparison of two systems
    (or of one system under two conditions) on a small test set is item sampling. None when fewer than two items,
    or for a ratio whose every resampled denominator is 0.
    """
    import numpy as np

    if len(first) != len(second):
        raise ValueError(f"paired_bootstrap_interval: {len(first)} vs {len(second)} item scores")
    if statistic not in ("ratio", "difference"):
        raise ValueError(f"paired_bootstrap_interval: statistic {statistic!r}, expected 'ratio' or 'difference'")
    if len(first) < 2:
        return None
    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    picks = np.random.default_rng(seed).integers(0, len(a), size=(resamples, len(a)))
    a_means, b_means = a[picks].mean(axis=1), b[picks].mean(axis=1)
    if statistic == "difference":
        values = a_means - b_means
    else:
        values = a_means[b_means > 0] / b_means[b_means > 0]
        if values.size == 0:
            return None
    tail = 100 * (1 - level) / 2
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))
