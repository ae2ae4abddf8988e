"""Stage 6: spoken-QA accuracy, latency and peak memory of topline, cascade, bridge and AuRA, side by side.

    python recipes/aura/local/score_benchmark.py --items test=exp/t/stage1/lhotse/qa_test_cuts.jsonl.gz \
        [--items mine=my_manifest.json] --llm-dir exp/models/smollm2-135m-instruct --asr exp/models/whisper-base \
        --aura exp/t/stage5/aura_qa.nemo --bridge exp/t/stage5/bridge_qa.nemo --out exp/t/stage6

Each system runs in its own process (one after the other, never two at once) through
``benchmark_worker.py``; this process only aggregates. Writes ``results.json``, ``results.md`` and
PNG plots into ``--out``. Any saved AuRA/bridge ``.nemo`` can be benchmarked this way.

The targets are decided on what the systems do differently: memory on model RSS (peak minus the identical
post-import baseline; total peak RSS reported beside it), latency on the time to the first answer token (front
end + prefill) and on the time of an answer of equal length for all (first token + (L - 1) x the measured time
per token, L = ``--max-new-tokens``); whole-answer latency, which rewards short answers, is reported, not decided
on. F1 targets compare the items both systems answered (an item that failed is listed, not scored).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from nemo_aura.parts.files import atomic_path, write_json_atomic, write_text_atomic
from nemo_aura.scoring.metrics import exact_match, paired_bootstrap_interval, token_f1, wer

ALL_SYSTEMS = ("topline", "cascade", "bridge", "aura", "aura_text")
LATENCY_BOUNDS = {"bridge": 0.5, "cascade": 0.3, "topline": 1.15}  # the targets: AuRA's latency / the other's
TARGETS = {  # (metric, numerator, denominator, bound, "<=" | ">=")
    **{f"first_token_aura_vs_{o}": ("first_token", "aura", o, b, "<=") for o, b in LATENCY_BOUNDS.items()},
    **{f"equal_length_aura_vs_{o}": ("equal_length", "aura", o, b, "<=") for o, b in LATENCY_BOUNDS.items()},
    "model_memory_aura_vs_topline": ("model_memory", "aura", "topline", 1.05, "<="),
    "f1_aura_vs_topline": ("f1", "aura", "topline", 0.9, ">="),
    "f1_aura_vs_cascade": ("f1", "aura", "cascade", 1.0, ">="),
}
# Reported beside the targets, not decided on: whole-answer latency (shorter answers are faster) and total RSS
# (the ~same import baseline in every process hides the systems' differences).
REPORTED_RATIOS = {**{f"latency_aura_vs_{o}": ("latency", "aura", o) for o in LATENCY_BOUNDS},
                   "memory_total_aura_vs_topline": ("memory_total", "aura", "topline")}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", action="append", required=True, metavar="NAME=PATH",
                        help="Lhotse cuts or NeMo JSON manifest of spoken-QA items; the first set is also timed")
    parser.add_argument("--systems", default=",".join(ALL_SYSTEMS))
    parser.add_argument("--llm-dir")
    parser.add_argument("--asr", help="cascade ASR: local HF Whisper dir or a NeMo .nemo")
    parser.add_argument("--asr-window-seconds", default="10,20",
                        help="the cascade's Whisper encodes the shortest of these windows that holds the audio instead "
                             "of the padded 30 s (as AuRA's Whisper teacher, conf/model/aura_base.yaml); '' = always 30 s")
    parser.add_argument("--asr-context-prompt", action="store_true",
                        help="the cascade's Whisper is prompted with each item's context (the counterpart of a CTC read "
                             "that boosts the context's words)")
    parser.add_argument("--aura")
    parser.add_argument("--bridge")
    parser.add_argument("--reader-dir", help="the fine-tuned text-QA reader (finetune_text_qa.py): the topline_ft row, "
                                             "and cascade_ft's without --cascade-reader-dir")
    parser.add_argument("--cascade-reader-dir", help="cascade_ft's own reader, trained on the cascade ASR's transcripts")
    parser.add_argument("--limit", type=int, default=None, help="items per set (default: all)")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--sweep-seconds", default="1,2,5,10,20,30")
    parser.add_argument("--transcripts", action="store_true", help="speech models also transcribe (untimed) for WER")
    parser.add_argument("--question-control", action=argparse.BooleanOptionalAction, default=True,
                        help="also score every item with the next item's question (untimed): the F1 the context alone earns")
    parser.add_argument("--distill-report", type=Path, default=None, help="stage-3 distill_report.json to plot")
    parser.add_argument("--reuse-workers", action="store_true",
                        help="score what a system's worker already wrote under --out (after a scorer change) instead "
                             "of running it again; systems without a worker.json still run")
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args(argv)


def run_worker(system: str, args, paths: dict) -> dict:
    out = args.out / system
    cmd = [sys.executable, str(Path(__file__).with_name("benchmark_worker.py")), "--system", system, "--paths", json.dumps(paths),
           "--out", str(out), "--max-new-tokens", str(args.max_new_tokens), "--sweep-seconds", args.sweep_seconds]
    for spec in args.items:
        cmd += ["--items", spec]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    if args.transcripts:
        cmd.append("--transcripts")
    if args.question_control:
        cmd.append("--question-control")
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"system {system!r} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    print(f"[stage6] {system}: done in {time.time() - start:.0f} s", flush=True)
    return json.loads((out / "worker.json").read_text())


def read_predictions(pred_path: Path) -> list[dict]:
    return [json.loads(line) for line in pred_path.read_text().splitlines()]


def score_set(rows: list[dict]) -> dict:
    """EM/F1 (and WER, the question control) over the rows answered; the failed ones counted and listed."""
    answered = [r for r in rows if "error" not in r]
    result = {"items": len(rows), "answered": len(answered), "failed_ids": [r["id"] for r in rows if "error" in r],
              "exact_match": None, "f1": None}
    if not answered:
        return result
    result["exact_match"] = sum(exact_match(r["answer"], r["answers"]) for r in answered) / len(answered)
    result["f1"] = sum(token_f1(r["answer"], r["answers"]) for r in answered) / len(answered)
    with_tr = [r for r in answered if r.get("transcript") is not None]
    if with_tr:
        result["wer"] = wer([r["transcript"] for r in with_tr], [r["question"] for r in with_tr])
    controlled = [r for r in answered if "other_question_answer" in r]
    if controlled:
        own = [token_f1(r["answer"], r["answers"]) for r in controlled]
        other = [token_f1(r["other_question_answer"], r["answers"]) for r in controlled]
        result["f1_other_question"] = sum(other) / len(controlled)
        result["f1_owed_to_question_ci95"] = paired_bootstrap_interval(own, other, "difference")
    return result


def rows_by_id(rows: list[dict], where: str) -> dict[str, dict]:
    """The answered rows by id; an id twice is an error (answers of two systems are paired by id)."""
    out = {}
    for r in rows:
        if r["id"] in out:
            raise ValueError(f"{where}: item id {r['id']!r} appears twice; ids must be unique to pair the systems' answers")
        if "error" not in r:
            out[r["id"]] = r
    return out


def paired_f1(num_rows: list[dict], den_rows: list[dict]) -> tuple[list[float], list[float]]:
    """Per-item F1 of two systems over the items both answered, in the same order."""
    a, b = rows_by_id(num_rows, "numerator"), rows_by_id(den_rows, "denominator")
    ids = [i for i in a if i in b]
    return ([token_f1(a[i]["answer"], a[i]["answers"]) for i in ids], [token_f1(b[i]["answer"], b[i]["answers"]) for i in ids])


def f1_interval(num_rows: list[dict], den_rows: list[dict]) -> tuple[float, float] | None:
    """95% paired-bootstrap interval of F1(num) / F1(den) over the items both systems answered."""
    return paired_bootstrap_interval(*paired_f1(num_rows, den_rows))


def equal_length_latency(first_token_s, seconds_per_token, tokens: int):
    """Seconds for an answer of ``tokens`` tokens: the first token, then ``tokens - 1`` at the measured rate."""
    return None if first_token_s is None or seconds_per_token is None else first_token_s + (tokens - 1) * seconds_per_token


def target_result(ratio_value, bound: float, op: str) -> dict | None:
    if ratio_value is None:
        return None
    met = ratio_value <= bound if op == "<=" else ratio_value >= bound
    return {"ratio": ratio_value, "bound": bound, "op": op, "met": met}


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def aggregate(workers: dict[str, dict], args) -> dict:
    set_names = [s.partition("=")[0] for s in args.items]
    results = {"systems": {}, "sets": set_names, "timed_set": set_names[0], "max_new_tokens": args.max_new_tokens}
    predictions = {name: {s: read_predictions(args.out / name / f"{s}.predictions.jsonl") for s in set_names}
                   for name in workers}  # read once: scores, intervals and the text-ability check all use them
    for name, w in workers.items():
        entry = {"scores": {s: score_set(predictions[name][s]) for s in set_names}}
        timed = w["sets"][set_names[0]]
        entry.update(latency_median_s=timed["latency_median_s"], latency_p90_s=timed["latency_p90_s"],
                     equal_length_latency_s=equal_length_latency(timed.get("first_token_median_s"),
                                                                 timed.get("seconds_per_token_median"), args.max_new_tokens),
                     first_token_median_s=timed.get("first_token_median_s"),
                     answer_tokens_median=timed.get("answer_tokens_median"),
                     answers_at_token_limit=timed.get("answers_at_token_limit"),
                     seconds_per_token_median=timed.get("seconds_per_token_median"),
                     peak_rss_mib=w["peak_rss_mib"], rss_after_imports_mib=w["rss_after_imports_mib"],
                     model_rss_mib=w["peak_rss_mib"] - w["rss_after_imports_mib"], load_seconds=w["load_seconds"],
                     peak_rss_transcribing_mib=w.get("peak_rss_transcribing_mib"),
                     peak_rss_sweep_mib=w.get("peak_rss_sweep_mib"), sweep=w.get("sweep", []),
                     training_history=w.get("training_history", []), decoding=w.get("decoding"))
        results["systems"][name] = entry
    systems = results["systems"]

    # A baseline with a fine-tuned reader (topline_ft, cascade_ft) stands in for the raw-LLM one when it was run: an
    # AuRA or bridge that answers with its own reader is compared with baselines that answer with theirs.
    results["baselines"] = {den: f"{den}_ft" if f"{den}_ft" in systems else den for den in ("topline", "cascade", "bridge")}

    def pair_ratio(metric, num, den):
        if num not in systems or den not in systems:
            return None
        if metric == "f1":  # on the items both answered
            a, b = paired_f1(predictions[num][set_names[0]], predictions[den][set_names[0]])
            return ratio(sum(a) / len(a), sum(b) / len(b)) if a else None
        key = {"first_token": "first_token_median_s", "equal_length": "equal_length_latency_s",
               "latency": "latency_median_s", "model_memory": "model_rss_mib", "memory_total": "peak_rss_mib"}[metric]
        return ratio(systems[num].get(key), systems[den].get(key))

    results["ratios"] = {}
    results["targets"] = {}
    results["cascade_asr_window_seconds"] = getattr(args, "asr_window_seconds", None)
    results["cascade_context_prompt"] = bool(getattr(args, "asr_context_prompt", False))
    for key, (metric, num, den, bound, op) in TARGETS.items():
        den = results["baselines"].get(den, den)
        r = results["ratios"][key] = pair_ratio(metric, num, den)
        results["targets"][key] = target_result(r, bound, op)
        if r is not None and metric == "f1":  # a ratio of two F1s on ~100 items: how much is item sampling?
            results["targets"][key]["ci95"] = f1_interval(predictions[num][set_names[0]], predictions[den][set_names[0]])
    for key, (metric, num, den) in REPORTED_RATIOS.items():
        results["ratios"][key] = pair_ratio(metric, num, results["baselines"].get(den, den))
    topline = results["baselines"]["topline"]
    if "aura" in systems and topline in systems:
        results["text_speech_gap"] = {s: ratio(systems["aura"]["scores"][s]["f1"], systems[topline]["scores"][s]["f1"])
                                      for s in set_names}
    if "aura_text" in systems and "topline" in systems:
        results["text_ability_kept"] = text_agreement(predictions["aura_text"][set_names[0]], predictions["topline"][set_names[0]])
    return results


def text_agreement(a: list[dict], base_rows: list[dict]) -> dict:
    """How often the LLM with the speech LoRA (rows ``a``) answers text questions exactly as the base LLM does."""
    b = rows_by_id(base_rows, "topline")
    a = [r for r in rows_by_id(a, "aura_text").values() if r["id"] in b]
    if not a:
        return {"identical_answers": None, "f1_with_adapter": None, "f1_base": None}
    same = sum(r["answer"].strip() == b[r["id"]]["answer"].strip() for r in a)
    return {"identical_answers": same / len(a),
            "f1_with_adapter": sum(token_f1(r["answer"], r["answers"]) for r in a) / len(a),
            "f1_base": sum(token_f1(b[r["id"]]["answer"], r["answers"]) for r in a) / len(a)}


def interval(ci) -> str:
    return f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""


def seconds(value) -> str:
    return "" if value is None else f"{value:.3f}"


def mib(value) -> str:
    return "" if value is None else f"{value:.0f}"


def to_markdown(results: dict) -> str:
    sets = results["sets"]
    head = ("| system | " + " | ".join(f"{s} EM | {s} F1" for s in sets) + " | WER | latency median (s) | p90 (s) | "
            "first token (s) | answer tokens | s/token | peak RSS (MiB) | model RSS (MiB) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, s in results["systems"].items():
        scores = " | ".join(f"{seconds(s['scores'][x]['exact_match'])} | {seconds(s['scores'][x]['f1'])}" for x in sets)
        w = s["scores"][sets[0]].get("wer")
        tokens = s.get("answer_tokens_median")
        lines.append(f"| {name} | {scores} | {'' if w is None else f'{w:.3f}'} | {seconds(s['latency_median_s'])} | "
                     f"{seconds(s['latency_p90_s'])} | {seconds(s.get('first_token_median_s'))} | "
                     f"{'' if tokens is None else f'{tokens:g}'} | {seconds(s.get('seconds_per_token_median'))} | "
                     f"{s['peak_rss_mib']:.0f} | {s['model_rss_mib']:.0f} |")
    failed = {(n, x): s["scores"][x].get("failed_ids") for n, s in results["systems"].items() for x in sets
              if s["scores"][x].get("failed_ids")}
    if failed:
        lines += ["", "Items that failed (an `error` in the predictions; not scored, not timed): " +
                  "; ".join(f"{n} on {x}: {len(ids)} ({', '.join(map(str, ids[:5]))}{' ...' if len(ids) > 5 else ''})"
                            for (n, x), ids in failed.items())]
    lines += ["", "| target | ratio | bound | met |", "|---|---|---|---|"]
    for key, t in results["targets"].items():
        lines.append(f"| {key} | n/a | | not measured |" if t is None else
                     f"| {key} | {t['ratio']:.3f}{interval(t.get('ci95'))} | {t['op']} {t['bound']} | "
                     f"{'yes' if t['met'] else 'NO'} |")
    if any(t and t.get("ci95") for t in results["targets"].values()):
        lines += ["", "[95% interval]: a paired bootstrap over the items (2000 resamples, seed 0); 'met' is decided on "
                  "the measured ratio."]
    controls = {n: s["scores"][sets[0]] for n, s in results["systems"].items()
                if "f1_other_question" in s["scores"][sets[0]]}
    if controls:
        lines += ["", f"Question control ({sets[0]}): each item keeps its context and gold answers but gets the next "
                  "item's question (spoken for the speech systems, text for the text ones). Its F1 is what the context "
                  "alone earns; the difference is what the answers owe to the question.", "",
                  "| system | F1 | F1 with another item's question | owed to the question [95% interval] |", "|---|---|---|---|"]
        lines += [f"| {n} | {c['f1']:.3f} | {c['f1_other_question']:.3f} | {c['f1'] - c['f1_other_question']:+.3f}"
                  f"{interval(c.get('f1_owed_to_question_ci95'))} |" for n, c in controls.items()]
    ratios = results.get("ratios", {})
    reported = {k: ratios[k] for k in REPORTED_RATIOS if ratios.get(k) is not None}
    if reported:
        lines += ["", "Reported, not targets (whole-answer latency rewards short answers; total RSS includes the same "
                  "import baseline in every process): " + ", ".join(f"{k} {v:.3f}" for k, v in reported.items())]
    standing_in = {den: ft for den, ft in results.get("baselines", {}).items() if ft != den}
    if standing_in:
        lines += ["", "Baselines with a fine-tuned reader stand in for the raw-LLM ones in the targets: " +
                  ", ".join(f"{ft} for {den}" for den, ft in standing_in.items()) + "."]
    lines += ["", "Targets: first token = time to the first answer token (front end + prefill); equal length = first "
              f"token + ({results['max_new_tokens']} - 1) x the measured time per token (an answer of the same length for "
              "every system); model memory = peak RSS - RSS after imports; F1 on the items both systems answered."]
    if results.get("cascade_asr_window_seconds"):
        lines.append(f"The cascade's Whisper encodes the shortest window of {results['cascade_asr_window_seconds']} s "
                     "that holds the question (else 30 s), as AuRA's Whisper teacher does.")
    if results.get("cascade_context_prompt"):
        lines.append("The cascade's Whisper is prompted with each item's context (its previous-text prompt), as the "
                     "speech models' CTC reads boost the context's words.")
    if "text_speech_gap" in results:
        lines += ["", f"Text-speech gap (AuRA F1 / {results['baselines']['topline']} F1): " +
                  ", ".join(f"{k}: {v:.3f}" if v is not None else f"{k}: n/a" for k, v in results["text_speech_gap"].items())]
    if "text_ability_kept" in results:
        t = results["text_ability_kept"]
        lines.append(f"Text ability with the AuRA adapter: identical answers {t['identical_answers']:.1%}, "
                     f"F1 {t['f1_with_adapter']:.3f} vs base {t['f1_base']:.3f}")
    lines += ["", f"Latency: batch 1, greedy, max_new_tokens={results['max_new_tokens']}, median over the "
              f"'{results['timed_set']}' items after warm-up; each system in its own process, one after another. "
              "Answer tokens: median generated per answer; s/token: median (latency - first token) / (tokens - 1). "
              "Peak RSS: loading + answering the items (the compared figure); model RSS = peak - RSS after imports."]
    swept = {n: {p["seconds"]: p for p in s.get("sweep", [])} for n, s in results["systems"].items() if s.get("sweep")}
    if swept:
        durations = sorted({d for points in swept.values() for d in points})
        lines += ["", "Latency vs audio length (s; whole answer / first token, median of the repeats):", "",
                  "| audio (s) | " + " | ".join(swept) + " |", "|---|" + "---|" * len(swept)]
        for d in durations:
            cells = [swept[n].get(d) for n in swept]
            lines.append(f"| {d:g} | " + " | ".join(
                "" if c is None else f"{c['latency_median_s']:.2f} / {seconds(c.get('first_token_median_s'))}".rstrip(" /")
                for c in cells) + " |")
    phases = [(n, s) for n, s in results["systems"].items()
              if s.get("peak_rss_transcribing_mib") is not None or s.get("peak_rss_sweep_mib") is not None]
    if phases:
        lines += ["", "Peak RSS per phase (a later phase starts from the RSS the process already holds, so it can "
                  "only show what that phase adds on top):", "",
                  "| system | peak RSS answering (MiB) | transcribing for WER (MiB) | long-audio sweep (MiB) |", "|---|---|---|---|"]
        lines += [f"| {n} | {s['peak_rss_mib']:.0f} | {mib(s.get('peak_rss_transcribing_mib'))} | {mib(s.get('peak_rss_sweep_mib'))} |"
                  for n, s in phases]
    trained = {n: s["training_history"] for n, s in results["systems"].items() if s.get("training_history")}
    if trained:
        lines += ["", "Training budget of the compared models (from each .nemo's training_history; steps x "
                  "seconds of audio per step):", "", "| system | runs |", "|---|---|"]
        lines += [f"| {n} | " + " → ".join(training_run(r) for r in runs) + " |" for n, runs in trained.items()]
    decoded = {n: s["decoding"] for n, s in results["systems"].items() if s.get("decoding")}
    if decoded:
        lines += ["", "How each speech model decodes its CTC read (cfg.ctc_decoding): " + "; ".join(
            f"{n}: {decoding_summary(d)}" for n, d in decoded.items()) + "."]
    return "\n".join(lines) + "\n"


def decoding_summary(decoding: dict) -> str:
    if decoding.get("strategy") != "beam_batch":
        return str(decoding.get("strategy", "greedy"))
    beam = decoding.get("beam") or {}
    lm = (f", character LM (alpha {beam.get('ngram_lm_alpha', 1.0):g}, beta {beam.get('beam_beta', 0.0):g})"
          if beam.get("ngram_lm_model") else "")
    tree = beam.get("boosting_tree") or {}
    boost = (f", {'capitalized ' if tree.get('capitalized_only') else ''}context words boosted (alpha "
             f"{beam['boosting_tree_alpha']:g}, score {tree.get('context_score', 1.0):g})"
             if beam.get("boosting_tree_alpha") else "")
    rescored = f", N-best rescored by the LLM ({beam['llm_rescoring_weight']:g})" if beam.get("llm_rescoring_weight") else ""
    return f"beam search ({beam.get('beam_size', 8)}){lm}{boost}{rescored}"


def training_run(run: dict) -> str:
    audio = f" x {run['batch_duration']:g} s" if run.get("batch_duration") else \
        f" x {run['batch_items']} items" if run.get("batch_items") else ""
    data = f" on {run['train_cuts']}" if run.get("train_cuts") else ""
    return f"{run.get('name')}: {run['steps']} steps{audio}{data} ({run.get('fit_seconds', 0):.0f} s)"


def plot(results: dict, out: Path, distill_report: Path | None) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = results["systems"]
    names = list(systems)
    first = results["sets"][0]
    written = []

    def save(fig, name):
        fig.tight_layout()
        with atomic_path(out / name) as tmp:
            fig.savefig(tmp, dpi=120, format="png")
        plt.close(fig)
        written.append(name)

    fig, ax = plt.subplots(figsize=(6, 3.2))
    xs = range(len(names))
    control = all("f1_other_question" in systems[n]["scores"][first] for n in names)
    width = 0.27 if control else 0.4
    ax.bar([x - width / 2 * (1 + control) for x in xs], [systems[n]["scores"][first]["f1"] or 0 for n in names], width, label="F1")
    ax.bar([x + width / 2 * (1 - control) for x in xs], [systems[n]["scores"][first]["exact_match"] or 0 for n in names],
           width, label="EM")
    if control:
        ax.bar([x + width for x in xs], [systems[n]["scores"][first]["f1_other_question"] for n in names], width,
               label="F1, another item's question", color="tab:gray")
    ax.set_xticks(list(xs), names)
    ax.set_ylabel(f"{first} score")
    ax.legend()
    save(fig, "accuracy.png")

    for key, label, name in (("latency_median_s", "median latency per item (s)", "latency.png"),
                             ("peak_rss_mib", "peak RSS (MiB)", "memory.png")):
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.bar(names, [systems[n][key] or 0 for n in names], color="tab:gray", label="whole answer")
        if key == "latency_median_s" and all(systems[n].get("first_token_median_s") is not None for n in names):
            ax.bar(names, [systems[n]["first_token_median_s"] for n in names], 0.5, color="tab:blue",
                   label="first token (front end + prefill)")
            ax.legend(fontsize=8)
        ax.set_ylabel(label)
        save(fig, name)

    swept = [n for n in names if systems[n]["sweep"]]
    if swept:
        panels = [("latency_median_s", "whole answer (s)")]
        if all("first_token_median_s" in p for n in swept for p in systems[n]["sweep"]):
            panels.append(("first_token_median_s", "first token: front end + prefill (s)"))
        fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 3.6), squeeze=False)
        for ax, (key, label) in zip(axes[0], panels):
            for n in swept:
                ax.plot([p["seconds"] for p in systems[n]["sweep"]], [p[key] for p in systems[n]["sweep"]], "o-", label=n)
            ax.set_xlabel("audio length (s)")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        axes[0][0].legend()
        save(fig, "latency_vs_duration.png")

    if distill_report and distill_report.exists():
        rep = json.loads(distill_report.read_text())
        after = {int(k): v for k, v in rep["cosine_after"].items()}
        before = {int(k): v for k, v in rep["cosine_before"].items()}
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(sorted(after), [before.get(k) for k in sorted(after)], "o--", label="before")
        ax.plot(sorted(after), [after[k] for k in sorted(after)], "o-", label="after")
        ax.set_xlabel("student layer")
        ax.set_ylabel("dev cosine to teacher")
        ax.legend()
        save(fig, "distill_similarity.png")
    return written


def main(argv=None) -> dict:
    from nemo_aura.scoring.systems import parse_window_seconds

    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    paths = {"llm_dir": args.llm_dir, "asr": args.asr, "aura": args.aura, "bridge": args.bridge,
             "reader_dir": args.reader_dir, "cascade_reader_dir": args.cascade_reader_dir,
             "asr_window_seconds": parse_window_seconds(args.asr_window_seconds),
             "asr_context_prompt": args.asr_context_prompt}
    workers = {}
    for name in [s for s in args.systems.split(",") if s]:
        done = args.out / name / "worker.json"
        if args.reuse_workers and done.is_file():
            print(f"[stage6] {name}: reusing {done}", flush=True)
            workers[name] = json.loads(done.read_text())
        else:
            workers[name] = run_worker(name, args, paths)
    results = aggregate(workers, args)
    results["plots"] = plot(results, args.out, args.distill_report)
    write_json_atomic(args.out / "results.json", results)
    write_text_atomic(args.out / "results.md", to_markdown(results))
    print((args.out / "results.md").read_text())
    return results


if __name__ == "__main__":
    main()
