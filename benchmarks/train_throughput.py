#!/usr/bin/env python
"""Training throughput, fp32 against bf16 autocast, side by side on the same batches (one process per run).

    python benchmarks/train_throughput.py --preset default --steps 30 --out exp/default/bench_train
    python benchmarks/train_throughput.py --preset tiny --steps 4 --out /tmp/bench   # < 1 minute

For each objective (``distill``: stage 3's layer-wise loss on the cached Whisper targets; ``reading``: the default
reading run, CTC over the LLM's vocabulary at layer K; ``hearing``: the text-aligned target at layer K, collapsed
span, Whisper below K) and each precision (``32-true``, ``bf16-mixed``), a fresh process
builds the model from the same seed, takes the same first batches of the same Lhotse sampler and runs ``--steps``
AdamW steps as Lightning's ``bf16-mixed`` does (autocast forward, fp32 weights and optimizer state). Reported: steps/s
and audio-seconds/s (the first two steps are warm-up, not timed), peak RSS, the training loss after the same steps
and the dev loss and dev cosine before (the same weights: rounding alone) and after them; ratios bf16/fp32 (JSON +
Markdown).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("32-true", "bf16-mixed")
OBJECTIVES = {"distill": "distill", "reading": "reading_ctc", "hearing": "hearing"}  # objective -> conf/<name>.yaml
WARMUP = 2


def preset_overrides(preset: str, data_dir: Path) -> tuple[list[str], str, str]:
    """(model overrides, train cuts, dev cuts) of a preset."""
    if preset == "default":
        exp = ROOT / "exp" / "default"
        return ([f"model=aura_base", f"model.student.pretrained_path={ROOT / 'exp/models/smollm2-135m-instruct'}",
                 f"model.teacher.pretrained_path={ROOT / 'exp/models/whisper-base'}"],
                str(exp / "stage2/train/cuts.jsonl.gz"), str(exp / "stage2/dev/cuts.jsonl.gz"))
    from nemo_aura.testing import build_tiny_llm, write_tiny_cuts

    llm = data_dir / "tiny-llm"
    if not (llm / "config.json").exists():
        build_tiny_llm(llm)
    cuts = data_dir / "cuts" / "cuts.jsonl.gz"
    if not cuts.exists():
        write_tiny_cuts(data_dir / "cuts", n=8)
    return ["model=aura_tiny", f"model.student.pretrained_path={llm}"], str(cuts), str(cuts)


def worker(args) -> dict:
    import torch
    from lightning.pytorch import seed_everything

    from nemo_aura.models.aura_model import AuRAModel
    from nemo_aura.train import compose_config

    torch.set_num_threads(args.threads)
    model_overrides, train_cuts, dev_cuts = preset_overrides(args.preset, args.out / "data")
    overrides = [*model_overrides, f"model.train_ds.cuts_path={train_cuts}", f"model.validation_ds.cuts_path={dev_cuts}",
                 f"model.train_ds.batch_duration={args.batch_duration}", f"model.validation_ds.batch_duration={args.batch_duration}"]
    if args.objective != "distill":  # the recipe starts these from the distilled model; throughput needs no init
        overrides += ["init_from_nemo=null"]
    cfg = compose_config(overrides, config_name=OBJECTIVES[args.objective])
    seed_everything(0, workers=True)
    model = AuRAModel(cfg.model).train()
    bf16 = args.precision == "bf16-mixed"
    train_batches = take_batches(model._train_dl, args.steps + WARMUP)
    dev_batches = take_batches(model._validation_dl, args.dev_batches)
    # before any step both precisions hold the same weights: the dev difference here is the rounding of the forward
    # alone; after the steps it also holds how far the trajectories drifted apart (large for a tiny random model,
    # whose first Adam steps are nearly sign steps that any rounding can flip)
    dev_init = dev_losses(model, dev_batches, bf16)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=float(cfg.model.optim.lr), betas=tuple(cfg.model.optim.get("betas", (0.9, 0.999))))
    timed, audio_seconds, losses = 0.0, 0.0, []
    for step, batch in enumerate(train_batches):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model.compute_losses(batch)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        losses.append(float(out["loss"]))
        if step >= WARMUP:
            timed += dt
            audio_seconds += float(batch["audio_lens"].sum()) / model.sample_rate
    dev = dev_losses(model, dev_batches, bf16)
    cos_keys = [k for k in dev if k.endswith("cos") or "cos_layer" in k]
    steps = len(train_batches) - WARMUP
    return {"objective": args.objective, "precision": args.precision, "steps": steps, "seconds": timed,
            "steps_per_s": steps / timed, "audio_s_per_s": audio_seconds / timed,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "train_loss_last": losses[-1], "train_loss_mean_last5": sum(losses[-5:]) / len(losses[-5:]),
            "dev_loss": dev.get("loss"), "dev_cos": {k: dev[k] for k in cos_keys},
            "dev_loss_init": dev_init.get("loss"), "dev_cos_init": {k: dev_init[k] for k in cos_keys if k in dev_init}}


def take_batches(loader, n: int) -> list:
    """The first ``n`` batches of ``loader``, going through it again when an epoch holds fewer (small cut sets)."""
    batches: list = []
    while len(batches) < n:
        epoch = [b for _, b in zip(range(n - len(batches)), loader)]
        if not epoch:
            raise SystemExit("train_throughput: the data loader gave no batch (empty cut set?)")
        batches += epoch
    return batches


def dev_losses(model, batches: list, bf16: bool) -> dict[str, float]:
    """Mean of each loss term over ``batches`` in eval mode, under the run's autocast."""
    import torch

    model.eval()
    dev: dict[str, list[float]] = {}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for batch in batches:
            for k, v in model.compute_losses(batch).items():
                dev.setdefault(k, []).append(float(v))
    return {k: sum(v) / len(v) for k, v in dev.items()}


