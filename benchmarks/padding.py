#!/usr/bin/env python
"""Padding of training batches: NeMo's Lhotse sampler with and without dynamic bucketing, side by side.

    python benchmarks/padding.py --config aura_qa --cuts exp/default/stage5/aura_train_mix.jsonl.gz \
        --batches 200 --out exp/default/bench_padding

A batch of variable-length utterances is padded to its longest one: the patch-rate pass over layers 1..K (and the
teacher) computes on the padding too. For the first ``--batches`` batches of the sampler a training config builds
(``conf/<config>.yaml``'s ``model.train_ds``: the same ``batch_duration``, shuffle and seed), this reports the padded
fraction of audio positions (1 - sum of durations / (batch size x longest duration)), the batch sizes and the seconds
of audio per batch, with ``use_bucketing: false`` (the sampler as configured) and ``true`` (Lhotse's
``DynamicBucketingSampler`` with ``--num-buckets``). Only cut durations are read (no audio, no model): seconds to run.
JSON + Markdown.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nemo_aura.parts.files import write_json_atomic, write_text_atomic  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="aura_qa", help="a training config under conf/ (its model.train_ds)")
    p.add_argument("--cuts", required=True, help="a Lhotse CutSet (the config's train_ds.cuts_path)")
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--num-buckets", type=int, default=10)
    p.add_argument("--out", type=Path, required=True)
    return p.parse_args(argv)


def batch_padding(durations: list[float]) -> float:
    """The padded fraction of a batch's audio positions: all items are padded to the longest."""
    return 1.0 - sum(durations) / (len(durations) * max(durations))


def measure(train_ds, batches: int) -> dict:
    """Padding statistics of the first ``batches`` batches of NeMo's Lhotse sampler for ``train_ds``."""
    from nemo.collections.common.data.lhotse.dataloader import (
        get_lhotse_sampler_from_config, make_structured_with_schema_warnings)

    sampler, _ = get_lhotse_sampler_from_config(make_structured_with_schema_warnings(train_ds), 0, 1)
    padded, sizes, seconds, positions, real = [], [], [], 0.0, 0.0
    for n, batch in enumerate(sampler):
        if n >= batches:
            break
        durations = [c.duration for c in batch]
        padded.append(batch_padding(durations))
        sizes.append(len(durations))
        seconds.append(sum(durations))
        positions += len(durations) * max(durations)
        real += sum(durations)
    return {"batches": len(padded), "padded_fraction": 1.0 - real / positions if positions else None,
            "padded_fraction_median_batch": statistics.median(padded) if padded else None,
            "items_per_batch_median": statistics.median(sizes) if sizes else None,
            "audio_seconds_per_batch_mean": statistics.fmean(seconds) if seconds else None}


def main(argv=None) -> dict:
    args = parse_args(argv)
    from nemo_aura.train import compose_config

    cfg = OmegaConf.create(OmegaConf.to_container(
        compose_config(["init_from_nemo=unused.nemo"], config_name=args.config).model.train_ds))
    cfg.cuts_path = args.cuts
    results = {"config": args.config, "cuts": args.cuts, "batch_duration": cfg.batch_duration, "runs": {}}
    for bucketing in (False, True):
        run = OmegaConf.merge(cfg, {"use_bucketing": bucketing, "num_buckets": args.num_buckets,
                                    "concurrent_bucketing": False})
        results["runs"]["bucketing" if bucketing else "no_bucketing"] = measure(run, args.batches)
    before, after = (results["runs"][k]["padded_fraction"] for k in ("no_bucketing", "bucketing"))
    results["padded_fraction_ratio"] = after / before if before else None
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "padding.json", results)
    lines = [f"# Padding of `{args.config}` training batches ({cfg.batch_duration} s of audio per batch)", "",
             "| sampler | batches | padded fraction of audio positions | median per batch | items/batch | audio s/batch |",
             "|---|---|---|---|---|---|"]
    for name, r in results["runs"].items():
        lines.append(f"| {name} | {r['batches']} | {r['padded_fraction']:.3f} | {r['padded_fraction_median_batch']:.3f} "
                     f"| {r['items_per_batch_median']:g} | {r['audio_seconds_per_batch_mean']:.1f} |")
    lines += ["", f"Bucketing / no bucketing: {results['padded_fraction_ratio']:.3f} of the padded positions.", ""]
    write_text_atomic(args.out / "padding.md", "\n".join(lines))
    print("\n".join(lines))
    return results


if __name__ == "__main__":
    main()
