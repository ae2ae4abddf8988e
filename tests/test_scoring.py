"""Scoring functions on known cases, and item loading with clear errors."""
import json

import pytest

from score_benchmark import to_markdown
from nemo_aura.scoring.items import load_items
from nemo_aura.scoring.metrics import exact_match, normalize_answer, paired_bootstrap_interval, token_f1, wer
from nemo_aura.scoring.systems import text_message


def test_squad_normalisation_and_exact_match():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert exact_match("the eiffel tower.", ["Eiffel Tower"]) == 1.0
    assert exact_match("Paris, France", ["Paris"]) == 0.0
    assert exact_match("anything", []) == 0.0


def test_token_f1_known_values():
    assert token_f1("Paris", ["Paris"]) == 1.0
    assert token_f1("Paris France", ["Paris"]) == pytest.approx(2 / 3)  # P=1/2, R=1
    assert token_f1("in the north of Paris", ["Lyon", "north Paris"]) == pytest.approx(2 / 3)  # P=2/4, R=2/2
    assert token_f1("", ["Paris"]) == 0.0
    assert token_f1("blue", ["red"]) == 0.0


def test_wer_normalises_case_and_punctuation():
    assert wer(["Hello, world!"], ["hello world"]) == 0.0
    assert wer(["hello there world"], ["hello world"]) == pytest.approx(0.5)
    assert wer(["a b", "c"], ["a b", "d e"]) == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        wer(["a", "b"], ["a"])


def test_text_prompts_mirror_the_speech_templates():
    assert text_message("What is the capital of France?", None).endswith("\nWhat is the capital of France?")
    assert "spoken" not in text_message("q", None)
    assert text_message("q", "Paris is in France.").startswith("Context: Paris is in France.")


def test_nemo_manifest_items_and_errors(tmp_path):
    good = tmp_path / "qa.json"
    good.write_text(json.dumps({"audio_filepath": "a.wav", "duration": 1.0, "question": "q?", "answers": "x"}) + "\n")
    [item] = load_items(good)
    assert item.answers == ["x"] and item.audio_path == str(tmp_path / "a.wav") and item.context is None
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"audio_filepath": "a.wav", "question": "q?"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.json:1: missing field\(s\) \['answers'\]"):
        load_items(bad)
    broken = tmp_path / "broken.json"
    broken.write_text('{"audio_filepath": "a.wav",\n')
    with pytest.raises(ValueError, match="broken.json:1: not valid JSON"):
        load_items(broken)
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        load_items(tmp_path / "nowhere.json")


def test_results_markdown_reports_targets():
    results = {
        "sets": ["test"], "timed_set": "test", "max_new_tokens": 8,
        "systems": {n: {"scores": {"test": {"exact_match": em, "f1": f1}}, "latency_median_s": lat, "latency_p90_s": lat,
                        "peak_rss_mib": 1000, "model_rss_mib": 100, "answer_tokens_median": 7, "seconds_per_token_median": 0.04,
                        "peak_rss_sweep_mib": 1200 if n == "aura" else None,
                        "sweep": [{"seconds": 1.0, "latency_median_s": lat, "first_token_median_s": lat / 4}]}
                    for n, em, f1, lat in (("topline", 0.5, 0.6, 0.2), ("aura", 0.4, 0.5, 0.3))},
        "targets": {"first_token_aura_vs_topline": {"ratio": 1.5, "bound": 1.15, "op": "<=", "met": False},
                    "first_token_aura_vs_bridge": None},  # the rendering only: the decisions are tested on aggregate()
        "ratios": {"latency_aura_vs_topline": 1.25},
    }
    md = to_markdown(results)
    assert "| first_token_aura_vs_topline | 1.500 | <= 1.15 | NO |" in md
    assert "| first_token_aura_vs_bridge | n/a | | not measured |" in md
    assert "| aura | 0.400 | 0.500 |" in md
    assert "latency_aura_vs_topline 1.250" in md  # whole-answer latency, reported next to the targets
    assert "| 7 | 0.040 | 1000 | 100 |" in md  # answer length and per-token time explain the latency
    assert "| 1 | 0.20 / 0.050 | 0.30 / 0.075 |" in md  # latency vs audio length, whole / first token
    assert "| aura | 1000 |  | 1200 |" in md and "| topline | 1000 |" not in md  # memory phases, where measured
    assert "Question control" not in md and "paired bootstrap" not in md  # neither measured here

    results["systems"]["aura"]["scores"]["test"].update(f1_other_question=0.2, f1_owed_to_question_ci95=[0.12, 0.48])
    results["systems"]["topline"]["scores"]["test"]["f1_other_question"] = 0.6
    results["targets"]["f1_aura_vs_topline"] = {"ratio": 0.833, "bound": 0.9, "op": ">=", "met": False, "ci95": [0.61, 1.05]}
    md = to_markdown(results)
    assert "| f1_aura_vs_topline | 0.833 [0.61, 1.05] | >= 0.9 | NO |" in md and "paired bootstrap" in md
    assert "| aura | 0.500 | 0.200 | +0.300 [0.12, 0.48] |" in md and "| topline | 0.600 | 0.600 | +0.000 |" in md


