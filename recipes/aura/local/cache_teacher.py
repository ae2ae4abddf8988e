#!/usr/bin/env python
"""Stage 2: run the frozen teacher once over the distillation cuts; cache pooled per-layer targets.

Also times a distillation pass over the same utterances with the cache and with the teacher online
(one process, same batches) and writes ``cache_benchmark.{json,md}``.

    python recipes/aura/local/cache_teacher.py --cuts train=exp/t/stage1/... --cuts dev=... \
        --out exp/t/stage2 -- model=aura_base model.student.pretrained_path=...
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from lhotse import CutSet
from omegaconf import open_dict

from nemo_aura.data.dataset import AuRADataset
from nemo_aura.data.teacher_cache import build_teacher_cache
from nemo_aura.models.aura_model import AuRAModel
from nemo_aura.parts.files import write_json_atomic, write_text_atomic
from nemo_aura.train import compose_config


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cuts", action="append", required=True, metavar="NAME=PATH",
                        help="a CutSet to cache, e.g. train=.../distill_train_cuts.jsonl.gz (repeatable)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--bench-utts", type=int, default=48, help="0 disables the cache-vs-online timing")
    parser.add_argument("--reuse-from", type=Path, default=None,
                        help="another stage-2 directory: its NAME/ caches (same teacher config) give the arrays of "
                             "the same audio, which are linked instead of recomputed (data-scale presets)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the distill config (model=..., model.*=...)")
    return parser.parse_args()


def build_model(overrides: list[str]) -> AuRAModel:
    cfg = compose_config(overrides).model
    with open_dict(cfg):  # no dataloaders here: this stage only needs the teacher and the patch grid
        cfg.pop("train_ds", None)
        cfg.pop("validation_ds", None)
    torch.manual_seed(0)
    return AuRAModel(cfg)


def time_pass(model: AuRAModel, batches: list[dict]) -> float:
    """Seconds for forward + backward + optimizer step over ``batches`` (a distillation pass)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    model.train()
    start = time.perf_counter()
    for batch in batches:
        loss = model.compute_losses(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def benchmark(model: AuRAModel, cached: CutSet, num_cuts: int, batch_size: int, epoch_cuts: int) -> dict:
    """Same cuts and batches, cache vs online teacher; both warmed up, then timed in this process, back to back."""
    dataset = AuRADataset(prompts=model.prompts, sample_rate=model.sample_rate, pad_id=model.pad_id)
    cuts = cached.subset(first=min(num_cuts, len(cached))).to_eager()
    groups = [CutSet.from_cuts(list(cuts)[i : i + batch_size]) for i in range(0, len(cuts), batch_size)]
    with_cache = [dataset[g] for g in groups]
    online = [{k: v for k, v in b.items() if not k.startswith("teacher_target")} for b in with_cache]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for warm_up in (online[:1], with_cache[:1]):  # both paths warm (the teacher's first pass is the slowest)
        time_pass(model, warm_up)
        model.load_state_dict(state)
    t_online = time_pass(model, online)
    model.load_state_dict(state)
    t_cache = time_pass(model, with_cache)
    model.load_state_dict(state)
    scale = epoch_cuts / len(cuts)
    return {
        "utterances_timed": len(cuts), "batch_size": batch_size, "audio_seconds_timed": round(sum(c.duration for c in cuts), 1),
        "seconds_online_teacher": round(t_online, 2), "seconds_cached_targets": round(t_cache, 2),
        "speedup": round(t_online / t_cache, 2), "epoch_utterances": epoch_cuts,
        "epoch_seconds_online_estimate": round(t_online * scale, 1), "epoch_seconds_cached_estimate": round(t_cache * scale, 1),
    }


def main() -> None:
    args = parse_args()
    model = build_model(args.overrides)
    manifests = {}
    for spec in args.cuts:
        name, _, path = spec.partition("=")
        if not path or not Path(path).is_file():
            raise FileNotFoundError(f"--cuts {spec!r}: expected NAME=PATH to an existing CutSet manifest")
        start = time.time()
        other = args.reuse_from / name if args.reuse_from is not None and (args.reuse_from / name / "cache.json").is_file() else None
        manifests[name] = build_teacher_cache(model, CutSet.from_file(path), args.out / name, args.batch_size, reuse_from=other)
        meta = json.loads((args.out / name / "cache.json").read_text())
        print(f"[stage2] {name}: {meta['num_cuts']} cuts cached in {args.out / name} "
              f"({meta['bytes'] / 2**20:.1f} MiB fp16; {meta.get('linked_from_other_cache', 0)} linked from "
              f"{args.reuse_from}; {time.time() - start:.1f} s this run)")
    bench_json = args.out / "cache_benchmark.json"
    if args.bench_utts > 0 and not bench_json.exists():
        train = CutSet.from_file(manifests["train"] if "train" in manifests else next(iter(manifests.values())))
        result = benchmark(model, train, args.bench_utts, args.batch_size, epoch_cuts=len(train))
        write_json_atomic(bench_json, result)
        write_text_atomic(args.out / "cache_benchmark.md", "\n".join([
            "| distillation pass | seconds | epoch estimate (s) |", "|---|---|---|",
            f"| teacher online | {result['seconds_online_teacher']} | {result['epoch_seconds_online_estimate']} |",
            f"| cached targets | {result['seconds_cached_targets']} | {result['epoch_seconds_cached_estimate']} |",
            f"\nspeed-up with the cache: {result['speedup']}x ({result['utterances_timed']} utterances, "
            f"{result['audio_seconds_timed']} s of audio, batch {result['batch_size']}, one process)\n",
        ]))
        print(f"[stage2] cache speed-up {result['speedup']}x: {json.dumps(result)}")


if __name__ == "__main__":
    main()
