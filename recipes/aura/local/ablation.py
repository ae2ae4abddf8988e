#!/usr/bin/env python
"""Issue 7 ablation: train each variant of conf/ablation/<name>.yaml the same way, score it, tabulate.

    python recipes/aura/local/ablation.py --init exp/default/stage3/aura_distilled.nemo \
        --train-cuts exp/default/stage1/lhotse/distill_train_cuts.jsonl.gz --train-cuts .../qa_train_cuts.jsonl.gz \
        --asr-dev .../distill_dev_cuts.jsonl.gz --qa-dev .../qa_dev_cuts.jsonl.gz --out exp/default/ablation \
        [--spec conf/ablation/reading.yaml] [--only a,b] [--steps N] -- <hydra overrides for every variant>

A spec with a ``distill:`` section (conf/ablation/architecture.yaml) first distils each variant from scratch
(``--config-name distill`` on ``--distill-train``'s cached teacher targets, or on the plain cuts with the
teacher online for variants marked ``online_teacher: true``, e.g. another patch rate), then reads as above.
A variant with ``init: <.nemo>`` starts from that model instead of ``--init`` (conf/ablation/data_scale.yaml:
the stage-3 models of the default, default_x2 and default_x4 corpora); when it sits in a recipe exp dir
(``<exp>/<tag>/stage3/``), that tag's corpus size and stage times are reported with it.
Each variant trains in its own process (``python -m nemo_aura.train --config-name finetune``: checkpoints,
resume after a kill) into ``<out>/<variant>/``, then ``score_reading.py`` scores it; finished
variants are skipped on rerun. Writes ``results.json``, ``results.md`` and ``results.png`` under ``<out>``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

from omegaconf import OmegaConf

from nemo_aura.parts.files import atomic_path, write_json_atomic, write_text_atomic
from nemo_aura.parts.manifest import write_cut_mix
from train_run import training_command

ROOT = Path(__file__).resolve().parents[3]


def timed_run(cmd: list[str], ledger: Path) -> None:
    """Run a training subprocess; append its wall time to ``ledger`` (a resumed run adds its part)."""
    t0 = time.time()
    try:
        subprocess.run(cmd, check=True, cwd=ROOT)
    finally:
        ledger.parent.mkdir(parents=True, exist_ok=True)
        with open(ledger, "a") as f:
            f.write(f"{time.time() - t0:.1f}\n")


def distill_variant(name: str, overrides: list[str], online_teacher: bool, args, spec) -> Path:
    """Phase 1 of an architecture variant: distillation from scratch, the early-stopped forward."""
    vdir = args.out / name
    distilled = vdir / "distilled.nemo"
    if distilled.exists():
        return distilled
    train_cuts, dev_cuts = (args.train_cuts[0], args.asr_dev) if online_teacher else (args.distill_train, args.distill_dev)
    if train_cuts is None or dev_cuts is None:
        raise SystemExit(f"ablation: variant {name} distils from scratch: give --distill-train and --distill-dev")
    d = spec.distill
    cmd = training_command("distill", train_cuts, dev_cuts, vdir / "distill", distilled, name=f"{name}_distill",
                           report_dir=vdir / "distill", overrides=[
        f"model.train_ds.batch_duration={d.batch_duration}", f"model.validation_ds.batch_duration={d.batch_duration}",
        f"trainer.max_steps={d.steps}", f"trainer.val_check_interval={d.steps}", "report.validate_before=false",
        *args.overrides, *overrides])
    print(f"[ablation] {name}: distilling {d.steps} steps from scratch: {' '.join(overrides) or '(baseline)'}", flush=True)
    timed_run(cmd, vdir / "train_seconds.txt")
    return distilled


class Variant(NamedTuple):
    """One entry of a spec's ``variants:``: a list of overrides, or a mapping with the keys below."""

    overrides: list[str]
    online_teacher: bool = False
    steps_factor: float = 1.0  # x the spec's steps; 0 = no training, score ``init`` as it is
    init: Path | None = None  # its own start model instead of --init