def test_paired_bootstrap_interval_brackets_the_ratio_and_narrows_with_items():
    same = [0.0, 1.0, 0.5, 0.25]
    assert paired_bootstrap_interval(same, same) == (1.0, 1.0)  # paired: resampled together, always equal
    assert paired_bootstrap_interval(same, same, "difference") == (0.0, 0.0)
    few = paired_bootstrap_interval([1.0, 0.0] * 10, [0.5, 0.5] * 10)
    many = paired_bootstrap_interval([1.0, 0.0] * 200, [0.5, 0.5] * 200)
    assert few[0] < 1.0 < few[1] and many[0] < 1.0 < many[1]
    assert many[1] - many[0] < (few[1] - few[0]) / 2  # 20x the items: a much narrower interval
    assert paired_bootstrap_interval([1.0] * 30 + [0.8] * 30, [0.2] * 60)[0] > 3.0  # clearly better: excludes 1
    lo, hi = paired_bootstrap_interval([1.0, 0.0] * 50, [0.5, 0.5] * 50, "difference")
    assert lo < 0.0 < hi and paired_bootstrap_interval([0.9] * 40, [0.1] * 40, "difference") == pytest.approx((0.8, 0.8))
    assert paired_bootstrap_interval([1.0], [1.0]) is None and paired_bootstrap_interval([1.0, 1.0], [0.0, 0.0]) is None
    with pytest.raises(ValueError, match="3 vs 2 item scores"):
        paired_bootstrap_interval([1.0] * 3, [1.0] * 2)
    with pytest.raises(ValueError, match="expected 'ratio' or 'difference'"):
        paired_bootstrap_interval(same, same, "mean")


class _FakeSystem:
    """Benchmark-system shape: answers from the question it is given (``listens``) or the context's first word."""

    def __init__(self, listens: bool):
        self.listens = listens

    def answer(self, item, audio, max_new_tokens):
        return {"answer": (item.question if self.listens else item.context.split()[0]), "answer_tokens": 1}


def test_question_control_swaps_the_question_and_keeps_context_and_gold():
    from nemo_aura.scoring.items import QAItem
    from benchmark_worker import answer_other_questions

    items = [QAItem(id=f"q{i}", question=f"question {i}", answers=[f"question {i}"], context=f"ctx{i} words")
             for i in range(3)]
    rows = [{} for _ in items]
    answer_other_questions(_FakeSystem(listens=True), items, [None] * 3, rows, 4)
    assert [r["other_question_answer"] for r in rows] == ["question 1", "question 2", "question 0"]  # the next one's
    answer_other_questions(_FakeSystem(listens=False), items, [None] * 3, rows, 4)
    assert [r["other_question_answer"] for r in rows] == ["ctx0", "ctx1", "ctx2"]  # its own context
    lone = [{}]
    answer_other_questions(_FakeSystem(listens=True), items[:1], [None], lone, 4)
    assert lone == [{}]  # one item: nothing to swap with


class _FakeSpeechModel:
    """Answers by the audio it hears (``by_length``: samples -> answer) or, deaf, the context's first word."""

    sample_rate = 16000

    def __init__(self, by_length: dict[int, str] | None):
        self.by_length = by_length

    def generate(self, audio, task, contexts, max_new_tokens):
        assert task == "qa" and len(audio) == 1
        return [self.by_length[len(audio[0])] if self.by_length is not None else contexts[0].split()[0]]


