#!/usr/bin/env python
"""Peak memory (RSS) of a distillation preset: after imports, after building the model, and after a
few training steps with cached teacher targets and with the teacher online (each in its own process).

    python benchmarks/distill_memory.py --cuts exp/default/stage2/train/cuts.jsonl.gz --out exp/default/bench_memory \
        [-- model=aura_base model.student.pretrained_path=...]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def worker(args) -> dict:
    import torch
    from omegaconf import open_dict

    from nemo_aura.models.aura_model import AuRAModel
    from nemo_aura.parts.memory import current_rss_mib, peak_rss_mib
    from nemo_aura.train import compose_config

    out = {"mode": args.mode, "rss_after_imports_mib": current_rss_mib()}
    cfg = compose_config(args.overrides).model
    with open_dict(cfg):
        cfg.train_ds = {"cuts_path": args.cuts, "batch_duration": args.batch_duration, "shuffle": False, "num_workers": 0}
        cfg.pop("validation_ds", None)
    torch.manual_seed(0)
    model = AuRAModel(cfg)
    out["rss_after_build_mib"] = current_rss_mib()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    for step, batch in enumerate(model._train_dl):
        if args.mode == "online":
            batch = {k: v for k, v in batch.items() if not k.startswith("teacher_target")}
        loss = model.compute_losses(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step + 1 >= args.steps:
            break
    out.update(steps=args.steps, batch_duration=args.batch_duration, peak_rss_mib=peak_rss_mib(),
               parameters=model.parameter_counts())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cuts", required=True)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-duration", type=float, default=120)
    parser.add_argument("--mode", choices=["cached", "online"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.mode:  # inside a worker process
        print(json.dumps(worker(args)))
        return
    results = []
    for mode in ("cached", "online"):
        cmd = [sys.executable, __file__, "--cuts", args.cuts, "--steps", str(args.steps), "--batch-duration",
               str(args.batch_duration), "--mode", mode, "--", *args.overrides]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{mode} worker failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "distill_memory.json").write_text(json.dumps(results, indent=2))
    lines = ["| teacher targets | RSS after imports (MiB) | after model build | peak over training steps |", "|---|---|---|---|"]
    lines += [f"| {r['mode']} | {r['rss_after_imports_mib']:.0f} | {r['rss_after_build_mib']:.0f} | {r['peak_rss_mib']:.0f} |"
              for r in results]
    lines.append(f"\n{args.steps} steps of {args.batch_duration:g} s of audio per batch, each mode in its own process.")
    (args.out / "distill_memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