def parse_variant(name: str, entry) -> Variant:
    entry = OmegaConf.to_container(entry) if entry is not None else []
    if not isinstance(entry, dict):
        return Variant(list(entry))
    unknown = set(entry) - set(Variant._fields)
    if unknown:
        raise SystemExit(f"ablation: variant {name}: unknown keys {sorted(unknown)} (expected {', '.join(Variant._fields)})")
    init = Path(entry["init"]) if entry.get("init") else None
    if float(entry.get("steps_factor", 1)) == 0 and init is None:
        raise SystemExit(f"ablation: variant {name} has steps_factor 0 (score its init as it is) but no init")
    if init is not None and not init.is_file():
        raise SystemExit(f"ablation: variant {name} starts from '{init}', which does not exist "
                         "(build it first, e.g. its preset's stages 1-3)")
    return Variant(list(entry.get("overrides") or []), bool(entry.get("online_teacher")),
                   float(entry.get("steps_factor", 1)), init)


def run_variant(name: str, variant: Variant, args, spec, mix: Path) -> dict:
    overrides, online_teacher, factor, own_init = variant
    vdir = args.out / name
    result_path = vdir / "eval.json"
    if result_path.exists() and not args.rescore:
        print(f"[ablation] {name}: done before, reusing {result_path}", flush=True)
        return json.loads(result_path.read_text())
    score_only = factor == 0  # the init as it is (e.g. a recipe stage-5 model): a point of a budget curve
    nemo = own_init if score_only else vdir / "model.nemo"
    steps = 0 if score_only else max(1, round((args.steps or int(spec.steps)) * factor))  # the same lever, a larger budget
    from_scratch = spec.get("distill") is not None
    init = distill_variant(name, overrides, online_teacher, args, spec) if from_scratch else own_init or args.init
    read_overrides = [] if from_scratch else overrides  # architecture variants differ in phase 1 only
    if not score_only and not nemo.exists():
        cmd = training_command("finetune", mix, args.qa_dev, vdir, nemo, init=init, name=name, report_dir=vdir, overrides=[
            f"model.train_ds.batch_duration={spec.batch_duration}", f"model.validation_ds.batch_duration={spec.batch_duration}",
            f"model.optim.lr={spec.lr}", f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
            "report.validate_before=false", *args.overrides, *read_overrides])
        print(f"[ablation] {name}: training {steps} steps: {' '.join(overrides) or '(baseline)'}", flush=True)
        timed_run(cmd, vdir / "train_seconds.txt")
    ledger = vdir / "train_seconds.txt"
    train_seconds = sum(float(x) for x in ledger.read_text().split()) if ledger.exists() else None
    from score_reading import evaluate

    print(f"[ablation] {name}: scoring", flush=True)
    result = evaluate(str(nemo), str(args.asr_dev), str(args.qa_dev), args.items, args.text_items)
    result.update(variant=name, overrides=overrides, steps=steps, train_seconds=train_seconds)
    if from_scratch:  # phase 1's own measure: dev cosine of the student's layers to the teacher's
        after = json.loads((vdir / "distill" / "validation_after.json").read_text())
        cos = [v for k, v in after.items() if k.startswith("val_distill_cos_layer")]
        result["distill"] = {"mean_cos": sum(cos) / len(cos), "per_layer_cos": after}
    if own_init is not None:
        result["init"] = str(own_init)
        result["corpus"] = recipe_corpus(own_init)
    write_json_atomic(result_path, result)
    return result


def recipe_corpus(nemo: Path) -> dict | None:
    """Size and cost of the corpus a recipe stage-3 model (``<exp>/<tag>/stage3/*.nemo``) was distilled on:
    stage 1's distillation-train utterances and hours, stage 2's teacher targets computed vs linked, and the
    recorded wall seconds of stages 1-3 (None outside a recipe exp dir)."""
    exp = nemo.resolve().parent.parent
    summary, cache = exp / "stage1" / "summary.json", exp / "stage2" / "train" / "cache.json"
    if not summary.is_file():
        return None
    train = json.loads(summary.read_text())["subsets"]["distill_train"]
    out = {"tag": exp.name, "utterances": train["utterances"], "hours": train["hours"], "stage_seconds": {}}
    if cache.is_file():
        meta = json.loads(cache.read_text())
        out["teacher_targets"] = {"computed": meta.get("computed_now"), "linked": meta.get("linked_from_other_cache", 0)}
    times = exp / "stage_times.tsv"
    for line in times.read_text().splitlines() if times.is_file() else []:
        _, stage, secs, *_ = line.split("\t")
        if stage in {"1", "2", "3"}:  # a stage rerun appends: the sum is the CPU wall time spent on it
            out["stage_seconds"][stage] = out["stage_seconds"].get(stage, 0) + int(float(secs))
    return out


