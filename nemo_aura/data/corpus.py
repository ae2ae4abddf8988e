"""The embedded default corpus: distillation speech and HeySQuAD-style spoken QA, made offline and seeded.

Text comes from ``manifests/qa_spec.yaml`` (templates + entity tables, split train/dev/test with no
shared template or entity between train and test), the ``fanoutqa`` wheel (single- and multi-hop
questions) and the SQuAD fixture of the ``allennlp==0.9.0`` wheel; speech from piper and espeak-ng
(``nemo_aura.data.tts``). Everything is a pure function of the spec, the wheels and the seed.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nemo_aura.data.tts import SAMPLE_RATE, VoiceSpec, synthesize

PIPER_VOICES = [
    VoiceSpec("piper", "joe", length_scale=1.0, noise_scale=0.667),
    VoiceSpec("piper", "joe-slow", length_scale=1.2, noise_scale=0.5),
    VoiceSpec("piper", "joe-fast", length_scale=0.85, noise_scale=0.8),
]
ESPEAK_VOICES = [
    VoiceSpec("espeak", "en-us-m3", voice="en-us+m3", speed=150, pitch=45),
    VoiceSpec("espeak", "en-gb-f3", voice="en-gb+f3", speed=140, pitch=60),
    VoiceSpec("espeak", "en-us-f2-fast", voice="en-us+f2", speed=175, pitch=55),
    VoiceSpec("espeak", "en-rp-m1-slow", voice="en-gb-x-rp+m1", speed=125, pitch=40),
    VoiceSpec("espeak", "en-029-m2", voice="en-029+m2", speed=155, pitch=50),
]
MAX_CHARS = 220  # ~15 s of speech: keeps every utterance inside a short teacher window


@dataclass(frozen=True)
class UtteranceSpec:
    """One utterance to synthesize: its text, voice, and (for spoken QA) question/context/answers."""

    id: str
    text: str
    subset: str  # distill | qa
    split: str  # train | dev | test
    source: str  # fanoutqa-single | fanoutqa-multi | squad | template | qa-context | qa-closed-book
    voice: VoiceSpec
    context: str | None = None
    answers: tuple[str, ...] = ()
    closed_book: bool = False

    @property
    def task(self) -> str:
        return "qa" if self.subset == "qa" else "asr"


@dataclass
class CorpusPreset:
    """Sizes of a corpus build; ``engines`` restricts the TTS (the tiny CI preset uses espeak only)."""

    distill_train: int | None  # None: every available text
    distill_dev: int
    qa: dict[str, int] = field(default_factory=lambda: {"train": 600, "dev": 100, "test": 150})
    closed_book_share: float = 0.2
    engines: tuple[str, ...] = ("piper", "espeak")
    use_downloads: bool = True


PRESETS = {
    "default": CorpusPreset(distill_train=None, distill_dev=120),
    "tiny": CorpusPreset(distill_train=16, distill_dev=6, qa={"train": 8, "dev": 4, "test": 6},
                         engines=("espeak",), use_downloads=False),
}


# ------------------------------------------------------------------------------------------ text sources
def load_spec(path: str | Path) -> dict:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus spec '{path}' does not exist")
    return yaml.safe_load(path.read_text())


def fanoutqa_questions(wheel: Path) -> tuple[list[str], list[str]]:
    """(single-hop questions from the decompositions, multi-hop questions) of fanout-final-dev.json."""
    with zipfile.ZipFile(wheel) as z:
        data = json.loads(z.read("fanoutqa/data/fanout-final-dev.json"))
    single, multi = [], []

    def walk(node):
        for sub in node.get("decomposition", []):
            single.append(sub["question"])
            walk(sub)

    for item in data:
        multi.append(item["question"])
        walk(item)
    return single, multi


def squad_texts(wheel: Path) -> list[str]:
    """Questions and context sentences of the SQuAD fixture in the allennlp 0.9.0 wheel."""
    with zipfile.ZipFile(wheel) as z:
        data = json.loads(z.read("allennlp/tests/fixtures/data/squad.json"))
    texts = []
    for article in data["data"]:
        for para in article["paragraphs"]:
            texts += [s.strip() for s in re.split(r"(?<=[.!?])\s+", para["context"]) if s.strip()]
            texts += [qa["question"].strip() for qa in para["qas"]]
    return texts


def _clean(text: str) -> str:
    return " ".join(text.replace("\n", " ").split())


def _entities(spec: dict, split: str) -> dict[str, list]:
    ents = {k: v[split] for k, v in spec["entities"].items()}
    lo, hi = ents["year"]
    ents["year"] = [str(y) for y in range(lo, hi + 1)]
    return ents


def templated_sentences(spec: dict, rng: random.Random, count: int) -> list[str]:
    ents = _entities(spec, "train")
    out = []
    for _ in range(count):
        template = rng.choice(spec["distill_sentences"])
        out.append(template.format(**{k: rng.choice(v) for k, v in ents.items()}))
    return out


def qa_items(spec: dict, split: str, count: int, closed_share: float, rng: random.Random) -> list[dict]:
    """HeySQuAD-style items: a 2-3 sentence context about one person + a question about one fact;
    plus closed-book capital questions. Templates: ``train`` for train/dev, ``test`` for test."""
    tsplit = "test" if split == "test" else "train"
    ents = _entities(spec, split)
    relations = spec["relations"]
    n_closed = round(count * closed_share)
    items = []
    for _ in range(count - n_closed):
        name = rng.choice(ents["name"])
        facts = rng.sample(sorted(relations), k=rng.randint(2, 3))
        values = {rel: rng.choice(ents[rel]) for rel in facts}
        context = " ".join(rng.choice(relations[r]["context"][tsplit]).format(name=name, **{r: values[r]}) for r in facts)
        asked = rng.choice(facts)
        question = rng.choice(relations[asked]["question"][tsplit]).format(name=name)
        items.append({"question": question, "context": context, "answers": [values[asked]], "closed_book": False})
    countries = spec["closed_book"]["country"][split]
    for i in range(n_closed):
        country = sorted(countries)[i % len(countries)] if i < len(countries) else rng.choice(sorted(countries))
        question = rng.choice(spec["closed_book"]["question"][tsplit]).format(country=country)
        items.append({"question": question, "context": None, "answers": [countries[country]], "closed_book": True})
    rng.shuffle(items)
    return items


# ------------------------------------------------------------------------------------------ planning
def pick_voice(utt_id: str, engines: tuple[str, ...], seed: int) -> VoiceSpec:
    """A voice chosen by a hash of (seed, id): stable under reordering and reruns."""
    pool = [v for v in PIPER_VOICES + ESPEAK_VOICES if v.engine in engines]
    digest = int(hashlib.sha1(f"{seed}:{utt_id}".encode()).hexdigest(), 16)
    if "piper" in engines and "espeak" in engines:  # half neural, half espeak
        group = [v for v in pool if v.engine == ("piper" if digest % 2 == 0 else "espeak")]
        return group[(digest // 2) % len(group)]
    return pool[digest % len(pool)]


def plan_corpus(preset: CorpusPreset, spec: dict, downloads: Path | None, seed: int) -> list[UtteranceSpec]:
    rng = random.Random(seed)
    texts: list[tuple[str, str]] = []
    if preset.use_downloads:
        if downloads is None:
            raise ValueError("this corpus preset needs --downloads (the fanoutqa and allennlp wheels)")
        single, multi = fanoutqa_questions(_wheel(downloads, "fanoutqa"))
        texts += [("fanoutqa-single", t) for t in single] + [("fanoutqa-multi", t) for t in multi]
        texts += [("squad", t) for t in squad_texts(_wheel(downloads, "allennlp"))]
    n_templates = 400 if preset.use_downloads else preset.distill_train + preset.distill_dev
    texts += [("template", t) for t in templated_sentences(spec, rng, n_templates)]
    seen, unique = set(), []
    for source, text in texts:
        text = _clean(text)
        if text and len(text) <= MAX_CHARS and text.lower() not in seen:
            seen.add(text.lower())
            unique.append((source, text))
    rng.shuffle(unique)
    dev = unique[: preset.distill_dev]
    train = unique[preset.distill_dev :]
    if preset.distill_train is not None:
        train = train[: preset.distill_train]
    utts = []
    for split, rows in (("train", train), ("dev", dev)):
        for i, (source, text) in enumerate(rows):
            uid = f"distill-{split}-{i:05d}"
            utts.append(UtteranceSpec(uid, text, "distill", split, source, pick_voice(uid, preset.engines, seed)))
    for split, count in preset.qa.items():
        for i, item in enumerate(qa_items(spec, split, count, preset.closed_book_share, random.Random(f"{seed}-{split}"))):
            uid = f"qa-{split}-{i:05d}"
            utts.append(UtteranceSpec(
                uid, item["question"], "qa", split, "qa-closed-book" if item["closed_book"] else "qa-context",
                pick_voice(uid, preset.engines, seed), context=item["context"], answers=tuple(item["answers"]),
                closed_book=item["closed_book"],
            ))
    return utts


def _wheel(downloads: Path, name: str) -> Path:
    found = sorted(Path(downloads).glob(f"{name}-*.whl"))
    if not found:
        raise FileNotFoundError(f"no {name} wheel in '{downloads}' (pip download --no-deps {name}; stage 1 does it)")
    return found[-1]


# ------------------------------------------------------------------------------------------ audio + manifests
def audio_path(out_dir: Path, utt: UtteranceSpec) -> Path:
    return out_dir / "audio" / f"{utt.subset}_{utt.split}" / f"{utt.id}.wav"


def synthesize_to(utt: UtteranceSpec, path: Path) -> float:
    """Write the utterance's 16 kHz wav (temp name, then rename); skip it if present. Returns seconds."""
    import soundfile as sf

    if path.exists():
        return sf.info(str(path)).duration
    samples = synthesize(utt.text, utt.voice)
    if samples.size == 0:
        raise RuntimeError(f"{utt.id}: TTS produced no audio for {utt.text!r}")
    peak = float(np.abs(samples).max())
    if peak > 0.99:
        samples = samples * (0.99 / peak)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.wav")
    sf.write(str(tmp), samples, SAMPLE_RATE, subtype="PCM_16")
    os.replace(tmp, path)
    return len(samples) / SAMPLE_RATE


