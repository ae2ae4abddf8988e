"""One system in its own process: answers, per-item latency, latency vs audio length, peak memory.

Every worker imports the same libraries before it loads its system, so the post-import RSS baseline
is the same for all systems and the peak-RSS comparison measures the systems, not the imports.
Run by ``score_benchmark.py``; not meant to be called by hand. An item whose audio cannot be read or
that its system cannot answer (too long, ...) is a row with an ``error``; the other items go on.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import numpy as np

from nemo_aura.parts.files import write_json_atomic, write_jsonl_atomic
from nemo_aura.parts.memory import current_rss_mib, peak_rss_mib, reset_peak_rss


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--system", required=True)
    parser.add_argument("--paths", required=True, help="JSON: llm_dir, asr, aura, bridge")
    parser.add_argument("--items", action="append", required=True, metavar="NAME=PATH")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--sweep-seconds", default="1,2,5,10,20,30")
    parser.add_argument("--sweep-repeats", type=int, default=3)
    parser.add_argument("--transcripts", action="store_true", help="also transcribe every item (untimed) for WER")
    parser.add_argument("--question-control", action="store_true",
                        help="also answer every item with the next item's question (untimed; see answer_other_questions)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args()


def sweep_inputs(items, audios: list[np.ndarray], seconds: list[float], sample_rate: int) -> list[dict]:
    """Synthetic long inputs: consecutive test utterances joined (0.2 s gaps) and cut to each length."""
    gap = np.zeros(int(0.2 * sample_rate), dtype=np.float32)
    out = []
    for target in seconds:
        pieces, texts, total, i = [], [], 0, 0
        while total < target * sample_rate:
            pieces += [audios[i % len(audios)], gap]
            texts.append(items[i % len(items)].question)
            total += len(audios[i % len(audios)]) + len(gap)
            i += 1
        wave = np.concatenate(pieces)[: int(target * sample_rate) - 1]
        out.append({"seconds": target, "audio": wave, "question": " ".join(texts)})
    return out


def main() -> None:
    args = parse_args()
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    import nemo_aura.models  # noqa: F401  (same imports in every worker: equal RSS baselines)
    import transformers  # noqa: F401

    from nemo_aura.scoring.items import load_items
    from nemo_aura.scoring.systems import build_system

    rss_after_imports = current_rss_mib()
    sets = {}
    for spec in args.items:
        name, _, path = spec.partition("=")
        sets[name] = load_items(path, args.limit)
    t0 = time.perf_counter()
    system = build_system(args.system, json.loads(args.paths))
    load_seconds = time.perf_counter() - t0
    rss_after_load = current_rss_mib()

    report = {"system": args.system, "rss_after_imports_mib": rss_after_imports, "rss_after_load_mib": rss_after_load,
              "load_seconds": load_seconds, "training_history": system.training_history,
              "decoding": system.decoding, "sets": {}}
    audios, rows, errors = {}, {}, {}
    for set_index, (set_name, items) in enumerate(sets.items()):
        audios[set_name], errors[set_name] = load_audios(items, system.sample_rate if system.uses_audio else None)
        rows[set_name], report["sets"][set_name] = answer_set(system, items, audios[set_name], args, warmup=set_index == 0,
                                                              errors=errors[set_name])
        write_predictions(args.out, set_name, rows[set_name])
    # The compared peak: loading + answering the same items. Transcribing (for WER) and the long-audio sweep
    # are measured as phases of their own, so they do not stand in for the systems' answering footprint.
    report["peak_rss_mib"] = peak_rss_mib()
    report["peak_rss_phases_separate"] = reset_peak_rss()
    first = next(iter(sets))
    if args.transcripts and system.uses_audio and not all("transcript" in r for r in rows[first]):
        for set_name in sets:
            for item, row, audio in zip(sets[set_name], rows[set_name], audios[set_name]):
                if "transcript" not in row and "error" not in row:
                    try:
                        row["transcript"] = system.transcribe(audio, item.context)
                    except Exception as e:  # per item, as the answers
                        row["transcript_error"] = f"{type(e).__name__}: {e}"
            write_predictions(args.out, set_name, rows[set_name])
        report["peak_rss_transcribing_mib"] = peak_rss_mib()
        reset_peak_rss()
    if args.question_control:
        for set_name, items in sets.items():
            answer_other_questions(system, items, audios[set_name], rows[set_name], args.max_new_tokens)
            write_predictions(args.out, set_name, rows[set_name])
        reset_peak_rss()
    if args.sweep_seconds:
        report["sweep"] = run_sweep(system, sets[first], audios[first], args)
        report["peak_rss_sweep_mib"] = peak_rss_mib()
    write_json_atomic(args.out / "worker.json", report)


def load_audios(items, sample_rate: int | None) -> tuple[list, dict[int, str]]:
    """Each item's audio at ``sample_rate`` (None: a text system, no audio); {index: error} for those that fail."""
    audios, errors = [], {}
    for i, item in enumerate(items):
        try:
            audios.append(item.load_audio(sample_rate) if sample_rate else None)
        except Exception as e:  # one missing or corrupt file is that item's error, not the worker's
            audios.append(None)
            errors[i] = f"audio: {type(e).__name__}: {e}"
    return audios, errors


