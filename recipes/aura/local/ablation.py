#!/usr/bin/env python
"""Issue 7 ablation: train each variant of conf/ablation/<name>.yaml from the same model, score it, tabulate.

    python recipes/aura/local/ablation.py --init exp/default/stage3/aura_distilled.nemo \
        --train-cuts exp/default/stage1/lhotse/distill_train_cuts.jsonl.gz --train-cuts .../qa_train_cuts.jsonl.gz \
        --asr-dev .../distill_dev_cuts.jsonl.gz --qa-dev .../qa_dev_cuts.jsonl.gz --out exp/default/ablation \
        [--spec conf/ablation/reading.yaml] [--only a,b] [--steps N] -- <hydra overrides for every variant>

Each variant trains in its own process (``python -m nemo_aura.train --config-name finetune``: checkpoints,
resume after a kill) into ``<out>/<variant>/``, then ``nemo_aura.scoring.reading`` scores it; finished
variants are skipped on rerun. Writes ``results.json``, ``results.md`` and ``results.png`` under ``<out>``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from nemo_aura.parts.manifest import write_cut_mix

ROOT = Path(__file__).resolve().parents[3]


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_variant(name: str, overrides: list[str], args, spec, mix: Path) -> dict:
    vdir = args.out / name
    result_path = vdir / "eval.json"
    if result_path.exists():
        print(f"[ablation] {name}: done before, reusing {result_path}", flush=True)
        return json.loads(result_path.read_text())
    nemo = vdir / "model.nemo"
    steps = args.steps or int(spec.steps)
    t0 = time.time()
    if not nemo.exists():
        cmd = [
            sys.executable, "-m", "nemo_aura.train", "--config-name", "finetune", f"name={name}",
            f"init_from_nemo={args.init}", f"model.train_ds.cuts_path={mix}", f"model.validation_ds.cuts_path={args.qa_dev}",
            f"model.train_ds.batch_duration={spec.batch_duration}", f"model.validation_ds.batch_duration={spec.batch_duration}",
            f"model.optim.lr={spec.lr}", f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
            f"exp_manager.exp_dir={vdir}", f"report.dir={vdir}", f"report.save_nemo={nemo}",
            "report.validate_before=false", *args.overrides, *overrides,
        ]
        print(f"[ablation] {name}: training {steps} steps: {' '.join(overrides) or '(baseline)'}", flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
    train_seconds = time.time() - t0
    from nemo_aura.scoring.reading import evaluate

    print(f"[ablation] {name}: scoring", flush=True)
    result = evaluate(str(nemo), str(args.asr_dev), str(args.qa_dev), args.items, args.text_items)
    result.update(variant=name, overrides=overrides, steps=steps, train_seconds=train_seconds)
    write_atomic(result_path, json.dumps(result, indent=2))
    return result


def table(results: list[dict]) -> str:
    lines = [
        "| variant | overrides | dev WER | dev QA EM | dev QA F1 | text identical | text F1 (adapted / base) | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['variant']} | {' '.join(r['overrides']) or '-'} | {r['asr']['wer']:.3f} | {r['qa']['em']:.3f} | "
            f"{r['qa']['f1']:.3f} | {100 * r['text']['identical']:.0f}% | {r['text']['f1_adapted']:.3f} / "
            f"{r['text']['f1_base']:.3f} | {r['train_seconds']:.0f} |"
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
    tmp = path.with_name("tmp-" + path.name)
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--init", required=True, type=Path, help="the .nemo every variant starts from")
    p.add_argument("--train-cuts", action="append", required=True)
    p.add_argument("--asr-dev", required=True, type=Path)
    p.add_argument("--qa-dev", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--spec", type=Path, default=ROOT / "conf" / "ablation" / "reading.yaml")
    p.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    p.add_argument("--steps", type=int, default=0, help="override the spec's steps")
    p.add_argument("--items", type=int, default=40, help="dev items scored per task")
    p.add_argument("--text-items", type=int, default=20)
    args = p.parse_args(argv)
    args.overrides = overrides
    for path in [args.init, args.asr_dev, args.qa_dev, *map(Path, args.train_cuts), args.spec]:
        if not Path(path).is_file():
            raise SystemExit(f"ablation: '{path}' does not exist")
    spec = OmegaConf.load(args.spec)
    variants = dict(spec.variants)
    chosen = [v for v in args.only.split(",") if v] or list(variants)
    unknown = [v for v in chosen if v not in variants]
    if unknown:
        raise SystemExit(f"ablation: unknown variants {unknown}; {args.spec} has {list(variants)}")
    args.out.mkdir(parents=True, exist_ok=True)
    mix = write_cut_mix(args.train_cuts, args.out / "train_mix.jsonl.gz")  # transcripts (asr) + questions (qa)
    results = [run_variant(v, list(variants[v] or []), args, spec, mix) for v in chosen]
    summary = {"spec": OmegaConf.to_container(spec), "init": str(args.init), "steps": args.steps or int(spec.steps),
               "results": results}
    write_atomic(args.out / "results.json", json.dumps(summary, indent=2))
    md = (f"# Reading ablation\n\nAll variants start from `{args.init}` and train {summary['steps']} steps of "
          f"{spec.batch_duration} s of audio (transcripts + spoken questions); dev WER on {args.items} "
          f"utterances, spoken-QA on {args.items} dev items, text ability on {args.text_items} text questions.\n\n"
          + table(results) + "\n\n![per-variant results](results.png)\n")
    write_atomic(args.out / "results.md", md)
    plot(results, args.out / "results.png")
    print(md)


if __name__ == "__main__":
    main()
