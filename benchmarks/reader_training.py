#!/usr/bin/env python
"""Training steps of the text-QA readers (recipe stage 5), side by side: where the LM head runs, how batches are made.

    python benchmarks/reader_training.py --llm-dir exp/models/smollm2-135m-instruct \
        --train exp/default/stage1/lhotse/qa_train_cuts.jsonl.gz --train exp/default/stage1/lhotse/mf_train_cuts.jsonl.gz \
        --steps 12 --out exp/default/bench_reader_training

Stage 5 trains one reader per front end (``local/finetune_text_qa.py``), each a few hundred steps of forward +
backward of the whole LLM with LoRA on items that are mostly prompt. Two levers, each timed against the loop the
readers used before, on the same items and the same adapter start:

- ``logits``: ``all`` runs the 49k-way LM head at every position (the model's own loss); ``answer`` only where a
  label is learnt (``finetune_text_qa.answer_loss``). The loss must be the same: the largest difference on the
  same batch is reported.
- ``batches``: ``random`` batches of ``--batch-size`` items in random order (padding to the longest), or
  ``grouped`` by length (transformers' ``LengthGroupedSampler``, what ``finetune_text_qa.py`` now uses).

Each variant runs ``--steps`` optimizer steps (AdamW, the readers' lr) after one warm-up step, the variants
interleaved step by step so that drift of the machine hits each alike; the table gives seconds per step, tokens per
step (padding included), the padded fraction, and the speed-up against ``all``/``random``. JSON + Markdown.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "recipes" / "aura" / "local"))

from nemo_aura.parts.files import write_json_atomic, write_text_atomic  # noqa: E402

VARIANTS = [("all", "random"), ("answer", "random"), ("all", "grouped"), ("answer", "grouped")]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--llm-dir", required=True)
    p.add_argument("--train", action="append", required=True, help="QA cuts, as finetune_text_qa.py --train")
    p.add_argument("--steps", type=int, default=12, help="timed steps per variant")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    return p.parse_args(argv)


def batch_orders(lengths: list[int], batch_size: int, steps: int, seed: int) -> dict[str, list[list[int]]]:
    """``steps`` batches of item indices per order: random, and grouped by length as the Trainer groups them."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    g = torch.Generator().manual_seed(seed)
    shuffled = torch.randperm(len(lengths), generator=g).tolist()
    grouped = list(LengthGroupedSampler(batch_size, lengths=lengths, generator=torch.Generator().manual_seed(seed)))
    cut = lambda order: [order[i * batch_size:(i + 1) * batch_size] for i in range(steps + 1)]  # noqa: E731
    return {"random": cut(shuffled), "grouped": cut(grouped)}


