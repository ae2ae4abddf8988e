#!/usr/bin/env python
"""Does a system hear? Scores on sets that need the spoken question (recipe stage 6b; dev checks of stage 7).

    python recipes/aura/local/score_hearing.py --set mf_test=exp/default/stage1/lhotse/mf_test_cuts.jsonl.gz \
        --set closed_book=exp/default/stage1/lhotse/qa_test_cuts.jsonl.gz:closed_book \
        --systems topline,oracle_repeat,oracle_collapsed,aura --aura model.nemo --llm-dir exp/models/smollm2-135m-instruct \
        --out exp/default/hearing [--limit 60]

Per system and set: EM and F1 with the item's own question, F1 with its *control* question (multi-fact items: the
paired question about another entity of the same context, custom ``control``; other sets: the next item's
question), with the same context and gold; **hearing** = F1 own - F1 control with a 95% paired-bootstrap interval.
A system that ignores the question has hearing ~0 whatever its F1. Speech systems also transcribe each utterance:
WER against its own transcript and against other utterances' (the next item's), and the share of distinct
transcripts; the topline's "transcripts" are the LLM's replies to the same ASR prompt with the question's text in place
of the audio (the WER ceiling of any span the upper layers read as text). ``PATH:closed_book`` keeps only the closed-book items of a spoken-QA set. Writes
``results.{json,md}`` and ``hearing.png``; a system already scored (``systems/<name>.json``) is not rerun.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from nemo_aura.parts.files import write_json_atomic, write_text_atomic
from nemo_aura.scoring.items import QAItem, is_closed_book, load_items, split_set_spec
from nemo_aura.scoring.metrics import exact_match, normalize_answer, paired_bootstrap_interval, token_f1, wer


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", action="append", required=True, metavar="NAME=PATH[:closed_book]")
    p.add_argument("--systems", default="topline,oracle_repeat,oracle_collapsed,aura")
    p.add_argument("--aura", default=None, help="the AuRA .nemo (aura, and the oracles' LLM, K and patch rate)")
    p.add_argument("--llm-dir", default=None)
    p.add_argument("--asr", default=None, help="the cascade's ASR (a Whisper dir or a .nemo)")
    p.add_argument("--reader-dir", default=None,
                   help="the fine-tuned text-QA reader (finetune_text_qa.py): topline_ft, and the speech *_ft rows "
                        "without their own reader")
    p.add_argument("--cascade-reader-dir", default=None,
                   help="cascade_ft's reader instead of --reader-dir (one trained on the cascade ASR's transcripts, "
                        "finetune_text_qa.py --questions-from-asr)")
    p.add_argument("--aura-reader-dir", default=None,
                   help="aura_ctc_ft's reader instead of --reader-dir (one trained on AuRA's CTC transcripts)")
    p.add_argument("--bridge", default=None, help="the bridge .nemo (bridge, bridge_ctc_ft)")
    p.add_argument("--bridge-reader-dir", default=None,
                   help="bridge_ctc_ft's reader instead of --reader-dir (one trained on the bridge's CTC transcripts)")
    p.add_argument("--asr-window-seconds", default="",
                   help="the cascade's Whisper encodes the shortest of these windows that holds the audio instead of "
                        "the padded 30 s (as score_benchmark.py's); empty: 30 s")
    p.add_argument("--asr-context-prompt", action="store_true",
                   help="the cascade's Whisper is prompted with each item's context (as a CTC read boosts its words)")
    p.add_argument("--limit", type=int, default=None, help="items per set (pairs kept whole)")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    return p.parse_args(argv)


def load_set(spec: str, limit: int | None) -> tuple[str, list[QAItem], list[str]]:
    """(name, items, control id of each item). Multi-fact cuts name their control; otherwise the next item is it."""
    name, path, closed_only = split_set_spec(spec, "--set")
    items = load_items(path)
    if closed_only:
        items = [i for i in items if is_closed_book(i._cut)] if items and items[0]._cut else []
        if not items:
            raise SystemExit(f"--set {spec!r}: no closed-book items (custom closed_book) in {path}")
    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        raise SystemExit(f"--set {spec!r}: duplicate item ids in {path}")
    if limit:
        items = items[:limit]
    by_id = {i.id: i for i in items}
    controls = []
    for n, item in enumerate(items):
        control = ((item._cut.custom or {}).get("control") if item._cut is not None else None)
        if control not in by_id:  # no pair (or cut off by --limit): the next item's question
            control = items[(n + 1) % len(items)].id
        controls.append(control)
    return name, items, controls


def score_item(system, item: QAItem, control: QAItem, audio: dict, max_new_tokens: int) -> dict:
    own = system.answer(item, audio.get(item.id), max_new_tokens)["answer"]
    swapped = dataclasses.replace(item, question=control.question)  # own context and gold, the other question
    other = system.answer(swapped, audio.get(control.id), max_new_tokens)["answer"]
    row = {"id": item.id, "control": control.id, "question": item.question, "gold": item.answers,
           "answer": own, "answer_control": other, "f1": token_f1(own, item.answers),
           "f1_control": token_f1(other, item.answers), "em": exact_match(own, item.answers)}
    if system.uses_audio:
        row["transcript"] = system.transcribe(audio[item.id], item.context)
    elif getattr(system, "asr_ceiling", False):  # the topline: the transcription ceiling of a text-like span
        row["transcript"] = system.transcribe_text(item.question)
    return row


def score_system(system, items: list[QAItem], controls: list[str], max_new_tokens: int) -> dict:
    """Per-item rows: own and control answers with their F1/EM; transcripts for speech systems. An item whose own or
    control audio fails to load, or whose answer raises (e.g. audio over the model's limit), is a row with an
    ``error``: it is listed, not scored, and the other items go on."""
    from benchmark_worker import load_audios  # stage 6's loader: a file that fails is that item's error

    by_id = {i.id: i for i in items}
    loaded, failed = load_audios(items, system.sample_rate if system.uses_audio else None)
    audio = {i.id: a for i, a in zip(items, loaded) if a is not None}
    errors = {items[n].id: e for n, e in failed.items()}
    rows = []
    for item, control_id in zip(items, controls):
        error = errors.get(item.id) or (f"control {control_id}: {errors[control_id]}" if control_id in errors else None)
        if error is None:
            try:
                rows.append(score_item(system, item, by_id[control_id], audio, max_new_tokens))
                continue
            except Exception as e:
                error = f"answer: {type(e).__name__}: {e}"
        rows.append({"id": item.id, "control": control_id, "question": item.question, "gold": item.answers,
                     "error": error})
    return {"rows": rows}


def contains_gold(prediction: str, answers: list[str]) -> float:
    """1 when a gold answer appears in the prediction (SQuAD-normalised, as whole words): the base LLM answers in
    sentences ("Jasmine drives a pink van."), which token F1 scores low however right they are."""
    pred = f" {normalize_answer(prediction)} "
    return float(any(normalize_answer(a) and f" {normalize_answer(a)} " in pred for a in answers))


def summarize(rows: list[dict]) -> dict:
    """Scores over the items that were answered; the failed ones by id (``failed_ids``)."""
    failed = [r["id"] for r in rows if "error" in r]
    rows = [r for r in rows if "error" not in r]
    if not rows:
        raise SystemExit(f"no item was answered ({len(failed)} failed: {failed[:5]}...); see the rows' 'error'")
    f1 = [r["f1"] for r in rows]
    f1c = [r["f1_control"] for r in rows]
    acc = [contains_gold(r["answer"], r["gold"]) for r in rows]
    accc = [contains_gold(r["answer_control"], r["gold"]) for r in rows]
    out = {"items": len(rows), "failed_ids": failed, "em": float(np.mean([r["em"] for r in rows])), "f1": float(np.mean(f1)),
           "f1_control": float(np.mean(f1c)), "hearing": float(np.mean(f1) - np.mean(f1c)),
           "hearing_ci": paired_bootstrap_interval(f1, f1c, statistic="difference"),
           "acc": float(np.mean(acc)), "acc_control": float(np.mean(accc)),
           "hearing_acc": float(np.mean(acc) - np.mean(accc)),
           "hearing_acc_ci": paired_bootstrap_interval(acc, accc, statistic="difference")}
    hyps = [r.get("transcript") for r in rows]
    if rows and all(h is not None for h in hyps):
        refs = [r["question"] for r in rows]
        out["wer"] = wer(hyps, refs)
        out["wer_other"] = wer(hyps, refs[1:] + refs[:1]) if len(refs) > 1 else None
        out["distinct_transcripts"] = len(set(hyps)) / len(hyps)
    return out


def to_markdown(results: dict) -> str:
    lines = ["# Hearing: the item's own spoken question vs a question about another entity of the same context", "",
             "Accuracy: a gold answer appears in the answer. Hearing: own minus control (95% paired-bootstrap interval).", "",
             "| set | system | items | EM | F1 | F1 control | hearing F1 [95% CI] | acc | acc control | hearing acc [95% CI] "
             "| WER | WER vs other | distinct |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def ci_text(ci):
        return f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else ""

    for set_name, systems in results["sets"].items():
        for name, r in systems.items():
            fmt = lambda k: "-" if r.get(k) is None else f"{r[k]:.3f}"  # noqa: E731
            lines.append(f"| {set_name} | {name} | {r['items']} | {r['em']:.3f} | {r['f1']:.3f} | {r['f1_control']:.3f} | "
                         f"{r['hearing']:+.3f}{ci_text(r.get('hearing_ci'))} | {fmt('acc')} | {fmt('acc_control')} | "
                         f"{r['hearing_acc']:+.3f}{ci_text(r.get('hearing_acc_ci'))} | {fmt('wer')} | {fmt('wer_other')} | "
                         f"{fmt('distinct_transcripts')} |")
    failed = [f"{name} on {set_name}: {len(r['failed_ids'])} ({', '.join(r['failed_ids'])})"
              for set_name, systems in results["sets"].items() for name, r in systems.items() if r.get("failed_ids")]
    if failed:
        lines += ["", "Items that failed (an `error` in `systems/<name>.json`; not scored): " + "; ".join(failed) + "."]
    lines += ["", f"Models: {json.dumps(results['paths'])}", ""]
    return "\n".join(lines)


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(results["sets"])
    systems = sorted({s for v in results["sets"].values() for s in v})
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 + 1.4 * len(sets) * max(1, len(systems)) / 3), 3.6))
    width = 0.8 / max(len(systems), 1)
    for k, name in enumerate(systems):
        xs, ys, lo, hi = [], [], [], []
        for j, set_name in enumerate(sets):
            r = results["sets"][set_name].get(name)
            if r is None:
                continue
            ci = r.get("hearing_ci") or (r["hearing"], r["hearing"])
            xs.append(j + k * width)
            ys.append(r["hearing"])
            lo.append(r["hearing"] - ci[0])
            hi.append(ci[1] - r["hearing"])
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=name)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks([j + width * (len(systems) - 1) / 2 for j in range(len(sets))], sets)
    ax.set_ylabel("F1 own - F1 other question")
    ax.set_title("Hearing (95% paired-bootstrap CI)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = out / ".hearing.tmp.png"
    fig.savefig(tmp, dpi=120)
    tmp.replace(out / "hearing.png")
    plt.close(fig)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    from nemo_aura.scoring.systems import build_system, parse_window_seconds

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sets = [load_set(s, args.limit) for s in args.set]
    paths = {"llm_dir": args.llm_dir, "asr": args.asr, "aura": args.aura, "reader_dir": args.reader_dir,
             "cascade_reader_dir": args.cascade_reader_dir, "aura_reader_dir": args.aura_reader_dir,
             "bridge": args.bridge, "bridge_reader_dir": args.bridge_reader_dir,
             "asr_window_seconds": parse_window_seconds(args.asr_window_seconds),
             "asr_context_prompt": args.asr_context_prompt}
    (args.out / "systems").mkdir(parents=True, exist_ok=True)
    results = {"paths": paths, "sets": {name: {} for name, _, _ in sets}}
    for name in [s for s in args.systems.split(",") if s]:
        done = args.out / "systems" / f"{name}.json"
        if done.exists():
            scored = json.loads(done.read_text())
        else:
            t0 = time.perf_counter()
            system = build_system(name, paths)
            if hasattr(system, "reuse_transcripts"):  # untimed: the cascade transcribes each utterance once
                system.reuse_transcripts = True
            scored = {}
            for set_name, items, controls in sets:
                scored[set_name] = score_system(system, items, controls, args.max_new_tokens)
                print(f"[hearing] {name} {set_name}: {json.dumps(summarize(scored[set_name]['rows']))}", flush=True)
            scored["seconds"] = time.perf_counter() - t0
            write_json_atomic(done, scored)
            del system
        for set_name, _, _ in sets:
            if set_name not in scored:
                raise SystemExit(f"{done} lacks set {set_name!r}: delete it to rescore {name}")
            results["sets"][set_name][name] = summarize(scored[set_name]["rows"])
    write_json_atomic(args.out / "results.json", results)
    write_text_atomic(args.out / "results.md", to_markdown(results))
    plot(results, args.out)
    print(to_markdown(results))
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