def corpus_cell(corpus: dict | None) -> str:
    if not corpus:
        return "-"
    t = corpus.get("stage_seconds", {})
    return (f"{corpus['tag']}: {corpus['utterances']} utts, {corpus['hours']:.2f} h; stages 1/2/3 "
            f"{t.get('1', '-')}/{t.get('2', '-')}/{t.get('3', '-')} s")


def seconds(value) -> str:
    return "-" if value is None else f"{value:.0f}"


def mismatched(asr: dict) -> str:
    """The hypotheses' WER against other utterances' transcripts: equal to the dev WER when the output ignores the audio."""
    return "-" if asr.get("wer_mismatched") is None else f"{asr['wer_mismatched']:.3f}"


def reading_steps(result: dict) -> int | None:
    """Fine-tuning steps the scored model has had in all (its training history without the distillation runs:
    ``distill``, ``distill_more``, ``<variant>_distill``)."""
    history = result.get("training_history")
    return None if history is None else sum(e["steps"] for e in history if "distill" not in e["name"])


def steps_cell(result: dict) -> str:
    total = reading_steps(result)
    return f"{result['steps']}" + ("" if total in (None, result["steps"]) else f" ({total} in all)")


def other_question(qa: dict) -> str:
    """Dev QA F1 with another item's spoken question (same context and gold): equal to the F1 when it is not heard."""
    return "-" if qa.get("f1_other_question") is None else f"{qa['f1_other_question']:.3f}"


