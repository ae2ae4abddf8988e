"""The embedded default corpus: distillation speech and HeySQuAD-style spoken QA, made offline and seeded.

Text comes from ``manifests/qa_spec.yaml`` (templates + entity tables, split train/dev/test with no
shared template or entity between train and test), the ``fanoutqa`` wheel (single- and multi-hop
questions) and the QA fixtures (SQuAD, DROP, QuAC) of the ``allennlp==0.9.0`` wheel; speech from piper
and espeak-ng (``nemo_aura.data.tts``). Everything is a pure function of the spec, the wheels and the seed:
texts, voices and the per-utterance TTS noise seed are fixed before any audio is made.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nemo_aura.data.tts import SAMPLE_RATE, VoiceSpec
from nemo_aura.data.tts import synthesize as tts_synthesize
from nemo_aura.parts.files import write_jsonl_atomic

__all__ = ["UtteranceSpec", "VoiceSpec", "CorpusPreset", "PRESETS", "collect_texts", "make_qa_items",
           "assign_voices", "add_voice_copies", "plan_corpus", "synthesize", "to_cut", "write_manifests"]

PIPER_VOICES = [
    VoiceSpec("piper", "joe", length_scale=1.0, noise_scale=0.667, noise_w_scale=0.8),
    VoiceSpec("piper", "joe-slow", length_scale=1.2, noise_scale=0.5, noise_w_scale=0.6),
    VoiceSpec("piper", "joe-fast", length_scale=0.85, noise_scale=0.8, noise_w_scale=1.0),
]
ESPEAK_VOICES = [
    VoiceSpec("espeak", "en-us-m3", voice="en-us+m3", speed=150, pitch=45),
    VoiceSpec("espeak", "en-gb-f3", voice="en-gb+f3", speed=140, pitch=60),
    VoiceSpec("espeak", "en-us-f2-fast", voice="en-us+f2", speed=175, pitch=55),
    VoiceSpec("espeak", "en-rp-m1-slow", voice="en-gb-x-rp+m1", speed=125, pitch=40),
    VoiceSpec("espeak", "en-029-m2", voice="en-029+m2", speed=155, pitch=50),
    VoiceSpec("espeak", "en-scotland-f5", voice="en-gb-scotland+f5", speed=160, pitch=65),
]
MAX_CHARS = 220  # ~15 s of speech at a normal rate
MAX_SECONDS = 20.0  # hard cap: a longer synthesized utterance is left out of the manifests (logged)


@dataclass(frozen=True)
class UtteranceSpec:
    """One utterance to synthesize: what is spoken (``text``), how (``voice``, ``tts_seed``), and for spoken
    QA (``task='qa'``) the question (= ``text``), optional text context and short gold answers."""

    id: str
    text: str
    split: str  # train | dev | test
    task: str  # asr (distillation) | qa
    source: str  # fanoutqa-single | fanoutqa-multi | squad | drop | quac | template | qa-context | qa-closed-book
    voice: VoiceSpec | None = None
    question: str | None = None
    context: str | None = None
    answers: tuple[str, ...] = ()
    closed_book: bool = False
    tts_seed: int = 0
    kind: str | None = None  # multi-fact: the relation asked about
    control: str | None = None  # multi-fact: the id of the item asking about another entity of the same context
    multi_fact: bool = False

    @property
    def subset(self) -> str:
        if self.source == WORD_SEQUENCE:
            return "words"
        if self.multi_fact:
            return "mf"
        return "qa" if self.task == "qa" else "distill"


@dataclass
class CorpusPreset:
    """Sizes of a corpus build; ``engines`` restricts the TTS (the tiny CI preset uses espeak only)."""

    distill_train: int | None  # None: every available text
    distill_dev: int
    qa: dict[str, int] = field(default_factory=lambda: {"train": 600, "dev": 120, "test": 150})
    closed_book_share: float = 0.25
    engines: tuple[str, ...] = ("piper", "espeak")
    use_downloads: bool = True
    templated: int = 500  # templated distillation sentences added to the downloaded texts
    # multi-fact spoken QA (``multi_fact`` in the spec): items per split, an even number (items come in pairs)
    multi_fact: dict[str, int] = field(default_factory=lambda: {"train": 800, "dev": 120, "test": 150, "test_seen": 150})
    train_voices: int = 1  # distillation-train texts spoken by this many distinct voices (data scale)
    # transcribed speech of random word sequences (subset ``words_train``): no sentence to learn by heart, and words
    # the sentences never say; drawn from the training transcripts' words and ``lexicon`` (a word list, one per line)
    word_sequences: int = 0
    lexicon: str | None = None


PRESETS = {
    # word_sequences=2000 with lexicon="/usr/share/dict/american-english" (Debian's wamerican)
    # adds 2.1 h; measured 2026-12-05 in the vocab reading run (1000 steps) it left transcripts worse (dev CTC loss
    # 4.50 against 3.75, 62-79% distinct test transcripts against 97%), so the default corpus has none
    "default": CorpusPreset(distill_train=None, distill_dev=120),
    # Data scale: the text sources are exhausted at the default size, so more data = the
    # same train texts in more voices. Dev/QA are the default's, and so is every default utterance (same id,
    # voice and seed: ``--reuse-audio-from`` links the default's wavs instead of synthesizing them again).
    "tiny": CorpusPreset(distill_train=16, distill_dev=4, qa={"train": 4, "dev": 3, "test": 3},
                         engines=("espeak",), use_downloads=False, templated=40,
                         multi_fact={"train": 6, "dev": 4, "test": 4, "test_seen": 4}, word_sequences=12),
}
PRESETS.update({f"{base}_x{n}": dataclasses.replace(PRESETS[base], train_voices=n)  # tiny_x2: the CI check
                for base, n in (("default", 2), ("default", 4), ("tiny", 2))})


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


def allennlp_fixture_texts(wheel: Path) -> list[tuple[str, str]]:
    """(source, text): SQuAD questions and context sentences, DROP and QuAC questions of the allennlp
    0.9.0 test fixtures."""
    fixtures = "allennlp/tests/fixtures/data/"
    with zipfile.ZipFile(wheel) as z:
        squad = json.loads(z.read(fixtures + "squad.json"))
        drop = json.loads(z.read(fixtures + "drop.json"))
        quac = json.loads(z.read(fixtures + "quac_sample.json"))
    texts = []
    for article in squad["data"]:
        for para in article["paragraphs"]:
            texts += [("squad", s) for s in re.split(r"(?<=[.!?])\s+", para["context"]) if s.strip()]
            texts += [("squad", qa["question"]) for qa in para["qas"]]
    texts += [("drop", qa["question"]) for item in drop.values() for qa in item["qa_pairs"]]
    texts += [("quac", qa["question"]) for a in quac["data"] for p in a["paragraphs"] for qa in p["qas"]]
    return texts


def _clean(text: str) -> str:
    return " ".join(text.replace("\n", " ").split())


def _articles(text: str) -> str:
    """'a' -> 'an' before a vowel once templates are filled ('an accountant', 'an umbrella')."""
    return re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", text)


def _entities(spec: dict, split: str) -> dict[str, list]:
    ents = {k: v[split] for k, v in spec["entities"].items()}
    lo, hi = ents["year"]
    ents["year"] = [str(y) for y in range(lo, hi + 1)]
    return ents


def templated_sentences(spec: dict, rng: random.Random, count: int) -> list[str]:
    """Longer declarative sentences from the train entity tables (they add duration and variety)."""
    ents = _entities(spec, "train")
    countries = spec["countries"]["train"]
    out = []
    for _ in range(count):
        template = rng.choice(spec["distill_sentences"])
        country = rng.choice(sorted(countries))
        values = {k: rng.choice(v) for k, v in ents.items()}
        out.append(_articles(template.format(country=country, **countries[country], **values)))
    return out


def collect_texts(spec: dict, downloads: Path | None, n_templated: int, seed: int) -> list[tuple[str, str]]:
    """(source, text) for distillation: fanoutqa + allennlp fixtures (if ``downloads``) + templated
    sentences; whitespace-normalised, at most ``MAX_CHARS``, deduplicated (case-insensitive), shuffled by ``seed``."""
    rng = random.Random(seed)
    texts: list[tuple[str, str]] = []
    if downloads is not None:
        single, multi = fanoutqa_questions(_wheel(downloads, "fanoutqa"))
        texts += [("fanoutqa-single", t) for t in single] + [("fanoutqa-multi", t) for t in multi]
        texts += allennlp_fixture_texts(_wheel(downloads, "allennlp"))
    texts += [("template", t) for t in templated_sentences(spec, rng, n_templated)]
    seen, unique = set(), []
    for source, text in texts:
        text = _clean(text)
        if text and len(text) <= MAX_CHARS and text.lower() not in seen:
            seen.add(text.lower())
            unique.append((source, text))
    rng.shuffle(unique)
    return unique


# ------------------------------------------------------------------------------------------ spoken QA
def _context_item(spec: dict, ents: dict, tsplit: str, rng: random.Random) -> dict:
    """A 2-3 sentence context about one person + a question about one of its facts."""
    relations = spec["relations"]
    name = rng.choice(ents["name"])
    facts = rng.sample(sorted(relations), k=rng.randint(2, 3))
    values = {rel: rng.choice(ents[rel]) for rel in facts}
    context = _articles(" ".join(rng.choice(relations[r]["context"][tsplit]).format(name=name, **{r: values[r]})
                                 for r in facts))
    asked = rng.choice(facts)
    question = rng.choice(relations[asked]["question"][tsplit]).format(name=name)
    return {"question": question, "context": context, "answers": [values[asked]], "closed_book": False, "kind": asked}


def make_multi_fact_items(spec: dict, split: str, count: int, rng: random.Random) -> list[dict]:
    """Multi-fact items of one split (``multi_fact`` in the spec), in pairs: one context stating one relation for
    3-5 people with distinct values, two questions about two of them. Item ``2k`` and ``2k + 1`` share a context and
    are each other's ``control`` (a question about another entity of the same context)."""
    mf = spec["multi_fact"]
    if count % 2:
        raise ValueError(f"multi_fact items for split {split!r}: {count} is odd (items come in pairs)")
    names = _entities(spec, mf["name_split"][split])["name"]
    values_of = _entities(spec, "train" if split == "train" else "dev" if split == "dev" else "test")  # test_seen: test values
    tsplit = mf["template_split"][split]
    lo, hi = mf["facts"]
    relations = [r for r in mf["relations"] if len(set(values_of[r])) >= lo]
    if not relations or len(names) < lo:
        raise ValueError(f"multi_fact split {split!r}: fewer than {lo} names or values per relation in the spec")
    items = []
    for _ in range(count // 2):
        rel = rng.choice(relations)
        n = rng.randint(lo, min(hi, len(names), len(set(values_of[rel]))))
        people = rng.sample(names, n)
        values = rng.sample(sorted(set(values_of[rel])), n)
        templates = spec["relations"][rel]["context"][tsplit]
        context = _articles(" ".join(rng.choice(templates).format(name=p, **{rel: v}) for p, v in zip(people, values)))
        for who in rng.sample(range(n), 2):
            question = rng.choice(spec["relations"][rel]["question"][tsplit]).format(name=people[who])
            items.append({"question": question, "context": context, "answers": [values[who]], "kind": rel,
                          "entity": people[who], "facts": n})
    return items


def closed_book_pool(spec: dict, split: str) -> list[tuple[str, str, list[str]]]:
    """Every (kind, subject, answers) closed-book item of a split, in spec order."""
    pool = []
    for kind, entry in spec["closed_book"].items():
        if "field" in entry:
            items = {c: [f[entry["field"]]] for c, f in spec["countries"][split].items()}
        else:
            items = entry["items"][split]
        pool += [(kind, subject, [str(a) for a in answers]) for subject, answers in items.items()]
    return pool


def make_qa_items(spec: dict, split: str, count: int, closed_share: float, rng: random.Random) -> list[dict]:
    """HeySQuAD-style items (``question``, ``context``, ``answers``, ``closed_book``) of one split. Entities
    come from the split's own tables; templates: ``train`` for train/dev, ``test`` for test. Closed-book
    items first cover the split's pool once, then repeat it with other templates."""
    tsplit = "test" if split == "test" else "train"
    ents = _entities(spec, split)
    n_closed = round(count * closed_share)
    items = [_context_item(spec, ents, tsplit, rng) for _ in range(count - n_closed)]
    pool = closed_book_pool(spec, split)
    order = [pool[i % len(pool)] for i in range(len(pool))] if pool else []
    rng.shuffle(order)
    for i in range(n_closed):
        kind, subject, answers = order[i] if i < len(order) else rng.choice(pool)
        question = rng.choice(spec["closed_book"][kind]["question"][tsplit]).format(x=subject)
        question = question[0].upper() + question[1:]
        items.append({"question": question, "context": None, "answers": answers, "closed_book": True, "kind": kind})
    rng.shuffle(items)
    return items


# ------------------------------------------------------------------------------------------ planning
def _digest(*parts) -> int:
    return int(hashlib.sha1(":".join(map(str, parts)).encode()).hexdigest(), 16)


def pick_voice(utt_id: str, engines: tuple[str, ...], seed: int, avoid: tuple[str, ...] = ()) -> VoiceSpec:
    """A voice chosen by a hash of (seed, id): stable under reordering and reruns; half piper, half espeak.
    ``avoid``: voice names already used for the same text (another hash is tried until one is free)."""
    pool = [v for v in PIPER_VOICES + ESPEAK_VOICES if v.engine in engines]
    if len(avoid) >= len(pool):
        raise ValueError(f"{utt_id}: {len(avoid) + 1} distinct voices asked for, the engines {engines} have {len(pool)}")
    for attempt in range(1000):
        voice = _pick_from(pool, engines, _digest(seed, utt_id, attempt) if attempt else _digest(seed, utt_id))
        if voice.name not in avoid:
            return voice
    return next(v for v in pool if v.name not in avoid)


def _pick_from(pool: list[VoiceSpec], engines: tuple[str, ...], digest: int) -> VoiceSpec:
    if "piper" in engines and "espeak" in engines:
        group = [v for v in pool if v.engine == ("piper" if digest % 2 == 0 else "espeak")]
        return group[(digest // 2) % len(group)]
    return pool[digest % len(pool)]


def assign_voices(utts: list[UtteranceSpec], engines: tuple[str, ...], seed: int) -> list[UtteranceSpec]:
    """Each utterance gets its voice and TTS noise seed from (seed, id) alone."""
    return [dataclasses.replace(u, voice=pick_voice(u.id, engines, seed), tts_seed=_digest("tts", seed, u.id) % 2**32)
            for u in utts]


def add_voice_copies(utts: list[UtteranceSpec], copies: int, engines: tuple[str, ...], seed: int) -> list[UtteranceSpec]:
    """``copies - 1`` more renditions of each of ``utts`` (already voiced), in voices the text does not have
    yet; a copy's id is ``<id>-v<k>`` (k = 2..copies), so the originals stay exactly as they were."""
    out = []
    for u in utts:
        used = [u.voice.name]
        for k in range(2, copies + 1):
            cid = f"{u.id}-v{k}"
            voice = pick_voice(cid, engines, seed, avoid=tuple(used))
            used.append(voice.name)
            out.append(dataclasses.replace(u, id=cid, voice=voice, tts_seed=_digest("tts", seed, cid) % 2**32))
    return out


def plan_corpus(preset: CorpusPreset, spec: dict, downloads: Path | None, seed: int) -> list[UtteranceSpec]:
    """Every utterance of a preset (texts, QA fields, voices), before any audio."""
    if preset.use_downloads and downloads is None:
        raise ValueError("this corpus preset needs --downloads (the fanoutqa and allennlp wheels)")
    texts = collect_texts(spec, downloads if preset.use_downloads else None, preset.templated, seed)
    dev, train = texts[: preset.distill_dev], texts[preset.distill_dev :]
    if preset.distill_train is not None:
        train = train[: preset.distill_train]
    utts = [UtteranceSpec(f"distill-{split}-{i:05d}", text, split, "asr", source)
            for split, rows in (("train", train), ("dev", dev)) for i, (source, text) in enumerate(rows)]
    for split, count in preset.qa.items():
        items = make_qa_items(spec, split, count, preset.closed_book_share, random.Random(f"{seed}-{split}"))
        utts += [UtteranceSpec(f"qa-{split}-{i:05d}", it["question"], split, "qa",
                               "qa-closed-book" if it["closed_book"] else "qa-context", question=it["question"],
                               context=it["context"], answers=tuple(it["answers"]), closed_book=it["closed_book"])
                 for i, it in enumerate(items)]
    for split, count in (preset.multi_fact or {}).items():
        items = make_multi_fact_items(spec, split, count, random.Random(f"{seed}-mf-{split}"))
        ids = [f"mf-{split}-{i:05d}" for i in range(len(items))]
        utts += [UtteranceSpec(ids[i], it["question"], split, "qa", "qa-multi-fact", question=it["question"],
                               context=it["context"], answers=tuple(it["answers"]), kind=it["kind"],
                               control=ids[i ^ 1], multi_fact=True)
                 for i, it in enumerate(items)]
    if preset.word_sequences:
        texts = word_sequence_texts(utts, preset.word_sequences, seed, preset.lexicon)
        utts += [UtteranceSpec(f"words-train-{i:05d}", text, "train", "asr", WORD_SEQUENCE)
                 for i, text in enumerate(texts)]
    utts = assign_voices(utts, preset.engines, seed)
    if preset.train_voices > 1:
        train_utts = [u for u in utts if u.subset == "distill" and u.split == "train"]
        utts += add_voice_copies(train_utts, preset.train_voices, preset.engines, seed)
    return utts


WORD_SEQUENCE = "word-sequence"
_WORD = re.compile(r"[A-Za-z]+")


def read_lexicon(path: str | Path) -> list[str]:
    """Plain alphabetic words of a word list (one per line; possessives and other forms with symbols dropped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus lexicon '{path}' does not exist (for Debian's word list: apt-get install "
                                "wamerican)")
    return [w for w in path.read_text(encoding="utf-8", errors="replace").split() if _WORD.fullmatch(w) and len(w) > 1]


def word_sequence_texts(utts: list[UtteranceSpec], count: int, seed: int, lexicon: str | Path | None = None,
                        words: tuple[int, int] = (4, 10)) -> list[str]:
    """``count`` random sequences of ``words`` words: each word, with even odds, from the training utterances' words
    or from ``lexicon``. A word any dev/test utterance says and no training utterance does is never drawn, so words
    and names first heard at test time stay unheard."""
    train_words = sorted({w for u in utts if u.split == "train" for w in _WORD.findall(u.text)})
    held_out = ({w.lower() for u in utts if u.split != "train" for w in _WORD.findall(u.text)}
                - {w.lower() for w in train_words})
    extra = sorted({w for w in read_lexicon(lexicon) if w.lower() not in held_out}) if lexicon else []
    if not train_words:
        raise ValueError("word sequences need training utterances to draw words from")
    rng = random.Random(f"{seed}-word-sequences")
    return [" ".join(rng.choice(extra if extra and rng.random() < 0.5 else train_words)
                     for _ in range(rng.randint(*words))) for _ in range(count)]


def _wheel(downloads: Path, name: str) -> Path:
    found = sorted(Path(downloads).glob(f"{name}-*.whl"))
    if not found:
        raise FileNotFoundError(f"no {name} wheel in '{downloads}' (pip download --no-deps {name}; stage 1 does it)")
    return found[-1]


# ------------------------------------------------------------------------------------------ audio + manifests
def audio_path(out_dir: Path, utt: UtteranceSpec) -> Path:
    """``audio/<subset>_<split>/<id>-<hash of text, voice, seed>.wav``: a rerun skips a wav only if it was
    made from the same text, voice and seed, so a changed spec or seed never reuses stale audio."""
    key = hashlib.sha1(json.dumps([utt.text, utt.voice.to_dict(), utt.tts_seed]).encode()).hexdigest()[:10]
    return out_dir / "audio" / f"{utt.subset}_{utt.split}" / f"{utt.id}-{key}.wav"


def synthesize(spec: UtteranceSpec, out_wav: str | Path) -> float:
    """Write the utterance's 16 kHz mono 16-bit wav (temp name, then rename, so an interrupted run leaves
    no half file); skip it if present. Returns its duration in seconds."""
    import soundfile as sf

    utt, path = spec, Path(out_wav)
    if path.exists():
        return sf.info(str(path)).duration
    samples = tts_synthesize(utt.text, utt.voice, utt.tts_seed)
    if samples.size == 0:
        raise RuntimeError(f"{utt.id}: TTS produced no audio for {utt.text!r}")
    peak = float(np.abs(samples).max())
    if peak > 0.99:
        samples = samples * (0.99 / peak)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.wav")
    sf.write(str(tmp), samples, SAMPLE_RATE, subtype="PCM_16")
    os.replace(tmp, path)
    return len(samples) / SAMPLE_RATE


def to_cut(utt: UtteranceSpec, path: Path):
    """The Lhotse cut of a synthesized utterance in the model dataset's conventions: supervision text = what
    is spoken; ``custom`` = task (+ question/answers/context/closed_book for QA), voice, source."""
    from lhotse import Recording, SupervisionSegment

    rec = Recording.from_file(str(path), recording_id=utt.id)
    cut = rec.to_cut()
    cut.supervisions = [SupervisionSegment(id=utt.id, recording_id=utt.id, start=0.0, duration=rec.duration,
                                           text=utt.text, language="en", speaker=utt.voice.name)]
    custom = {"task": utt.task, "source": utt.source, "voice": utt.voice.name}
    if utt.task == "qa":
        custom.update(question=utt.question or utt.text, answers=list(utt.answers), closed_book=utt.closed_book)
        if utt.context:
            custom["context"] = utt.context
        if utt.multi_fact:
            custom.update(kind=utt.kind, control=utt.control)
    cut.custom = custom
    return cut


def nemo_entry(cut) -> dict:
    """One NeMo manifest line: audio_filepath, duration, text, plus the cut's custom fields."""
    return {"audio_filepath": cut.recording.sources[0].source, "duration": round(cut.duration, 4),
            "text": cut.supervisions[0].text, **cut.custom}


def _write_reproducible_gz(manifest, final: Path) -> None:
    """Lhotse writes the JSONL; we gzip it with an empty name and zero mtime in the header (``gzip.open``
    stores both), so the same corpus gives byte-identical files; temp names, then an atomic rename."""
    import gzip
    import shutil

    tmp_jsonl = final.with_name(f".{final.name}.tmp.jsonl")
    tmp_gz = final.with_name(f".{final.name}.tmp")
    manifest.to_file(tmp_jsonl)
    with open(tmp_jsonl, "rb") as src, open(tmp_gz, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        shutil.copyfileobj(src, gz)
    tmp_jsonl.unlink()
    os.replace(tmp_gz, final)


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
            _write_reproducible_gz(manifest, final)
            written[f"{name}_{kind}"] = final
        final = out_dir / "nemo" / f"{name}.json"
        write_jsonl_atomic(final, (nemo_entry(c) for c in cutset))
        written[f"{name}_nemo"] = final
    return written
