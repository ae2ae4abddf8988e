"""Spoken-QA test items from a Lhotse CutSet or a NeMo JSON manifest."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nemo_aura.parts.manifest import json_lines, resolve_audio


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


def load_items(path: str | Path, limit: int | None = None) -> list[QAItem]:
    """Items from ``*.jsonl.gz``/``*.jsonl`` Lhotse cuts (custom: question, answers, context) or a NeMo JSON manifest."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"test manifest '{path}' does not exist")
    items = _from_cuts(path) if _is_cutset(path) else _from_nemo_manifest(path)
    return items[:limit] if limit else items


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
        answers = custom.get("answers")
        if not answers:
            raise ValueError(f"{path}: cut {cut.id} has no custom 'answers' (a spoken-QA item needs gold answers)")
        items.append(QAItem(id=cut.id, question=custom.get("question") or spoken, answers=list(answers),
                            context=custom.get("context"), duration=cut.duration, _cut=cut))
    return items


def _from_nemo_manifest(path: Path) -> list[QAItem]:
    items = []
    for n, entry in json_lines(path):
        if isinstance(entry, json.JSONDecodeError):
            raise ValueError(f"{path}:{n}: not valid JSON ({entry})") from entry
        missing = [k for k in ("audio_filepath", "question", "answers") if k not in entry]
        if missing:
            raise ValueError(f"{path}:{n}: missing field(s) {missing}; a spoken-QA line needs audio_filepath, question, answers")
        answers = entry["answers"] if isinstance(entry["answers"], list) else [entry["answers"]]
        items.append(QAItem(id=str(entry.get("id", f"{path.stem}-{n}")), question=entry["question"], answers=answers,
                            context=entry.get("context"), audio_path=resolve_audio(path, entry["audio_filepath"]),
                            duration=entry.get("duration")))
    return items