def table(results: list[dict]) -> str:
    distilled = any(r.get("distill") for r in results)  # from-scratch specs: phase 1's dev cosine
    budgets = len({steps_cell(r) for r in results}) > 1  # a steps column only when the budgets differ
    corpora = any(r.get("corpus") for r in results)  # data-scale specs: which corpus the start model saw
    lines = [
        "| variant | overrides | " + ("distillation corpus | " if corpora else "") + ("steps | " if budgets else "") +
        ("distill dev cos | " if distilled else "") +
        "dev WER | WER vs other utterances | dev QA EM | dev QA F1 | QA F1 with another spoken question | text identical | "
        "text F1 (adapted / base) | train s |",
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if distilled else "") + ("---|" if budgets else "") +
        ("---|" if corpora else ""),
    ]
    for r in results:
        cos = (f"{r['distill']['mean_cos']:.3f} | " if r.get("distill") else "- | ") if distilled else ""
        steps = f"{steps_cell(r)} | " if budgets else ""
        corpus = f"{corpus_cell(r.get('corpus'))} | " if corpora else ""
        lines.append(
            f"| {r['variant']} | {' '.join(r['overrides']) or '-'} | {corpus}{steps}{cos}{r['asr']['wer']:.3f} | "
            f"{mismatched(r['asr'])} | {r['qa']['em']:.3f} | "
            f"{r['qa']['f1']:.3f} | {other_question(r['qa'])} | {100 * r['text']['identical']:.0f}% | {r['text']['f1_adapted']:.3f} / "
            f"{r['text']['f1_base']:.3f} | {seconds(r['train_seconds'])} |"
        )
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["variant"] for r in results]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, (title, values) in zip(axes, [
        ("dev WER (lower is better)", [r["asr"]["wer"] for r in results]),
        ("dev spoken-QA F1", [r["qa"]["f1"] for r in results]),
        ("text answers identical to base LLM", [r["text"]["identical"] for r in results]),
    ]):
        ax.bar(range(len(names)), values, color="tab:blue")
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--init", type=Path, help="the .nemo every variant starts from (specs without 'distill:')")
    p.add_argument("--distill-train", type=Path, help="cached-target cuts for from-scratch variants (stage2/train)")
    p.add_argument("--distill-dev", type=Path, help="cached-target dev cuts (stage2/dev)")
    p.add_argument("--train-cuts", action="append", required=True)
    p.add_argument("--asr-dev", required=True, type=Path)
    p.add_argument("--qa-dev", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--spec", type=Path, default=ROOT / "conf" / "ablation" / "reading.yaml")
    p.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    p.add_argument("--steps", type=int, default=0, help="override the spec's steps")
    p.add_argument("--items", type=int, default=40, help="dev items scored per task")
    p.add_argument("--text-items", type=int, default=20)
    p.add_argument("--rescore", action="store_true", help="score finished variants again (models are reused)")
    args = p.parse_args(argv)
    args.overrides = overrides
    spec = OmegaConf.load(args.spec)
    variants = dict(spec.variants)
    chosen = [v for v in args.only.split(",") if v] or list(variants)
    unknown = [v for v in chosen if v not in variants]
    if unknown:
        raise SystemExit(f"ablation: unknown variants {unknown}; {args.spec} has {list(variants)}")
    parsed = {v: parse_variant(v, variants[v]) for v in chosen}
    need_init = sorted(v for v in chosen if parsed[v].init is None)
    if spec.get("distill") is None and args.init is None and need_init:
        raise SystemExit(f"ablation: {args.spec}'s variants {need_init} start from --init; give it")
    for path in [args.init, args.distill_train, args.distill_dev, args.asr_dev, args.qa_dev, *args.train_cuts, args.spec]:
        if path is not None and not Path(path).is_file():
            raise SystemExit(f"ablation: '{path}' does not exist")
    args.out.mkdir(parents=True, exist_ok=True)
    mix = write_cut_mix(args.train_cuts, args.out / "train_mix.jsonl.gz")  # transcripts (asr) + questions (qa)
    ran = {v: run_variant(v, parsed[v], args, spec, mix) for v in chosen}
    # variants of this spec finished by an earlier (e.g. --only) run stay in its table
    results = [ran[v] if v in ran else json.loads((args.out / v / "eval.json").read_text())
               for v in variants if v in ran or (args.out / v / "eval.json").exists()]
    start = (f"are distilled from scratch ({spec.distill.steps} steps of {spec.distill.batch_duration} s), then"
             if spec.get("distill") is not None else
             f"start from `{args.init}` (or their own `init`) and" if args.init else "start from their own `init` model and")
    base_steps = args.steps or int(spec.steps)
    summary = {
        "spec_name": args.spec.stem, "spec": OmegaConf.to_container(spec), "steps": base_steps,
        "protocol": (f"All variants {start} train {base_steps} steps (times a variant's "
                     f"steps_factor, if it has one) of {spec.batch_duration} s of "
                     f"audio (transcripts + spoken questions); dev WER on {args.items} utterances, spoken-QA on "
                     f"{args.items} dev items, text ability on {args.text_items} text questions. 'WER vs other "
                     "utterances' scores the same hypotheses against other dev utterances' transcripts: as low as the "
                     "dev WER when the output ignores the audio."),
        "results": results,
    }
    write_json_atomic(args.out / f"results_{args.spec.stem}.json", summary)
    print(write_report(args.out))


def write_report(out: Path) -> str:
    """``results.{json,md,png}`` over every spec run into ``out`` (``results_<spec>.json``), one table per spec."""
    specs = [json.loads(p.read_text()) for p in sorted(out.glob("results_*.json"))]
    write_json_atomic(out / "results.json", {"specs": specs})
    md = "# Reading ablation\n\n" + "".join(
        f"## {s['spec_name']}\n\n{s['protocol']}\n\n{table(s['results'])}\n\n" for s in specs
    ) + "![per-variant results](results.png)\n"
    write_text_atomic(out / "results.md", md)
    plot([r for s in specs for r in s["results"]], out / "results.png")
    return md


if __name__ == "__main__":
    main()