def test_spoken_qa_tells_a_model_that_hears_the_question_from_one_that_does_not(tmp_path):
    from score_reading import spoken_qa
    from nemo_aura.testing import write_tiny_cuts

    cuts = write_tiny_cuts(tmp_path, n=4, task="qa")  # 4 questions of different lengths, distinct gold answers
    items = load_items(cuts)
    hearing = _FakeSpeechModel({len(i.load_audio(16000)): i.answers[0] for i in items})
    heard = spoken_qa(hearing, str(cuts), limit=4)
    assert heard["f1"] == 1.0 and heard["f1_other_question"] == 0.0
    deaf = spoken_qa(_FakeSpeechModel(None), str(cuts), limit=4)
    assert deaf["f1"] == deaf["f1_other_question"]
    assert "f1_other_question" not in spoken_qa(hearing, str(cuts), limit=1)  # one item: nothing to swap


def test_benchmark_reuse_workers_rescores_without_running_a_system(tmp_path):
    """--reuse-workers: a scorer change re-reads what the workers wrote; a worker that would run fails loudly here
    (no models exist), so passing means nothing ran."""
    from score_benchmark import main

    for name, answers in (("topline", ["Paris", "Rome"]), ("aura", ["Paris", "Paris"])):
        out = tmp_path / "bench" / name
        out.mkdir(parents=True)
        rows = [{"id": f"q{i}", "question": q, "answers": [gold], "answer": a, "other_question_answer": "Paris",
                 "answer_tokens": 1} for i, (q, gold, a) in enumerate(zip(["capital of France?", "capital of Italy?"],
                                                                          ["Paris", "Rome"], answers))]
        (out / "test.predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (out / "worker.json").write_text(json.dumps({
            "sets": {"test": {"latency_median_s": 0.5, "latency_p90_s": 0.6}}, "peak_rss_mib": 1000.0,
            "rss_after_imports_mib": 500.0, "load_seconds": 1.0}))
    results = main(["--items", "test=unused.json", "--systems", "topline,aura", "--sweep-seconds", "", "--reuse-workers",
                    "--out", str(tmp_path / "bench")])
    assert results["systems"]["topline"]["scores"]["test"]["f1"] == 1.0
    assert results["systems"]["aura"]["scores"]["test"]["f1_other_question"] == 0.5  # "Paris" is right for q0 only
    assert results["targets"]["f1_aura_vs_topline"]["ratio"] == 0.5 and len(results["targets"]["f1_aura_vs_topline"]["ci95"]) == 2
    assert "owed to the question [95% interval]" in (tmp_path / "bench" / "results.md").read_text()


def test_target_decisions_follow_the_bound_and_direction():
    from score_benchmark import target_result

    assert target_result(1.2, 1.15, "<=")["met"] is False and target_result(1.1, 1.15, "<=")["met"] is True
    assert target_result(0.95, 0.9, ">=")["met"] is True and target_result(0.85, 0.9, ">=")["met"] is False
    assert target_result(None, 0.9, ">=") is None


def _worker_dir(out, name, rows, **timing):
    """A worker's output as the benchmark reads it (``--reuse-workers``)."""
    (out / name).mkdir(parents=True)
    (out / name / "test.predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    worker = {"sets": {"test": {"latency_median_s": timing["latency"], "latency_p90_s": timing["latency"],
                                "first_token_median_s": timing["first"], "seconds_per_token_median": timing["per_token"]}},
              "peak_rss_mib": timing["peak"], "rss_after_imports_mib": timing["imports"], "load_seconds": 1.0}
    (out / name / "worker.json").write_text(json.dumps(worker))