def rel_diff(value: float, reference: float) -> float:
    return (value - reference) / abs(reference)


def max_abs_diff(a: dict[str, float], b: dict[str, float]) -> float:
    return max((abs(a[k] - b[k]) for k in set(a) & set(b)), default=0.0)


def to_markdown(result: dict) -> str:
    lines = [f"# Training throughput, fp32 vs bf16 autocast ({result['preset']} preset, {result['threads']} threads, "
             f"{result['steps']} steps of {result['batch_duration']} s)", "",
             "| objective | precision | steps/s | audio s/s | peak RSS (MiB) | train loss (last 5) | dev loss | dev cos (mean) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        cos = r["dev_cos"]
        mean_cos = sum(cos.values()) / len(cos) if cos else float("nan")
        lines.append(f"| {r['objective']} | {r['precision']} | {r['steps_per_s']:.3f} | {r['audio_s_per_s']:.1f} | "
                     f"{r['peak_rss_mib']:.0f} | {r['train_loss_mean_last5']:.4f} | {r['dev_loss']:.4f} | {mean_cos:.4f} |")
    lines += ["", "Dev differences bf16 - fp32: *at start* the same weights (the forward's rounding alone), *after* the steps "
              "(rounding and the drift of the two trajectories).", "",
              "| objective | audio s/s bf16 / fp32 | dev loss rel. diff at start | dev cos diff at start (max) | "
              "dev loss rel. diff after | dev cos diff after (max) |",
              "|---|---|---|---|---|---|"]
    for name, r in result["ratios"].items():
        lines.append(f"| {name} | {r['speedup']:.2f}x | {r['init_dev_loss_rel_diff']:+.2%} | "
                     f"{r['init_dev_cos_max_abs_diff']:.4f} | {r['dev_loss_rel_diff']:+.2%} | {r['dev_cos_max_abs_diff']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=["default", "tiny"], default="default")
    p.add_argument("--objectives", default=",".join(OBJECTIVES))
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-duration", type=float, default=None, help="seconds of audio per batch (default 60; tiny 3)")
    p.add_argument("--dev-batches", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--objective", help=argparse.SUPPRESS)
    p.add_argument("--precision", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.batch_duration = args.batch_duration or (3.0 if args.preset == "tiny" else 60.0)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.objective:  # one run, in its own process (clean peak RSS)
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return {}
    from nemo_aura.parts.files import write_json_atomic, write_text_atomic

    runs = []
    for objective in [o for o in args.objectives.split(",") if o]:
        if objective not in OBJECTIVES:
            raise SystemExit(f"--objectives: {objective!r} is not one of {list(OBJECTIVES)}")
        for precision in PRECISIONS:
            cmd = [sys.executable, __file__, "--preset", args.preset, "--steps", str(args.steps), "--batch-duration",
                   str(args.batch_duration), "--dev-batches", str(args.dev_batches), "--threads", str(args.threads),
                   "--out", str(args.out), "--objective", objective, "--precision", precision]
            print(f"[train_throughput] {objective} {precision} ...", flush=True)
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                raise SystemExit(f"train_throughput: the {objective}/{precision} run failed:\n{proc.stderr[-3000:]}")
            runs.append(json.loads(line[len("RESULT "):]))
    ratios = {}
    for objective in {r["objective"] for r in runs}:
        fp32, bf16 = (next(r for r in runs if r["objective"] == objective and r["precision"] == p) for p in PRECISIONS)
        ratios[objective] = {"speedup": bf16["audio_s_per_s"] / fp32["audio_s_per_s"],
                             "init_dev_loss_rel_diff": rel_diff(bf16["dev_loss_init"], fp32["dev_loss_init"]),
                             "init_dev_cos_max_abs_diff": max_abs_diff(bf16["dev_cos_init"], fp32["dev_cos_init"]),
                             "dev_loss_rel_diff": rel_diff(bf16["dev_loss"], fp32["dev_loss"]),
                             "dev_cos_max_abs_diff": max_abs_diff(bf16["dev_cos"], fp32["dev_cos"])}
    result = {"preset": args.preset, "threads": args.threads, "steps": args.steps, "batch_duration": args.batch_duration,
              "runs": runs, "ratios": ratios}
    write_json_atomic(args.out / "train_throughput.json", result)
    write_text_atomic(args.out / "train_throughput.md", to_markdown(result))
    print(to_markdown(result))
    return result


if __name__ == "__main__":
    main()