def epoch_tokens_per_step(lengths: list[int], batch_size: int, seed: int) -> dict[str, float]:
    """Padded tokens per batch over a whole pass, per order: the timed steps see only the first batches, and the
    length-grouped sampler puts its longest batch first."""
    orders = batch_orders(lengths, batch_size, len(lengths) // batch_size - 1, seed)
    return {name: statistics.mean(max(lengths[i] for i in b) * len(b) for b in batches if b)
            for name, batches in orders.items()}


def full_logits_loss(model, batch: dict) -> torch.Tensor:
    """The model's own causal-LM loss (every position through the LM head): the reference."""
    return model(**batch).loss


def main(argv=None) -> int:
    args = parse_args(argv)
    from peft import get_peft_model

    from finetune_text_qa import ChatExamples, answer_loss, collate, load_examples, reader_lora_config
    from nemo_aura.scoring.systems import TextAnswerer

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    answerer = TextAnswerer.from_dir(args.llm_dir)
    rows = ChatExamples(load_examples(args.train), answerer.formatter).rows
    lengths = [len(r["input_ids"]) for r in rows]
    orders = batch_orders(lengths, args.batch_size, args.steps, args.seed)
    make = collate(answerer.pad_id)
    models, optims = {}, {}
    for logits, order in VARIANTS:  # one adapter per variant, each from the same start (same seed, same LLM)
        torch.manual_seed(args.seed)
        m = get_peft_model(copy.deepcopy(answerer.llm).train(), reader_lora_config(args.r, None))
        models[logits, order] = m
        optims[logits, order] = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=args.lr)
    seconds = {v: [] for v in VARIANTS}
    tokens = {v: [] for v in VARIANTS}
    padded = {v: [] for v in VARIANTS}
    loss_diffs = []
    for step in range(args.steps + 1):
        for v in VARIANTS:
            logits, order = v
            items = [rows[i] for i in orders[order][step]]
            batch = make(items)
            model, optim = models[v], optims[v]
            t0 = time.perf_counter()
            loss = answer_loss(model, batch)[0] if logits == "answer" else full_logits_loss(model, batch)
            loss.backward()
            optim.step()
            optim.zero_grad(set_to_none=True)
            dt = time.perf_counter() - t0
            if step == 0:
                continue  # warm-up
            seconds[v].append(dt)
            tokens[v].append(batch["input_ids"].numel())
            padded[v].append(1 - batch["attention_mask"].sum().item() / batch["input_ids"].numel())
        if step % 4 == 0:
            # the same batch through both losses, same weights: they must agree
            model = models["all", "random"]
            batch = make([rows[i] for i in orders["random"][step]])
            with torch.no_grad():
                loss_diffs.append(abs(full_logits_loss(model, batch).item() - answer_loss(model, batch)[0].item()))
        print(f"[reader-bench] step {step}/{args.steps}: " + ", ".join(
            f"{lo}/{o} {seconds[lo, o][-1]:.2f}s" for lo, o in VARIANTS if seconds[lo, o]), flush=True)
    base = statistics.mean(seconds["all", "random"])
    epoch = epoch_tokens_per_step(lengths, args.batch_size, args.seed)
    per_token = {v: statistics.mean(seconds[v]) / statistics.mean(tokens[v]) for v in VARIANTS}
    # what a whole pass costs per step: the timed seconds per token times the pass's padded tokens per step
    base_epoch = per_token["all", "random"] * epoch["random"]
    table = []
    for logits, order in VARIANTS:
        s = statistics.mean(seconds[logits, order])
        table.append({"logits": logits, "batches": order, "seconds_per_step": round(s, 3),
                      "tokens_per_step": round(statistics.mean(tokens[logits, order]), 1),
                      "padded_fraction": round(statistics.mean(padded[logits, order]), 3),
                      "speedup": round(base / s, 2),
                      "epoch_tokens_per_step": round(epoch[order], 1),
                      "epoch_seconds_per_step": round(per_token[logits, order] * epoch[order], 3),
                      "epoch_speedup": round(base_epoch / (per_token[logits, order] * epoch[order]), 2)})
    result = {"llm_dir": args.llm_dir, "train": args.train, "items": len(rows), "steps": args.steps,
              "batch_size": args.batch_size, "threads": args.threads, "lora_r": args.r,
              "max_loss_difference_answer_vs_all": max(loss_diffs), "variants": table}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "results.json", result)
    lines = ["# Reader training steps: LM head positions and batch order", "",
             f"{len(rows)} items, batches of {args.batch_size}, {args.steps} timed steps per variant (interleaved), "
             f"{args.threads} threads, LoRA r={args.r}. Largest loss difference answer-only vs all logits on the "
             f"same batch: {max(loss_diffs):.2e}.", "",
             "Timed: the first steps of each order. Whole pass: the timed seconds per token times the padded tokens "
             "per step of a whole pass over the items in that order (the grouped sampler starts with its longest "
             "batch, so its first steps are not typical).", "",
             "| logits | batches | s / step (timed) | tokens / step (timed) | padded (timed) | speed-up (timed) | "
             "tokens / step (whole pass) | s / step (whole pass) | speed-up (whole pass) |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['logits']} | {r['batches']} | {r['seconds_per_step']:.3f} | {r['tokens_per_step']:.0f} | "
              f"{r['padded_fraction']:.1%} | {r['speedup']:.2f}x | {r['epoch_tokens_per_step']:.0f} | "
              f"{r['epoch_seconds_per_step']:.3f} | {r['epoch_speedup']:.2f}x |" for r in table]
    write_text_atomic(args.out / "results.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