def to_cut(utt: UtteranceSpec, path: Path):
    from lhotse import Recording, SupervisionSegment

    rec = Recording.from_file(str(path), recording_id=utt.id)
    cut = rec.to_cut()
    cut.supervisions = [SupervisionSegment(id=utt.id, recording_id=utt.id, start=0.0, duration=rec.duration,
                                           text=utt.text, language="en", speaker=utt.voice.name)]
    custom = {"task": utt.task, "source": utt.source, "voice": utt.voice.name}
    if utt.subset == "qa":
        custom.update(question=utt.text, answers=list(utt.answers), closed_book=utt.closed_book)
        if utt.context:
            custom["context"] = utt.context
    cut.custom = custom
    return cut


def nemo_entry(cut) -> dict:
    entry = {"audio_filepath": cut.recording.sources[0].source, "duration": round(cut.duration, 4),
             "text": cut.supervisions[0].text, **{k: v for k, v in cut.custom.items()}}
    return entry


def write_manifests(cuts_by_name: dict[str, list], out_dir: Path) -> dict[str, Path]:
    """Per subset/split: Lhotse recordings/supervisions/cuts (jsonl.gz) and a NeMo JSON manifest; atomic."""
    from lhotse import CutSet, RecordingSet, SupervisionSet

    written = {}
    (out_dir / "lhotse").mkdir(parents=True, exist_ok=True)
    (out_dir / "nemo").mkdir(parents=True, exist_ok=True)
    for name, cuts in cuts_by_name.items():
        cutset = CutSet.from_cuts(sorted(cuts, key=lambda c: c.id))
        for kind, manifest in (
            ("recordings", RecordingSet.from_recordings(c.recording for c in cutset)),
            ("supervisions", SupervisionSet.from_segments(s for c in cutset for s in c.supervisions)),
            ("cuts", cutset),
        ):
            final = out_dir / "lhotse" / f"{name}_{kind}.jsonl.gz"
            tmp = final.with_name(f".{name}_{kind}.tmp.jsonl.gz")
            manifest.to_file(tmp)
            os.replace(tmp, final)
            written[f"{name}_{kind}"] = final
        final = out_dir / "nemo" / f"{name}.json"
        tmp = final.with_name(f".{name}.tmp.json")
        tmp.write_text("".join(json.dumps(nemo_entry(c)) + "\n" for c in cutset))
        os.replace(tmp, final)
        written[f"{name}_nemo"] = final
    return written
