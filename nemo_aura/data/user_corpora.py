"""Users' own corpora from local directories, in the embedded corpus's cut conventions.

- LibriSpeech (Lhotse's recipe, no download): train parts -> ``distill_train``, dev parts -> ``distill_dev``.
- HeySQuAD / spoken SQuAD: a SQuAD-format JSON whose questions name their audio file in a directory, by an
  ``audio_file`` / ``audio_id`` / ``audio`` field (a file name, with or without suffix) or else by the
  question ``id`` (``<id>.wav`` / ``.flac`` / ``.mp3``) -> spoken-QA cuts (``qa_test`` unless told otherwise).
Bad entries (missing or unreadable audio, zero duration, duplicate ids, empty text) are reported one by
one and excluded, or the preparation stops with the full list (``on_bad_entry``).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".opus", ".ogg")


@dataclass
class BadEntry:
    """One rejected entry: where it came from, which item, and why."""

    source: str
    item: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.item}: {self.reason}"


class BadEntriesError(ValueError):
    def __init__(self, bad: list[BadEntry]):
        self.bad = bad
        super().__init__(f"{len(bad)} bad entries:\n" + "\n".join(f"  {b}" for b in bad))


def check_cuts(cuts: list, source: str, policy: str = "exclude", log=print, bad: list[BadEntry] | None = None) -> list:
    """Keep the good cuts; report each bad one (plus ``bad`` found earlier, e.g. while parsing).

    ``policy='stop'`` raises ``BadEntriesError`` with the full list instead of excluding.
    """
    good, bad, seen = [], list(bad or []), set()
    for cut in cuts:
        reason = _problem(cut, seen)
        if reason:
            bad.append(BadEntry(source, cut.id, reason))
        else:
            seen.add(cut.id)
            good.append(cut)
    if bad and policy == "stop":
        raise BadEntriesError(bad)
    for b in bad:
        log(f"[stage1] excluded {b}")
    log(f"[stage1] {source}: {len(good)} entries kept, {len(bad)} excluded")
    return good


def _problem(cut, seen: set) -> str | None:
    if cut.id in seen:
        return "duplicate id"
    if not cut.duration or cut.duration <= 0:
        return f"zero duration ({cut.duration})"
    text = " ".join(s.text or "" for s in cut.supervisions)
    if not re.search(r"\w", text):
        return f"text cannot be tokenised (no word characters): {text!r}"
    for src in cut.recording.sources:
        if src.type == "file" and not Path(src.source).is_file():
            return f"missing audio file {src.source}"
    try:
        cut.load_audio()
    except Exception as e:  # any decoder error: the entry is unusable
        return f"unreadable audio ({type(e).__name__}: {e})"
    return None


def librispeech_cuts(corpus_dir: Path, policy: str = "exclude", log=print) -> dict[str, list]:
    """``distill_train``/``distill_dev`` cuts (task asr) from a local LibriSpeech root."""
    from lhotse import CutSet
    from lhotse.recipes import prepare_librispeech

    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise FileNotFoundError(f"--librispeech: '{corpus_dir}' is not a directory")
    parts = prepare_librispeech(corpus_dir, dataset_parts="auto", num_jobs=1)
    if not parts:
        raise FileNotFoundError(f"--librispeech: no LibriSpeech parts (train-*, dev-*, test-*) under '{corpus_dir}'")
    out: dict[str, list] = {"distill_train": [], "distill_dev": []}
    for part, manifests in sorted(parts.items()):
        split = "distill_dev" if part.startswith("dev") else "distill_train" if part.startswith("train") else None
        if split is None:
            continue
        cuts = CutSet.from_manifests(recordings=manifests["recordings"], supervisions=manifests["supervisions"])
        for cut in cuts:
            cut.custom = {"task": "asr", "source": f"librispeech-{part}"}
        out[split] += check_cuts(list(cuts), f"librispeech/{part}", policy, log)
    return out


def heysquad_cuts(json_path: Path, audio_dir: Path, policy: str = "exclude", log=print) -> list:
    """Spoken-QA cuts from a SQuAD-format JSON whose question ids name files in ``audio_dir``."""
    from lhotse import Recording, SupervisionSegment

    json_path, audio_dir = Path(json_path), Path(audio_dir)
    if not json_path.is_file():
        raise FileNotFoundError(f"--heysquad-json: '{json_path}' does not exist")
    if not audio_dir.is_dir():
        raise FileNotFoundError(f"--heysquad-audio: '{audio_dir}' is not a directory")
    data = json.loads(json_path.read_text())
    if "data" not in data:
        raise ValueError(f"{json_path}: not SQuAD format (no top-level 'data' list)")
    cuts, bad = [], []
    for a, article in enumerate(data["data"]):
        for p, para in enumerate(article.get("paragraphs", [])):
            for qa in para.get("qas", []):
                where = f"data[{a}].paragraphs[{p}] question {qa.get('id', '?')}"
                missing = [k for k in ("id", "question", "answers") if k not in qa]
                if missing:
                    bad.append(BadEntry(str(json_path), where, f"missing field(s) {missing}"))
                    continue
                audio, wanted = _find_audio(audio_dir, qa)
                if audio is None:
                    bad.append(BadEntry(str(json_path), where, f"no audio file {wanted}"))
                    continue
                try:
                    rec = Recording.from_file(str(audio), recording_id=str(qa["id"]))
                except Exception as e:
                    bad.append(BadEntry(str(json_path), where, f"unreadable audio {audio} ({type(e).__name__}: {e})"))
                    continue
                cut = rec.to_cut()
                cut.supervisions = [SupervisionSegment(id=rec.id, recording_id=rec.id, start=0.0, duration=rec.duration,
                                                       text=qa["question"], language="en")]
                answers = [x["text"] for x in qa["answers"] if x.get("text")]
                cut.custom = {"task": "qa", "source": "heysquad", "question": qa["question"], "answers": answers,
                              "context": para.get("context"), "closed_book": False}
                if not answers:
                    bad.append(BadEntry(str(json_path), where, "no gold answer text"))
                    continue
                cuts.append(cut)
    return check_cuts(cuts, str(json_path), policy, log, bad=bad)


AUDIO_FIELDS = ("audio_file", "audio_id", "audio")


def _find_audio(audio_dir: Path, qa: dict) -> tuple[Path | None, str]:
    """(the question's audio file or None, what was looked for, for the error message)."""
    field = next((f for f in AUDIO_FIELDS if qa.get(f)), None)
    stem = str(qa[field]) if field else str(qa["id"])
    if Path(stem).suffix.lower() in AUDIO_SUFFIXES:
        path = audio_dir / stem
        return (path if path.is_file() else None), f"{path} (field '{field}')"
    for suffix in AUDIO_SUFFIXES:
        if (audio_dir / f"{stem}{suffix}").is_file():
            return audio_dir / f"{stem}{suffix}", ""
    how = f"field '{field}'" if field else "question id"
    return None, f"{audio_dir}/{stem}.wav (or .flac/.mp3/.opus/.ogg; from the {how})"


def add_user_corpora(cuts_by_name: dict[str, list], args, log=print) -> None:
    """Stage 1 hook: user corpora replace the matching embedded subsets."""
    if args.librispeech:
        for name, cuts in librispeech_cuts(args.librispeech, args.on_bad_entry, log).items():
            if cuts:
                cuts_by_name[name] = cuts
    if args.heysquad_json:
        if not args.heysquad_audio:
            raise ValueError("--heysquad-json needs --heysquad-audio (the directory of the spoken questions)")
        cuts_by_name["qa_test"] = heysquad_cuts(args.heysquad_json, args.heysquad_audio, args.on_bad_entry, log)