def test_targets_are_decided_on_model_rss_first_token_and_equal_length_answers(tmp_path):
    """AuRA answers shortly (whole-answer latency 0.6x) and its total RSS is close (1.03x), but its model RSS is
    1.05x+ and its first token slower: the decisions follow what the systems do differently."""
    from score_benchmark import main

    out = tmp_path / "bench"
    rows = lambda answers: [{"id": f"q{i}", "question": "q", "answers": ["paris"], "answer": a, "answer_tokens": 1}  # noqa: E731
                            for i, a in enumerate(answers)]
    _worker_dir(out, "topline", rows(["paris", "paris", "rome", "paris"]), latency=0.5, first=0.08, per_token=0.01,
                peak=1950.0, imports=1000.0)
    aura_rows = rows(["paris", "rome", "paris", "x"])
    aura_rows[3] = {"id": "q3", "question": "q", "answers": ["paris"], "error": "answer: ValueError: too long"}
    _worker_dir(out, "aura", aura_rows, latency=0.3, first=0.1, per_token=0.01, peak=2000.0, imports=1000.0)
    results = main(["--items", "test=unused.json", "--systems", "topline,aura", "--sweep-seconds", "", "--reuse-workers",
                    "--max-new-tokens", "24", "--out", str(out)])
    t, r = results["targets"], results["ratios"]
    assert t["model_memory_aura_vs_topline"]["ratio"] == pytest.approx(1000 / 950) and not t["model_memory_aura_vs_topline"]["met"]
    assert r["memory_total_aura_vs_topline"] == pytest.approx(2000 / 1950)  # reported: would have passed 1.05
    assert t["first_token_aura_vs_topline"]["ratio"] == pytest.approx(1.25) and not t["first_token_aura_vs_topline"]["met"]
    equal = (0.1 + 23 * 0.01) / (0.08 + 23 * 0.01)
    assert t["equal_length_aura_vs_topline"]["ratio"] == pytest.approx(equal) and t["equal_length_aura_vs_topline"]["met"]
    assert r["latency_aura_vs_topline"] == pytest.approx(0.6) and "latency_aura_vs_topline" not in t
    # F1 over the items both answered (q0-q2): aura 2/3, topline 2/3; the failed q3 is listed, not scored as 0
    assert t["f1_aura_vs_topline"]["ratio"] == pytest.approx(1.0) and t["f1_aura_vs_topline"]["met"]
    assert results["systems"]["aura"]["scores"]["test"]["failed_ids"] == ["q3"]
    md = (out / "results.md").read_text()
    assert "| model_memory_aura_vs_topline | 1.053 | <= 1.05 | NO |" in md and "aura on test: 1 (q3)" in md
    assert "memory_total_aura_vs_topline 1.026" in md and t["first_token_aura_vs_bridge"] is None
    # a topline with the fine-tuned reader stands in for the raw one when it was run (AuRA answers with its reader)
    _worker_dir(out, "topline_ft", rows(["paris", "rome", "rome", "paris"]), latency=0.4, first=0.05, per_token=0.01,
                peak=1900.0, imports=1000.0)
    results = main(["--items", "test=unused.json", "--systems", "topline,topline_ft,aura", "--sweep-seconds", "",
                    "--reuse-workers", "--max-new-tokens", "24", "--out", str(out)])
    t = results["targets"]
    assert results["baselines"]["topline"] == "topline_ft" and results["baselines"]["cascade"] == "cascade"
    assert t["first_token_aura_vs_topline"]["ratio"] == pytest.approx(2.0)
    assert t["model_memory_aura_vs_topline"]["ratio"] == pytest.approx(1000 / 900)
    assert t["f1_aura_vs_topline"]["ratio"] == pytest.approx(2.0)  # q0-q2: aura 2/3, topline_ft 1/3
    assert "topline_ft for topline" in (out / "results.md").read_text()


def test_duplicate_ids_in_predictions_are_an_error():
    from score_benchmark import f1_interval

    rows = [{"id": "q1", "answer": "a", "answers": ["a"]}] * 2
    with pytest.raises(ValueError, match="item id 'q1' appears twice"):
        f1_interval(rows, rows[:1])


def test_cascade_whisper_encodes_the_shortest_window_that_fits(tmp_path):
    from nemo_aura.scoring.systems import load_asr
    from nemo_aura.testing import build_tiny_whisper_dir, synth_wave

    path = build_tiny_whisper_dir(tmp_path / "whisper")
    short, full = load_asr(str(path), 3, [2, 5]), load_asr(str(path), 3)
    assert short.windows == [32000, 80000, 160000] and full.windows == [160000]  # the tiny Whisper's window is 10 s
    frames = []
    for asr in (short, full):
        asr.model.model.encoder.register_forward_pre_hook(lambda m, args, kw: frames.append(kw.get("input_features", args[0] if args else None).shape[-1]), with_kwargs=True)
    assert isinstance(short(synth_wave(0, 1.5)), str) and isinstance(short(synth_wave(1, 4.0)), str)
    full(synth_wave(0, 1.5))
    assert frames == [200, 500, 1000]  # 2 s, 5 s, then the full 10 s window
    assert short.model.config.max_source_positions == 500 and short.model.model.encoder.embed_positions.num_embeddings == 500