def answer_set(system, items, audios, args, warmup: bool, errors: dict[int, str] | None = None) -> tuple[list[dict], dict]:
    """Answer every item (batch 1, greedy), timing the whole answer and, separately, the first token. An item in
    ``errors`` (its audio failed) or whose answer raises is a row with an ``error``, left out of the timings."""
    errors = dict(errors or {})
    if warmup:
        for i, (item, audio) in list(enumerate(zip(items, audios)))[: args.warmup]:
            if i not in errors:
                try:
                    system.answer(item, audio, args.max_new_tokens)
                except Exception:
                    pass  # the timed pass records it
    rows = []
    for i, (item, audio) in enumerate(zip(items, audios)):
        row = {"id": item.id, "question": item.question, "answers": item.answers, "duration": item.duration}
        if i in errors:
            rows.append({**row, "error": errors[i]})
            continue
        try:
            start = time.perf_counter()
            out = system.answer(item, audio, args.max_new_tokens)
            latency = time.perf_counter() - start
            # Time to the first answer token (front end + prefill): the part the systems do differently,
            # free of how long each one's answers are.
            start = time.perf_counter()
            system.answer(item, audio, 1)
            first = time.perf_counter() - start
        except Exception as e:
            rows.append({**row, "error": f"answer: {type(e).__name__}: {e}"})
            continue
        rows.append({**row, **out, "latency_s": latency, "first_token_s": first})
    return rows, timing_summary(rows, args.max_new_tokens)


def timing_summary(rows: list[dict], max_new_tokens: int) -> dict:
    """Medians over the answered rows (None when none was); the failed ones listed."""
    ok = [r for r in rows if "error" not in r]
    failed = [{"id": r["id"], "error": r["error"]} for r in rows if "error" in r]
    if not ok:
        return {"items": len(rows), "answered": 0, "failed": failed, "latency_median_s": None, "latency_p90_s": None,
                "first_token_median_s": None, "seconds_per_token_median": None}
    latencies, tokens = [r["latency_s"] for r in ok], [r["answer_tokens"] for r in ok]
    # Per generated token after the first: (whole - first token) / (tokens - 1), over items with >= 2 tokens.
    per_token = [(r["latency_s"] - r["first_token_s"]) / (r["answer_tokens"] - 1) for r in ok if r["answer_tokens"] > 1]
    return {"items": len(rows), "answered": len(ok), "failed": failed, "latency_median_s": statistics.median(latencies),
            "latency_p90_s": float(np.percentile(latencies, 90)), "latency_mean_s": statistics.fmean(latencies),
            "first_token_median_s": statistics.median(r["first_token_s"] for r in ok),
            "answer_tokens_median": statistics.median(tokens), "answer_tokens_mean": statistics.fmean(tokens),
            "answers_at_token_limit": sum(t >= max_new_tokens for t in tokens) / len(tokens),
            "seconds_per_token_median": statistics.median(per_token) if per_token else None}


def answer_other_questions(system, items, audios, rows: list[dict], max_new_tokens: int) -> None:
    """The question control: each item keeps its context and gold answers but gets the *next* item's question
    (its audio for a speech system, its text for a text system). Its F1 is what the context alone earns; a system
    whose answers use the question scores clearly less this way. Untimed; one set of fewer than 2 items is skipped."""
    if len(items) < 2:
        return
    for i, (item, row) in enumerate(zip(items, rows)):
        j = (i + 1) % len(items)
        if "error" in row or "error" in rows[j]:
            continue  # a failed item has no control, and gives none
        swapped = dataclasses.replace(item, question=items[j].question)  # its own context and gold answers
        try:
            row["other_question_answer"] = system.answer(swapped, audios[j], max_new_tokens)["answer"]
        except Exception as e:
            row["other_question_error"] = f"{type(e).__name__}: {e}"


def write_predictions(out: Path, set_name: str, rows: list[dict]) -> None:
    write_jsonl_atomic(out / f"{set_name}.predictions.jsonl", rows)


def run_sweep(system, items, audios, args) -> list[dict]:
    from nemo_aura.scoring.items import QAItem

    seconds = [float(s) for s in args.sweep_seconds.split(",") if s]
    ref = [a for a in audios if a is not None] or load_audios(items, 16000)[0]
    ref = [a for a in ref if a is not None]
    if not ref:
        return []  # no readable audio to build the long inputs from
    result = []
    for spec in sweep_inputs(items, ref, seconds, system.sample_rate):
        probe = QAItem(id=f"sweep-{spec['seconds']}", question=spec["question"], answers=[""], context=None)
        audio = spec["audio"] if system.uses_audio else None
        times, first, tokens = [], [], []
        for _ in range(args.sweep_repeats):
            start = time.perf_counter()
            tokens.append(system.answer(probe, audio, args.max_new_tokens)["answer_tokens"])
            times.append(time.perf_counter() - start)
            start = time.perf_counter()  # the part that grows with the input: front end + prefill
            system.answer(probe, audio, 1)
            first.append(time.perf_counter() - start)
        result.append({"seconds": spec["seconds"], "latency_median_s": statistics.median(times),
                       "first_token_median_s": statistics.median(first), "answer_tokens_median": statistics.median(tokens)})
    return result


if __name__ == "__main__":
    main()
