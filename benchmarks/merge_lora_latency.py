#!/usr/bin/env python
"""Latency of an AuRA model before and after folding its LoRA into the LLM (one process, same inputs).

    python benchmarks/merge_lora_latency.py --nemo exp/default/stage5/aura_qa.nemo \
        [--cuts exp/default/stage1/lhotse/qa_test_cuts.jsonl.gz] [--items 8] [--repeats 3] --out exp/default/bench_merge

Any AuRA ``.nemo`` with LoRA adapters works (full or encoder-free). Both models are restored side by
side; each item is timed on both, alternating, ``--repeats`` times after a warm-up, so drift hits both
alike. Batch 1, greedy, exactly ``--max-new-tokens`` new tokens (``min_new_tokens`` too, so an early
stop cannot favour either side). Reports medians, their ratio and output agreement; writes JSON + Markdown.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def timed(model, wave, max_new_tokens: int) -> tuple[float, list[int]]:
    start = time.perf_counter()
    ids = model.generate_ids([wave], task="qa", max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens)[0]
    return time.perf_counter() - start, ids


def load_waves(args, sample_rate: int) -> list[torch.Tensor]:
    if args.cuts:
        from lhotse import CutSet

        cuts = CutSet.from_file(args.cuts).subset(first=args.items)
        return [torch.from_numpy(c.resample(sample_rate).load_audio()[0]) for c in cuts]
    from nemo_aura.testing import synth_wave

    return [torch.from_numpy(synth_wave(i, 2.0 + (i % 3), sample_rate)) for i in range(args.items)]


def measure(models: dict, waves: list, repeats: int, max_new_tokens: int) -> tuple[dict, dict]:
    for model in models.values():  # warm-up
        timed(model, waves[0], max_new_tokens)
    times = {name: [] for name in models}
    outputs = {name: [] for name in models}
    for wave in waves:
        for r in range(repeats):
            for name, model in models.items():
                seconds, ids = timed(model, wave, max_new_tokens)
                times[name].append(seconds)
                if r == 0:
                    outputs[name].append(ids)
    return times, outputs


def write_report(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "merge_lora_latency.json").write_text(json.dumps(result, indent=2))
    (out / "merge_lora_latency.md").write_text(
        f"LoRA merge latency: `{result['model']}` ({result['items']} items x {result['repeats']} repeats, batch 1, "
        f"greedy, {result['max_new_tokens']} new tokens, {result['threads']} CPU threads)\n\n"
        "| model | median latency (s) | median per token (ms) |\n|---|---|---|\n"
        f"| LoRA adapters | {result['median_s_lora']:.4f} | {1000 * result['median_s_lora'] / result['max_new_tokens']:.2f} |\n"
        f"| LoRA merged | {result['median_s_merged']:.4f} | {1000 * result['median_s_merged'] / result['max_new_tokens']:.2f} |\n\n"
        f"merged / adapters = {result['ratio_merged_vs_lora']:.3f}; identical outputs on "
        f"{result['identical_outputs']:.0%} of items\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nemo", required=True, help="any AuRA .nemo with LoRA adapters")
    parser.add_argument("--cuts", default=None, help="Lhotse cuts to take audio from (default: synthetic audio)")
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from nemo_aura import AuRAModel

    if not Path(args.nemo).is_file():
        parser.error(f"--nemo: '{args.nemo}' does not exist")
    lora = AuRAModel.restore_from(args.nemo, map_location="cpu").eval()
    merged = AuRAModel.restore_from(args.nemo, map_location="cpu").eval().merge_lora()
    waves = load_waves(args, lora.sample_rate)
    times, outputs = measure({"lora": lora, "merged": merged}, waves, args.repeats, args.max_new_tokens)
    result = {
        "model": args.nemo, "items": len(waves), "repeats": args.repeats, "max_new_tokens": args.max_new_tokens,
        "threads": args.threads, "lora_layers": lora.cfg.lora.get("num_layers") or lora.cfg.lora.get("layers"),
        "llm_layers": lora.num_llm_layers,
        "median_s_lora": statistics.median(times["lora"]), "median_s_merged": statistics.median(times["merged"]),
        "ratio_merged_vs_lora": statistics.median(times["merged"]) / statistics.median(times["lora"]),
        "identical_outputs": sum(a == b for a, b in zip(outputs["lora"], outputs["merged"])) / len(waves),
    }
    write_report(result, args.out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
