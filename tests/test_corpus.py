"""Stage 1: the embedded corpus (tiny preset, espeak only) and users' own corpora."""
import gzip
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from nemo_aura.data.corpus import PRESETS, load_spec, pick_voice, qa_items
from nemo_aura.data.tts import espeak_available
from nemo_aura.data.user_corpora import BadEntriesError, check_cuts, heysquad_cuts, librispeech_cuts
from nemo_aura.testing import synth_wave

ROOT = Path(__file__).resolve().parents[1]
SPEC = load_spec(ROOT / "manifests" / "qa_spec.yaml")
needs_espeak = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed (apt-get install espeak-ng)")


def build(out: Path):
    cmd = [sys.executable, str(ROOT / "recipes/aura/local/prepare_data.py"), "--out", str(out), "--preset", "tiny", "--nj", "1"]
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
    assert summary["subsets"]["qa_test"]["utterances"] == tiny.qa["test"]
    assert (tmp_path / "a" / ".complete").exists()
    lhotse_cli = Path(sys.executable).with_name("lhotse")
    for manifest in sorted((tmp_path / "a" / "lhotse").glob("*.jsonl.gz")):
        proc = subprocess.run([str(lhotse_cli), "validate", str(manifest)], capture_output=True, text=True)
        assert proc.returncode == 0, (manifest, proc.stderr[-1000:])
    qa = CutSet.from_file(tmp_path / "a" / "lhotse" / "qa_test_cuts.jsonl.gz")
    assert all(c.custom["task"] == "qa" and c.custom["answers"] and c.custom["question"] == c.supervisions[0].text for c in qa)
    nemo_line = json.loads((tmp_path / "a" / "nemo" / "qa_test.json").read_text().splitlines()[0])
    assert {"audio_filepath", "duration", "text", "question", "answers"} <= set(nemo_line)

    build(tmp_path / "b")  # same seed, another directory: same texts, voices, durations
    def content(root):
        out = {}
        for f in sorted((root / "lhotse").glob("*_cuts.jsonl.gz")):
            out[f.name] = gzip.decompress(f.read_bytes()).decode().replace(str(root), "ROOT")
        return out
    assert content(tmp_path / "a") == content(tmp_path / "b")
    again = build(tmp_path / "a")  # rerun of a finished stage: skipped
    assert "complete: skipping" in again.stdout


def test_test_split_shares_no_template_or_entity_with_train():
    rng = random.Random(0)
    train = qa_items(SPEC, "train", 300, 0.2, rng)
    test = qa_items(SPEC, "test", 100, 0.2, rng)
    train_text = " ".join(i["question"] + " " + (i["context"] or "") for i in train)
    for kind, values in SPEC["entities"].items():
        if kind == "year":
            continue
        for v in values["test"]:
            assert str(v) not in train_text, (kind, v)
    test_templates = {t for rel in SPEC["relations"].values() for t in rel["question"]["test"]}
    train_templates = {t for rel in SPEC["relations"].values() for t in rel["question"]["train"]}
    assert not test_templates & train_templates
    assert all(i["answers"][0] in set(map(str, sum((v["test"] for k, v in SPEC["entities"].items() if k != "year"), [])))
               or i["closed_book"] or i["answers"][0].isdigit() for i in test)
    assert {i["answers"][0] for i in test if i["closed_book"]} <= set(SPEC["closed_book"]["country"]["test"].values())
    years = [int(i["answers"][0]) for i in test if i["answers"][0].isdigit()]
    lo, hi = SPEC["entities"]["year"]["test"]
    assert years and all(lo <= y <= hi for y in years)


def test_voices_are_deterministic_and_mixed():
    ids = [f"distill-train-{i:05d}" for i in range(200)]
    voices = [pick_voice(i, ("piper", "espeak"), 0) for i in ids]
    assert voices == [pick_voice(i, ("piper", "espeak"), 0) for i in ids]
    engines = {v.engine for v in voices}
    assert engines == {"piper", "espeak"} and len({v.name for v in voices}) >= 7
    assert all(pick_voice(i, ("espeak",), 0).engine == "espeak" for i in ids)


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
