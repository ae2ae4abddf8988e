"""Spoken-QA test items from a Lhotse CutSet or a NeMo JSON manifest."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nemo_aura.parts.manifest import entry_error, json_lines, resolve_audio


@dataclass
class QAItem:
    """One spoken question: its audio, the question text (for the topline/WER), optional context, gold answers."""

    id: str
    question: str
    answers: list[str]
    context: str | None = None
    audio_path: str | None = None
    duration: float | None = None
    _cut: object = field(default=None, repr=False)

    def load_audio(self, sample_rate: int) -> np.ndarray:
        """Mono float32 samples at ``sample_rate``."""
        if self._cut is not None:
            cut = self._cut if self._cut.sampling_rate == sample_rate else self._cut.resample(sample_rate)
            return cut.load_audio()[0]
        from nemo_aura.parts.audio import load_audio_item

        return load_audio_item(self.audio_path, sample_rate, f"item {self.id}").numpy()


CLOSED_BOOK_SUFFIX = ":closed_book"


def split_set_spec(spec: str, option: str) -> tuple[str, str, bool]:
    """``NAME=PATH[:closed_book]`` -> (name, path, closed-book items only): how the scorers and the decoding tuner
    name a set; an error naming ``option`` otherwise."""
    if "=" not in spec:
        raise SystemExit(f"{option} {spec!r}: expected NAME=PATH[{CLOSED_BOOK_SUFFIX}]")
    name, path = spec.split("=", 1)
    closed_only = path.endswith(CLOSED_BOOK_SUFFIX)
    return name, path[: -len(CLOSED_BOOK_SUFFIX)] if closed_only else path, closed_only


def is_closed_book(cut) -> bool:
    """A spoken-QA cut whose question is closed-book (stage 1 marks it ``custom.closed_book``)."""
    return bool((cut.custom or {}).get("closed_book"))


def load_items(path: str | Path, limit: int | None = None) -> list[QAItem]:
    """Items from ``*.jsonl.gz``/``*.jsonl`` Lhotse cuts (custom: question, answers, context) or a NeMo JSON manifest.

    Errors naming the line or cut: a line that is not a JSON object, a missing field, a non-string audio_filepath,
    no gold answer (``answers: []`` or blank ones: every prediction would score 0) and an id used twice (the
    systems' answers are paired by id). Audio is read later, per item (``QAItem.load_audio``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"test manifest '{path}' does not exist")
    items = _from_cuts(path) if _is_cutset(path) else _from_nemo_manifest(path)
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if item.id in seen:
            raise ValueError(f"{path}: id {item.id!r} is used by items {seen[item.id] + 1} and {i + 1}; ids must be "
                             "unique (the systems' answers are paired by id)")
        seen[item.id] = i
    return items[:limit] if limit else items


def gold_answers(answers, where: str) -> list[str]:
    """``answers`` as a non-empty list of non-blank strings (one string is one answer); an error naming ``where``."""
    answers = [answers] if isinstance(answers, str) else answers
    if not isinstance(answers, (list, tuple)) or not answers:
        raise ValueError(f"{where}: no gold answers ({answers!r}); a spoken-QA item needs at least one")
    bad = [a for a in answers if not isinstance(a, str) or not a.strip()]
    if bad:
        raise ValueError(f"{where}: gold answers must be non-empty strings, got {bad!r}")
    return list(answers)


def _is_cutset(path: Path) -> bool:
    if path.name.endswith(".gz"):
        return True
    first = path.read_text().lstrip().split("\n", 1)[0]
    return '"type"' in first and ("MonoCut" in first or "recording" in first)


def _from_cuts(path: Path) -> list[QAItem]:
    from lhotse import CutSet

    items = []
    for cut in CutSet.from_file(path):
        custom = cut.custom or {}
        spoken = " ".join(s.text for s in cut.supervisions if s.text)
        if not custom.get("answers"):
            raise ValueError(f"{path}: cut {cut.id} has no custom 'answers' (a spoken-QA item needs gold answers)")
        answers = gold_answers(custom["answers"], f"{path}: cut {cut.id}")
        items.append(QAItem(id=cut.id, question=custom.get("question") or spoken, answers=answers,
                            context=custom.get("context"), duration=cut.duration, _cut=cut))
    return items


def _from_nemo_manifest(path: Path) -> list[QAItem]:
    items = []
    for n, entry in json_lines(path):
        error = entry_error(path, n, entry, ("audio_filepath", "question", "answers"))
        if error:
            hint = "; a spoken-QA line needs audio_filepath, question, answers" if "missing field" in error else ""
            raise ValueError(error + hint)
        answers = gold_answers(entry["answers"], f"{path}:{n}")
        items.append(QAItem(id=str(entry.get("id", f"{path.stem}-{n}")), question=entry["question"], answers=answers,
                            context=entry.get("context"), audio_path=resolve_audio(path, entry["audio_filepath"]),
                            duration=entry.get("duration")))
    return items
