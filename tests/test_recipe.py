"""The recipe end to end on the tiny preset (tiny models, ~30 espeak utterances): stages 0-7, then a rerun."""
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import needs
from nemo_aura.data.corpus import PRESETS
from nemo_aura.data.tts import espeak_available

ROOT = Path(__file__).resolve().parents[1]


def run_recipe(exp_root: Path, *args: str) -> str:
    cmd = ["bash", str(ROOT / "recipes/aura/run.sh"), "--preset", "tiny", "--tag", "ci", "--exp-root", str(exp_root), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize("args, message", [
    (["--stage", "abc"], "--stage must be a stage number 0..7, got 'abc'"),
    (["--stop-stage", "x6"], "--stop-stage must be a stage number 0..7, got 'x6'"),
    (["--stage", "9"], "--stage 9: the stages are 0..7"),
    (["--stage", "3", "--stop-stage", "1"], "nothing to run"),
    (["--stage"], "--stage needs a value"),
    (["--stage", ""], "--stage needs a value"),
    (["--preset", "nosuch"], "no preset 'nosuch'"),
])
def test_run_sh_refuses_bad_arguments_before_running_anything(tmp_path, args, message):
    proc = subprocess.run(["bash", str(ROOT / "recipes/aura/run.sh"), "--exp-root", str(tmp_path / "exp"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "unbound variable" not in proc.stderr and not (tmp_path / "exp").exists()


def test_one_training_command_for_the_recipe_and_the_ablation_runner(tmp_path, capsys):
    from train_run import main as train_run_main, training_command

    cmd = training_command("reading_ctc", "t.jsonl.gz", "d.jsonl.gz", "exp/s3", "exp/s3/m.nemo", init="in.nemo",
                           overrides=["model=aura_tiny", "trainer.max_steps=5"])
    assert cmd[1:5] == ["-m", "nemo_aura.train", "--config-name", "reading_ctc"]
    assert cmd[5:] == ["init_from_nemo=in.nemo", "model.train_ds.cuts_path=t.jsonl.gz",
                       "model.validation_ds.cuts_path=d.jsonl.gz", "exp_manager.exp_dir=exp/s3",
                       "report.dir=exp/s3/reading_ctc_report", "report.save_nemo=exp/s3/m.nemo", "model=aura_tiny",
                       "trainer.max_steps=5"]
    named = training_command("distill", "t", "d", "e", "o.nemo", name="v1_distill", report_dir="r")
    assert "name=v1_distill" in named and "report.dir=r" in named and not any("init_from_nemo" in a for a in named)
    done = tmp_path / "done.nemo"
    done.write_bytes(b"x")
    assert train_run_main(["--config", "distill", "--train-cuts", "t", "--dev-cuts", "d", "--exp-dir", str(tmp_path),
                           "--out", str(done), "--", "model=aura_tiny"]) == 0
    assert "done.nemo exists: skipping distill" in capsys.readouterr().out


@needs(os.geteuid() == 0 or espeak_available(), "needs espeak-ng or root to install it")
def test_tiny_recipe_stages_0_to_6_then_rerun_skips(tmp_path):
    # First a run killed (SIGKILL, whole process group) in the middle of distillation ...
    cmd = ["bash", str(ROOT / "recipes/aura/run.sh"), "--preset", "tiny", "--tag", "ci", "--exp-root", str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # drained: no full pipe
    reader.start()
    checkpoints = tmp_path / "ci" / "stage3" / "distill" / "checkpoints"
    deadline = time.time() + 900
    while not list(checkpoints.glob("*.ckpt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "".join(lines)[-3000:]  # killed mid-distillation: an observed checkpoint, no final model
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(checkpoints.glob("*.ckpt")) and not (tmp_path / "ci" / "stage3" / "aura_distilled.nemo").exists()
    # ... then the same command again: it finds what is done, redoes what is not, and finishes.
    out = run_recipe(tmp_path, "--stage", "0", "--stop-stage", "6")
    exp = tmp_path / "ci"
    for n in range(7):
        assert f"stage {n}:" in out and f"stage {n} done in" in out
    times = (exp / "stage_times.tsv").read_text().splitlines()
    assert [line.split("\t")[1] for line in times][-7:] == [str(n) for n in range(7)]

    # stage 1-2: corpus and cache
    tiny = PRESETS["tiny"]
    assert json.loads((exp / "stage1" / "summary.json").read_text())["utterances"] == \
        tiny.distill_train + tiny.distill_dev + sum(tiny.qa.values()) + sum(tiny.multi_fact.values()) \
        + tiny.word_sequences
    assert json.loads((exp / "stage2" / "cache_benchmark.json").read_text())["speedup"] > 0
    # the reading run's multi-fact questions and word sequences come with cached targets too: no teacher online
    from lhotse import CutSet

    reading_mix = CutSet.from_file(exp / "stage3" / "reading_ctc_mix.jsonl.gz")
    mf_ids = {c.id for c in CutSet.from_file(exp / "stage1" / "lhotse" / "mf_train_cuts.jsonl.gz")}
    in_mix = [c for c in reading_mix if c.id in mf_ids]
    assert in_mix and all(c.custom and "teacher_targets" in c.custom for c in in_mix)
    # stage 3: distillation moved the per-layer cosine up
    report = json.loads((exp / "stage3" / "distill_report.json").read_text())
    assert all(report["cosine_after"][k] > report["cosine_before"][k] for k in report["cosine_after"])
    assert (exp / "stage3" / "distill_cosine.png").stat().st_size > 0
    # stage 3, reading run (the preset's reading=vocab): CTC over the LLM's vocabulary at layer K
    reading_before = json.loads((exp / "stage3" / "reading_ctc_report" / "validation_before.json").read_text())
    reading_after = json.loads((exp / "stage3" / "reading_ctc_report" / "validation_after.json").read_text())
    assert reading_after["val_ctc_loss"] < reading_before["val_ctc_loss"]
    assert (exp / "stage3" / "aura_reading_ctc.nemo").exists() and not (exp / "stage3" / "aura_hearing.nemo").exists()
    # ... continued (reading_more=yes) from that run's model: it starts where the first one ended
    more_before = json.loads((exp / "stage3" / "reading_ctc_more_report" / "validation_before.json").read_text())
    assert more_before["val_ctc_loss"] == pytest.approx(reading_after["val_ctc_loss"], rel=1e-4)
    assert (exp / "stage3" / "aura_reading_ctc_more.nemo").exists()
    assert "reading=vocab: AuRA needs no speech-QA fine-tuning" in out and not (exp / "stage5" / "aura_qa.nemo").exists()
    # stage 4: the export is encoder-free and smaller
    export = json.loads((exp / "stage4" / "export_report.json").read_text())
    # computed by value against every teacher tensor (no longer a literal 0), restored with the teacher dir unreadable
    assert export["teacher_or_head_tensors_in_export"] == 0 and not export["fresh_process_answer"]["has_teacher"]
    assert export["teacher_comparison"]["teacher_tensors_compared"] > 0 and export["teacher_comparison"]["export_tensors"] > 0
    assert not export["fresh_process_answer"]["teacher_dir_access_blocked"]
    assert export["parameters"]["encoder_free"]["teacher"] == 0
    assert export["bytes"]["encoder_free_nemo"] < export["bytes"]["full_nemo"]
    # stage 5-6: fine-tuned models scored side by side
    results = json.loads((exp / "stage6" / "results.json").read_text())
    assert set(results["systems"]) == {"topline", "topline_ft", "cascade", "cascade_ft", "bridge", "aura", "aura_text"}
    # AuRA and the bridge answer with the reader trained on their own transcripts, inside their .nemo (one LLM); the
    # targets compare them with the baselines that answer with theirs, and text prompts still see the base LLM
    assert results["baselines"] == {"topline": "topline_ft", "cascade": "cascade_ft", "bridge": "bridge"}
    assert results["text_ability_kept"]["identical_answers"] == 1.0
    for model in ("aura", "bridge"):
        assert (exp / "stage5" / f"{model}_with_reader.nemo").is_file()
    n_test = json.loads((exp / "stage1" / "summary.json").read_text())["subsets"]["qa_test"]["utterances"]
    assert n_test > 0 and all(results["systems"][s]["scores"]["test"]["items"] == n_test for s in results["systems"])
    assert all((exp / "stage6" / p).stat().st_size > 0 for p in results["plots"])
    assert "| target | ratio | bound | met |" in (exp / "stage6" / "results.md").read_text()
    for name, s in results["systems"].items():  # answer lengths are counted; memory phases kept apart
        rows = [json.loads(x) for x in (exp / "stage6" / name / "test.predictions.jsonl").read_text().splitlines()]
        assert all(0 <= r["answer_tokens"] <= results["max_new_tokens"] for r in rows)
        assert all(r["answer"] == "" for r in rows if r["answer_tokens"] == 0)
        assert s["answer_tokens_median"] == statistics.median(r["answer_tokens"] for r in rows)
        assert 0.0 <= s["scores"]["test"]["f1_other_question"] <= 1.0 and all("other_question_answer" in r for r in rows)
        assert s["peak_rss_mib"] > 0 and s["peak_rss_sweep_mib"] > 0
    f1_target = results["targets"]["f1_aura_vs_topline"]  # None when the tiny topline's F1 is 0 (no ratio)
    assert f1_target is None or "ci95" in f1_target
    assert results["systems"]["aura"]["peak_rss_transcribing_mib"] > 0
    # each compared model says what it was trained on (cfg.training_history travels in the .nemo)
    runs = {n: s["training_history"] for n, s in results["systems"].items()}
    assert [r["name"] for r in runs["aura"]] == ["distill", "distill_more", "reading_ctc", "reading_ctc_more", "reader"]
    assert runs["aura"][4]["steps"] == 2 and runs["aura"][4]["fit_seconds"] > 0  # the tiny preset's reader
    assert runs["topline"] == []
    assert runs["aura_text"] == runs["aura"]  # the same .nemo read as text
    assert runs["aura"][0]["train_cuts"] == "stage2/train/cuts.jsonl.gz"  # enough of the path to tell caches apart
    # the bridge learns AuRA's reading objective (character CTC at layer K) on the same data and budget
    assert [r["name"] for r in runs["bridge"]] == ["bridge_reading_ctc", "bridge_reading_ctc_more", "reader"]
    for bridge_run, aura_run in zip(runs["bridge"][:2], runs["aura"][2:4]):  # both reading runs, the same budget
        assert bridge_run["train_cuts"] == aura_run["train_cuts"] and bridge_run["steps"] == aura_run["steps"]
    assert runs["bridge"][1]["init_from"] == "bridge_reading_ctc.nemo"
    assert [r["steps"] for r in runs["aura"]] == [8, 4, 4, 2, 2]  # the tiny preset's budgets, resume included
    assert [r["init_from"] for r in runs["aura"][1:]] == ["aura_distilled.nemo", "aura_distilled_more.nemo",
                                                          "aura_reading_ctc.nemo", "the base LLM"]
    assert runs["aura"][1]["train_cuts"] == "ci/stage3/distill_more_mix.jsonl.gz"
    assert runs["aura"][2]["train_cuts"] == "ci/stage3/reading_ctc_mix.jsonl.gz"
    from lhotse import CutSet

    mix_ids = [c.id for c in CutSet.from_file(exp / "stage3" / "reading_ctc_mix.jsonl.gz")]
    assert sum(i.startswith("words-train-") for i in mix_ids) == tiny.word_sequences  # the word sequences are read too
    assert "val_distill_cos_layer1" in reading_after  # Whisper still teaches layers 1..K beside the CTC
    assert "| aura | distill: 8 steps x 10 s" in (exp / "stage6" / "results.md").read_text()
    # AuRA and the bridge decode their CTC read by beam search with the character LM of the training transcripts
    for name in ("aura", "bridge"):
        decoding = results["systems"][name]["decoding"]
        assert decoding["strategy"] == "beam_batch" and decoding["beam"]["ngram_lm_model"].endswith("char_lm.arpa")
    decoded = (exp / "stage6" / "results.md").read_text()
    assert "aura: beam search (8), character LM (alpha 0.6, beta 1), context words boosted (alpha 1, score 2)" in decoded
    assert "rescored by the LLM" not in decoded  # rescoring is off by default (its latency)
    assert results["systems"]["topline"].get("decoding") is None
    assert out.count("char_lm.arpa: order 8 over") == 1  # one LM, built once for both
    # stage 6: hearing on the multi-fact sets (own vs another entity's question) and the closed-book questions
    hearing = json.loads((exp / "stage6" / "hearing" / "results.json").read_text())
    assert set(hearing["sets"]) == {"mf_test", "mf_test_seen", "closed_book"}
    for set_name, systems in hearing["sets"].items():
        assert set(systems) == {"topline", "cascade", "oracle_repeat", "oracle_collapsed", "aura", "bridge",
                                "topline_ft", "cascade_ft", "aura_ctc_ft", "bridge_ctc_ft"}
        for name, r in systems.items():
            assert r["hearing"] == pytest.approx(r["f1"] - r["f1_control"])
            # speech systems transcribe their audio; the topline writes the ASR prompt's reply to the question text
            # (the transcription ceiling of a span read as text); the oracles and the QA-tuned reader's topline do not
            assert ("wer" in r) == (name in ("cascade", "aura", "bridge", "topline", "cascade_ft", "aura_ctc_ft",
                                             "bridge_ctc_ft"))
        # AuRA's CTC text read by its reader as a separate LLM (aura_ctc_ft) = AuRA answering with the reader inside
        assert systems["aura_ctc_ft"]["wer"] == pytest.approx(systems["aura"]["wer"])
        assert systems["bridge_ctc_ft"]["wer"] == pytest.approx(systems["bridge"]["wer"])
        for inside, apart in (("aura", "aura_ctc_ft"), ("bridge", "bridge_ctc_ft")):
            rows = [json.loads((exp / "stage6" / "hearing" / "systems" / f"{n}.json").read_text())[set_name]["rows"]
                    for n in (inside, apart)]
            assert [r["answer"] for r in rows[0]] == [r["answer"] for r in rows[1]], (set_name, inside)
    reader = json.loads((exp / "stage5" / "text_qa_reader" / "report.json").read_text())  # stage 5's text-QA reader
    assert reader["steps"] == 4 and len(reader["log"]) > 0 and "dev_after" in reader
    # ... and each front end's own reader, trained on its transcripts of the training audio, answers for its row
    for own, asr, row in (("cascade_qa_reader", "models/tiny-ctc.nemo", "cascade_ft"),
                          ("aura_qa_reader", "ci/stage4/aura_encoder_free.nemo", "aura_ctc_ft"),
                          ("bridge_qa_reader", "ci/stage5/bridge_reading_ctc_more.nemo", "bridge_ctc_ft")):  # greedy
        report = json.loads((exp / "stage5" / own / "report.json").read_text())
        assert report["questions_from_asr"].endswith(asr) and report["steps"] == 2
        assert report["lora_layers"] is None  # every layer, the same reader budget for each front end
        assert hearing["paths"][row.split("_")[0] + "_reader_dir"].endswith(own)
    assert hearing["paths"]["asr_window_seconds"] == [10.0, 20.0]
    mf_rows = json.loads((exp / "stage6" / "hearing" / "systems" / "aura.json").read_text())["mf_test"]["rows"]
    assert len(mf_rows) == tiny.multi_fact["test"] and all(r["control"] != r["id"] for r in mf_rows)
    assert all(r["control"].startswith("mf-test-") for r in mf_rows)  # the paired question of the same context
    assert (exp / "stage6" / "hearing" / "hearing.png").stat().st_size > 0
    # ... and exports the final AuRA as a pretrained model, its card holding these scores and the corpus
    card = (exp / "pretrained" / "aura_tiny" / "MODEL_CARD.md").read_text()
    assert (exp / "pretrained" / "aura_tiny" / "model.safetensors").stat().st_size > 0
    assert (exp / "pretrained" / "aura_tiny" / "char_lm.arpa").read_bytes() == (exp / "stage4" / "char_lm.arpa").read_bytes()
    assert "| target | ratio | bound | met |" in card and "Hearing:" in card and "| distill_train |" in card

    # stage 7 (optional): the reading ablation, three variants on the tiny preset
    out7 = run_recipe(tmp_path, "--stage", "7", "--stop-stage", "7")
    assert "stage 7 done in" in out7
    ablation = json.loads((exp / "ablation" / "results.json").read_text())
    assert [s["spec_name"] for s in ablation["specs"]] == ["reading"]
    reading = ablation["specs"][0]["results"]
    by_name = {r["variant"]: r for r in reading}
    assert set(by_name) == {"baseline", "vocab_ctc", "audio_only_lora"}
    assert by_name["audio_only_lora"]["text"]["identical"] == 1.0  # text-only answers = the base LLM's
    assert all(0.0 <= r["asr"]["wer"] and 0.0 <= r["qa"]["f1"] <= 1.0 for r in reading)
    assert all(r["asr"]["wer_mismatched"] >= 0 and 0 < r["asr"]["distinct_hypotheses"] <= 1 for r in reading)
    assert all(0.0 <= r["qa"]["f1_other_question"] <= 1.0 for r in reading)  # answers with another spoken question
    assert (exp / "ablation" / "results.png").stat().st_size > 0
    assert "| variant |" in (exp / "ablation" / "results.md").read_text()
    probed = json.loads((exp / "ablation" / "probe" / "results.json").read_text())  # the tiny preset's probe_args
    assert [r["source"] for r in probed["probes"]] == ["student_L0", "student_L2", "teacher_L3"]
    probed5 = json.loads((exp / "ablation" / "probe_stage5" / "results.json").read_text())  # the fine-tuned model's layers
    assert probed5["model"].endswith("stage4/aura_encoder_free_lm.nemo")  # the final AuRA (the export + its LM)
    assert [r["source"] for r in probed5["probes"]] == ["student_L2", "student_L4"]

    # An architecture spec (distil from scratch on the cached targets, then read) joins the same report.
    spec = tmp_path / "architecture_tiny.yaml"
    spec.write_text("steps: 2\nbatch_duration: 10\nlr: 1e-3\ndistill: {steps: 3, batch_duration: 10}\n"
                    "variants:\n  scratch_baseline: []\n  scratch_x2: {overrides: [], steps_factor: 2}\n")
    lhotse_dir = exp / "stage1" / "lhotse"

    def ablation(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(ROOT / "recipes/aura/local/ablation.py"), *args,
               "--distill-train", str(exp / "stage2/train/cuts.jsonl.gz"), "--distill-dev", str(exp / "stage2/dev/cuts.jsonl.gz"),
               "--train-cuts", str(lhotse_dir / "distill_train_cuts.jsonl.gz"), "--train-cuts", str(lhotse_dir / "qa_train_cuts.jsonl.gz"),
               "--asr-dev", str(lhotse_dir / "distill_dev_cuts.jsonl.gz"), "--qa-dev", str(lhotse_dir / "qa_dev_cuts.jsonl.gz"),
               "--out", str(exp / "ablation"), "--items", "4", "--text-items", "2",
               "--", "model=aura_tiny", f"model.student.pretrained_path={tmp_path / 'models' / 'tiny-llm'}"]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)

    arch = ablation("--spec", str(spec))
    assert arch.returncode == 0, arch.stdout[-3000:] + arch.stderr[-3000:]
    specs = {s["spec_name"]: s for s in json.loads((exp / "ablation" / "results.json").read_text())["specs"]}
    assert set(specs) == {"reading", "architecture_tiny"}
    scratch = specs["architecture_tiny"]["results"][0]
    assert -1.0 <= scratch["distill"]["mean_cos"] <= 1.0 and scratch["train_seconds"] > 0
    assert (exp / "ablation" / "scratch_baseline" / "distilled.nemo").exists()
    assert "## architecture_tiny" in (exp / "ablation" / "results.md").read_text()
    assert [r["steps"] for r in specs["architecture_tiny"]["results"]] == [2, 4]  # steps_factor: a larger budget
    assert "| scratch_x2 | - | 4 |" in (exp / "ablation" / "results.md").read_text()
    # A later run of one variant (--only) keeps the spec's other finished variants in its table.
    rerun = ablation("--init", str(exp / "stage3" / "aura_distilled.nemo"), "--only", "baseline")
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    specs = {s["spec_name"]: s for s in json.loads((exp / "ablation" / "results.json").read_text())["specs"]}
    assert [r["variant"] for r in specs["reading"]["results"]] == ["baseline", "vocab_ctc", "audio_only_lora"]

    # Lever 7 (data scale): a variant may start from its own model; a recipe model brings its corpus's size.
    scale = tmp_path / "data_scale_tiny.yaml"
    scale.write_text(f"steps: 2\nbatch_duration: 10\nlr: 1e-3\nvariants:\n"
                     f"  corpus_x1: {{init: {exp / 'stage3' / 'aura_distilled.nemo'}, overrides: []}}\n")
    scaled = ablation("--spec", str(scale))
    assert scaled.returncode == 0, scaled.stdout[-3000:] + scaled.stderr[-3000:]
    corpus = json.loads((exp / "ablation" / "corpus_x1" / "eval.json").read_text())["corpus"]
    assert corpus["tag"] == "ci" and corpus["utterances"] == tiny.distill_train and set(corpus["stage_seconds"]) == {"1", "2", "3"}
    assert f"| corpus_x1 | - | ci: {tiny.distill_train} utts" in (exp / "ablation" / "results.md").read_text()
    # A budget curve: steps_factor 0 scores a recipe model as it is; a continued run counts its init's steps too.
    budget = tmp_path / "budget_tiny.yaml"
    aura_final = exp / "stage4" / "aura_encoder_free.nemo"
    budget.write_text(f"steps: 2\nbatch_duration: 10\nlr: 1e-3\nvariants:\n"  # next-token steps need a span they reach
                      f"  as_is: {{init: {aura_final}, steps_factor: 0}}\n"
                      f"  continued: {{init: {aura_final}, overrides: ['model.reading={{span: frames}}']}}\n")
    curve = ablation("--spec", str(budget))
    assert curve.returncode == 0, curve.stdout[-3000:] + curve.stderr[-3000:]
    assert not (exp / "ablation" / "as_is" / "model.nemo").exists()  # scored, not trained
    as_is = json.loads((exp / "ablation" / "as_is" / "eval.json").read_text())
    assert (as_is["steps"], as_is["model"], as_is["train_seconds"]) == (0, str(aura_final), None)
    rows = {line.split(" | ")[0]: line for line in curve.stdout.splitlines() if line.startswith("| as_is |") or line.startswith("| continued |")}
    assert "| ci: " in rows["| as_is"]  # a recipe model as init brings its corpus column
    # the reading runs count as reading training: 4 + 2 (stage 3, continued)
    assert "| 0 (6 in all) |" in rows["| as_is"] and "| 2 (8 in all) |" in rows["| continued"]
    bad = tmp_path / "budget_bad.yaml"
    bad.write_text("steps: 2\nbatch_duration: 10\nlr: 1e-3\nvariants:\n  nothing: {steps_factor: 0}\n")
    refused = ablation("--spec", str(bad))
    assert refused.returncode != 0 and "steps_factor 0 (score its init as it is) but no init" in refused.stderr
    # ... and the x2 corpus (tiny_x2 links the tiny run's wavs and teacher targets; only the new voices cost)
    (tmp_path / "tiny").symlink_to(exp)
    cmd = ["bash", str(ROOT / "recipes/aura/run.sh"), "--preset", "tiny_x2", "--exp-root", str(tmp_path), "--stage", "1", "--stop-stage", "2"]
    x2 = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert x2.returncode == 0, x2.stdout[-3000:] + x2.stderr[-3000:]
    summary_x2 = json.loads((tmp_path / "tiny_x2" / "stage1" / "summary.json").read_text())
    assert summary_x2["subsets"]["distill_train"]["utterances"] == 2 * tiny.distill_train
    assert summary_x2["reused_wavs"] == json.loads((exp / "stage1" / "summary.json").read_text())["utterances"]
    cache_x2 = json.loads((tmp_path / "tiny_x2" / "stage2" / "train" / "cache.json").read_text())
    assert (cache_x2["linked_from_other_cache"], cache_x2["computed_now"]) == (tiny.distill_train, tiny.distill_train)

    # A rerun finds every output and redoes nothing.
    stamps = {p: p.stat().st_mtime for p in (exp / "stage3" / "aura_distilled.nemo", exp / "stage3" / "aura_reading_ctc.nemo",
                                              exp / "stage3" / "aura_reading_ctc_more.nemo",
                                              exp / "stage5" / "bridge_reading_ctc_more.nemo",
                                              exp / "stage4" / "aura_encoder_free.nemo", exp / "stage4" / "char_lm.arpa",
                                              exp / "stage4" / "aura_encoder_free_lm.nemo",
                                              exp / "stage5" / "bridge_reading_ctc.nemo", exp / "stage5" / "aura_qa_reader",
                                              exp / "stage2" / "train" / "cuts.jsonl.gz")}
    again = run_recipe(tmp_path, "--stage", "1", "--stop-stage", "5")
    # stage 3's two runs, the bridge's init and reading run; the four text-QA readers keep their directories
    assert "complete: skipping" in again and again.count("exists: skipping") >= 4
    assert again.count("exists: keeping it") == 8  # + the two models with their readers, and with their LM
    assert all(p.stat().st_mtime == t for p, t in stamps.items())
