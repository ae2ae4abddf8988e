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


def paired_bootstrap_ratio(numerator: list[float], denominator: list[float], resamples: int = 2000,
                           seed: int = 0, level: float = 0.95) -> tuple[float, float] | None:
    """Percentile interval of mean(numerator) / mean(denominator) over items resampled together (paired).

    Both lists score the same items in the same order; the interval says how much of a ratio of two systems' F1
    on a small test set is item sampling. None when fewer than two items or every resampled denominator is 0.
    """
    import numpy as np

    if len(numerator) != len(denominator):
        raise ValueError(f"paired_bootstrap_ratio: {len(numerator)} vs {len(denominator)} item scores")
    if len(numerator) < 2:
        return None
    num, den = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    picks = np.random.default_rng(seed).integers(0, len(num), size=(resamples, len(num)))
    num_means, den_means = num[picks].mean(axis=1), den[picks].mean(axis=1)
    ratios = num_means[den_means > 0] / den_means[den_means > 0]
    if ratios.size == 0:
        return None
    tail = 100 * (1 - level) / 2
    return float(np.percentile(ratios, tail)), float(np.percentile(ratios, 100 - tail))