def test_text_qa_reader_learns_the_answer_spans_and_is_an_llm_dir_the_systems_load(tiny_llm_dir, tmp_path):
    """Stage 5's fine-tuned text-QA reader: LoRA on the text QA items (answer tokens only), merged into a plain HF
    directory that ``TextAnswerer.from_dir`` (topline, cascade) loads; the loss falls and the dev answers change to
    the trained spans; a rerun keeps what exists."""
    import json

    import torch
    from finetune_text_qa import ChatExamples, collate, load_examples, main
    from nemo_aura.scoring.items import load_items
    from nemo_aura.scoring.systems import TextAnswerer
    from nemo_aura.testing import write_tiny_cuts

    cuts = write_tiny_cuts(tmp_path / "qa", n=4, task="qa")
    examples = load_examples([str(cuts)])
    reader = TextAnswerer.from_dir(str(tiny_llm_dir))
    row = ChatExamples(examples[:1], reader.formatter)[0]
    answer = reader.formatter.tokenizer.text_to_ids(examples[0]["answer"])
    learnt = row["input_ids"][row["labels"] != -100].tolist()
    assert learnt[: len(answer)] == answer and len(learnt) <= len(answer) + 2  # the answer (+ end of turn) only
    assert row["input_ids"][: len(row["input_ids"]) - len(learnt)].tolist() == reader.formatter.encode_dialog(
        [{"role": "user", "slots": {"message": examples[0]["message"]}}])["input_ids"].tolist()
    out = tmp_path / "reader"
    assert main(["--llm-dir", str(tiny_llm_dir), "--train", str(cuts), "--dev", str(cuts), "--out", str(out),
                 "--steps", "40", "--batch-size", "4", "--lr", "1e-2", "--r", "4", "--threads", "1"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["log"][-1]["loss"] < 0.9 * report["log"][0]["loss"] and "dev_after" in report
    tuned = TextAnswerer.from_dir(str(out))  # the merged reader, as the topline and cascade load it
    batch = collate(reader.pad_id)(ChatExamples(examples, reader.formatter).rows)
    with torch.no_grad():  # the saved weights carry what was learnt (a random tiny LLM with LoRA learns little more)
        assert tuned.llm(**batch).loss.item() < 0.9 * reader.llm(**batch).loss.item()
    # trained on what a speech front end writes for the training audio instead of the question text
    from nemo_aura.scoring.systems import load_asr
    from nemo_aura.testing import build_tiny_ctc_nemo

    asr_path = build_tiny_ctc_nemo(tmp_path / "asr.nemo")
    heard = main(["--llm-dir", str(tiny_llm_dir), "--train", str(cuts), "--out", str(tmp_path / "heard"),
                  "--steps", "2", "--batch-size", "2", "--questions-from-asr", str(asr_path), "--threads", "1"])
    report = json.loads((tmp_path / "heard" / "report.json").read_text())
    asr = load_asr(str(asr_path))
    expected = [[ex["answer"], asr(item.load_audio(16000))] for ex, item in zip(examples, load_items(str(cuts)))]
    assert heard == 0 and report["train_questions"] == expected and report["questions_from_asr"] == str(asr_path)
    (out / "marker").write_text("kept")
    assert main(["--llm-dir", str(tiny_llm_dir), "--train", str(cuts), "--out", str(out)]) == 0
    assert (out / "marker").exists() and not out.with_name("reader.tmp").exists()


def test_transcribe_all_batches_whisper_like_one_at_a_time_and_keeps_the_order(tmp_path):
    """The reader's training questions are transcribed in batches of similar lengths (each at the window its longest
    audio needs): the same text as one at a time, in the items' order; an ASR without a batched path loops."""
    from nemo_aura.scoring.systems import load_asr, transcribe_all
    from nemo_aura.testing import build_tiny_whisper_dir, synth_wave

    asr = load_asr(str(build_tiny_whisper_dir(tmp_path / "whisper")), 3, [2, 5])
    audios = [synth_wave(0, 4.0), synth_wave(1, 1.0), synth_wave(2, 1.5), synth_wave(3, 3.0), synth_wave(4, 0.5)]
    frames = []
    asr.model.model.encoder.register_forward_pre_hook(
        lambda m, args, kw: frames.append(tuple(kw.get("input_features", args[0] if args else None).shape)),
        with_kwargs=True)
    done = []
    assert transcribe_all(asr, audios, 2, lambda n, total: done.append((n, total))) == [asr(a) for a in audios]
    # by length: (0.5 s, 1 s) and (1.5 s, 3 s) at 2 s and 5 s windows, then 4 s alone; then the five one at a time
    assert frames[:3] == [(2, 80, 200), (2, 80, 500), (1, 80, 500)] and done == [(2, 5), (4, 5), (5, 5)]
    seen = []
    assert transcribe_all(lambda a: seen.append(len(a)) or str(len(a)), audios, 4) == [str(len(a)) for a in audios]
    assert seen == sorted(len(a) for a in audios)


def test_fine_tuned_rows_take_their_own_reader_else_the_shared_one(tmp_path, monkeypatch):
    """cascade_ft and aura_ctc_ft may each answer with a reader trained on their front end's transcripts
    (``--cascade-reader-dir`` / ``--aura-reader-dir``); without one they share the text reader, as topline_ft does."""
    import nemo_aura.scoring.systems as systems

    loaded = []
    monkeypatch.setattr(systems.TextAnswerer, "from_dir", classmethod(lambda cls, d, *a: loaded.append(d)))
    monkeypatch.setattr(systems, "load_asr", lambda path, *a: path)
    paths = {"asr": "whisper", "aura": "aura.nemo", "bridge": "bridge.nemo", "reader_dir": "text_reader"}
    for name in systems.FINE_TUNED_READER_SYSTEMS:
        systems.build_system(name, paths)
    paths.update(cascade_reader_dir="whisper_reader", aura_reader_dir="aura_reader", bridge_reader_dir="bridge_reader")
    for name in systems.FINE_TUNED_READER_SYSTEMS:
        systems.build_system(name, paths)
    assert systems.FINE_TUNED_READER_SYSTEMS == ("topline_ft", "cascade_ft", "aura_ctc_ft", "bridge_ctc_ft")
    assert loaded == ["text_reader"] * 4 + ["text_reader", "whisper_reader", "aura_reader", "bridge_reader"]


def test_lm_folds_transcribe_each_training_question_with_an_lm_that_never_saw_it(tmp_path):
    """finetune_text_qa.py --lm-folds: item n of the run is transcribed in fold n % folds, with the model's LM
    re-estimated from the LM's texts less that fold's questions (the model's beam settings kept), so that LM scores
    the fold's questions worse than the other fold's LM does."""
    from pathlib import Path
    from types import SimpleNamespace

    import torch

    from omegaconf import OmegaConf

    from finetune_text_qa import HeldOutLMFolds, load_examples
    from nemo.collections.asr.parts.submodules.ngram_lm import NGramGPULanguageModel
    from nemo_aura.modules.vocab_ctc import ALPHABET
    from nemo_aura.scoring.items import load_items
    from nemo_aura.testing import write_tiny_cuts

    cuts = write_tiny_cuts(tmp_path / "qa", n=6, task="qa")
    extra = write_tiny_cuts(tmp_path / "asr", n=3, seed=7)  # more LM text, not transcribed

    class FakeModel:  # records the decoding each fold sets
        cfg = OmegaConf.create({"ctc_decoding": {"strategy": "beam_batch", "beam": {
            "beam_size": 3, "ngram_lm_model": "nemo:x_char_lm.arpa", "ngram_lm_alpha": 0.5, "beam_beta": 2.0}}})
        decodings = []

        def set_ctc_decoding(self, cfg):
            self.decodings.append(cfg)

    model = FakeModel()
    folds = HeldOutLMFolds(model, [str(cuts), str(extra)], 2, tmp_path / "folds", order=3)
    asr = lambda audio: Path(model.decodings[-1]["beam"]["ngram_lm_model"]).stem  # which LM wrote it
    examples = load_examples([str(cuts)], asr, lm_folds=folds)
    assert [ex["question"] for ex in examples] == [f"heldout_lm_fold{n % 2}" for n in range(6)]
    assert [d["beam"]["beam_size"] for d in model.decodings] == [3, 3]
    assert {d["beam"]["beam_beta"] for d in model.decodings} == {2.0}
    assert folds.excluded == [3, 3]  # every question found in the LM's texts and left out of its fold's LM
    items = load_items(str(cuts))
    lms = [NGramGPULanguageModel.from_file(tmp_path / "folds" / f"heldout_lm_fold{k}.arpa", vocab_size=len(ALPHABET),
                                           use_triton=False) for k in range(2)]

    def logp(lm, text):
        return float(lm.score_sentences(torch.tensor([[ALPHABET.index(c) for c in text]]), bos=True, eos=True).sum())

    for n, item in enumerate(items):
        own, other = lms[n % 2], lms[1 - n % 2]
        assert logp(own, item.question) <= logp(other, item.question), item.question
    with pytest.raises(SystemExit, match="decodes without a character LM"):
        HeldOutLMFolds(SimpleNamespace(cfg=OmegaConf.create({})), [str(cuts)], 2, tmp_path, 3)


def test_a_context_prompted_cascade_gives_whisper_the_items_context(tiny_llm_dir, tmp_path):
    """The cascade's counterpart of AuRA's context biasing: Whisper's previous-text prompt is the item's context
    (its end when too long), memoised per audio and prompt; without the option the context never reaches Whisper."""
    import torch

    from nemo_aura.scoring.items import QAItem
    from nemo_aura.scoring.systems import Cascade
    from nemo_aura.testing import build_tiny_ctc_nemo, build_tiny_whisper_dir, synth_wave

    whisper = build_tiny_whisper_dir(tmp_path / "whisper")
    prompted = Cascade(str(whisper), str(tiny_llm_dir), asr_max_new_tokens=3, context_prompt=True)
    plain = Cascade(str(whisper), str(tiny_llm_dir), asr_max_new_tokens=3)
    seen = []
    for cascade in (prompted, plain):
        generate = cascade.asr.model.generate
        cascade.asr.model.generate = lambda *a, _g=generate, **kw: (seen.append(kw.get("prompt_ids")), _g(*a, **kw))[1]
    audio = synth_wave(0, 1.0)
    item = QAItem(id="q", question="where did she move", answers=["oslo"], context="so")
    prompted.answer(item, audio, 2)
    plain.answer(item, audio, 2)
    assert seen[1] is None and seen[0] is not None
    from transformers import WhisperProcessor

    expected = WhisperProcessor.from_pretrained(whisper).get_prompt_ids("so", return_tensors="pt")
    assert torch.equal(seen[0], expected)
    room = prompted.asr.model.config.max_target_positions // 2 - 1  # a longer context keeps its end
    long = " ".join(f"w{i}" for i in range(4 * room))
    prompted.transcribe(audio, long)
    full = WhisperProcessor.from_pretrained(whisper).get_prompt_ids(long, return_tensors="pt")
    assert len(full) > room and torch.equal(seen[-1], torch.cat([full[:1], full[-(room - 1):]]))
    calls = len(seen)
    prompted.transcribe(audio, "so")
    prompted.transcribe(audio, "so")
    assert len(seen) == calls + 1  # memoised per audio and prompt
    with pytest.raises(ValueError, match="only a Whisper directory takes the context as a prompt"):
        Cascade(str(build_tiny_ctc_nemo(tmp_path / "asr.nemo")), str(tiny_llm_dir), context_prompt=True)


def test_hearing_table_names_each_runs_aura_and_with_all_systems_its_references(tmp_path):
    import json

    from hearing_table import combine

    row = lambda h: {"hearing": h, "f1": h, "items": 2}  # noqa: E731
    for run, (cascade, aura) in {"plain": (0.5, 0.3), "prompted": (0.6, 0.4)}.items():
        (tmp_path / run).mkdir()
        (tmp_path / run / "results.json").write_text(json.dumps(
            {"paths": {"aura": f"{run}.nemo"}, "sets": {"mf": {"cascade_ft": row(cascade), "aura": row(aura)}}}))
    assert combine(tmp_path, ["plain", "prompted"])["sets"]["mf"] == {
        "cascade_ft": row(0.5), "aura_plain": row(0.3), "aura_prompted": row(0.4)}
    both = combine(tmp_path, ["plain", "prompted"], all_systems=True)
    assert both["sets"]["mf"]["cascade_ft_prompted"] == row(0.6) and both["paths"] == {"plain": "plain.nemo",
                                                                                      "prompted": "prompted.nemo"}
    with pytest.raises(SystemExit, match="missing/results.json does not exist"):
        combine(tmp_path, ["missing"])
