#!/usr/bin/env python
"""Latency of an AuRA model before and after folding its LoRA into the LLM (same process, same inputs).

    python benchmarks/merge_lora_latency.py --nemo exp/default/stage5/aura_qa.nemo \
        [--cuts exp/default/stage1/lhotse/qa_test_cuts.jsonl.gz] [--items 20] --out exp/default/bench_merge

Batch 1, greedy, fixed ``max_new_tokens``; median over items after a warm-up; writes JSON + Markdown.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def timed_generate(model, waves, max_new_tokens: int) -> tuple[list[float], list[list[int]]]:
    times, outputs = [], []
    for wave in waves:
        start = time.perf_counter()
        outputs.append(model.generate_ids([wave], task="qa", max_new_tokens=max_new_tokens)[0])
        times.append(time.perf_counter() - start)
    return times, outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nemo", required=True)
    parser.add_argument("--cuts", default=None, help="Lhotse cuts to take audio from (default: synthetic audio)")
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from nemo_aura import AuRAModel

    model = AuRAModel.restore_from(args.nemo, map_location="cpu").eval()
    if args.cuts:
        from lhotse import CutSet

        cuts = CutSet.from_file(args.cuts).subset(first=args.items)
        waves = [torch.from_numpy(c.resample(model.sample_rate).load_audio()[0]) for c in cuts]
    else:
        from nemo_aura.testing import synth_wave

        waves = [torch.from_numpy(synth_wave(i, 2.0 + (i % 3))) for i in range(args.items)]
    timed_generate(model, waves[:2], args.max_new_tokens)  # warm-up
    t_lora, out_lora = timed_generate(model, waves, args.max_new_tokens)
    model.merge_lora()
    timed_generate(model, waves[:2], args.max_new_tokens)
    t_merged, out_merged = timed_generate(model, waves, args.max_new_tokens)
    result = {
        "model": args.nemo, "items": len(waves), "max_new_tokens": args.max_new_tokens, "threads": args.threads,
        "median_s_lora": statistics.median(t_lora), "median_s_merged": statistics.median(t_merged),
        "ratio_merged_vs_lora": statistics.median(t_merged) / statistics.median(t_lora),
        "identical_outputs": sum(a == b for a, b in zip(out_lora, out_merged)) / len(waves),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "merge_lora_latency.json").write_text(json.dumps(result, indent=2))
    (args.out / "merge_lora_latency.md").write_text(
        "| model | median latency (s) |\n|---|---|\n"
        f"| LoRA adapters | {result['median_s_lora']:.4f} |\n| LoRA merged | {result['median_s_merged']:.4f} |\n\n"
        f"merged / adapters = {result['ratio_merged_vs_lora']:.3f}; identical outputs on "
        f"{result['identical_outputs']:.0%} of {len(waves)} items (batch 1, greedy, max_new_tokens={args.max_new_tokens})\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
