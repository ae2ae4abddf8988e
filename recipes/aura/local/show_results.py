#!/usr/bin/env python
"""Snapshot a run's reports into the recipe (ESPnet's RESULTS.md): exp/ is not versioned and a new machine starts
without it, so the measured tables and their plots are kept beside the recipe.

    python recipes/aura/local/show_results.py --exp exp/default --out recipes/aura/results/default

Copies stage 6's, the ablation's and the probes' results.{md,json} and PNGs (whichever exist) to ``--out`` and writes
``--out/RESULTS.md``: the reports one after another, with the date and the git commit they were made at. A report
the run does not have (e.g. a new machine that reran stages 0-5 and 7 only) stays as the snapshot holds it, marked
as kept from an earlier snapshot, so a partial rerun never drops measured tables.
"""
from __future__ import annotations

import argparse
import datetime
import shutil
import subprocess
from pathlib import Path

from nemo_aura.parts.files import write_text_atomic

REPORTS = {"stage6": "Stage 6: AuRA vs bridge vs cascade vs text topline",
           "stage6/hearing": "Stage 6: hearing (multi-fact and closed-book spoken questions)",
           "hearing": "Text-aligned reading at layer K: hearing of the encoder-free models, with the oracle rows",
           "ablation": "Stage 7: reading ablation",
           "ablation/probe": "Stage 7: linear CTC probe of the distilled layers",
           "ablation/probe_stage5": "Stage 7: linear CTC probe of the fine-tuned (stage-5) model's layers"}


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp", type=Path, required=True, help="exp/<tag> of a recipe run")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    found = [name for name in REPORTS if (args.exp / name / "results.md").is_file()]
    if not found:
        raise SystemExit(f"show_results: no results.md under {args.exp}/{{{','.join(REPORTS)}}}: run stage 6 or 7 first")
    kept = [name for name in REPORTS if name not in found and (args.out / name / "results.md").is_file()]
    parts = [f"# Results of `{args.exp}` (snapshot of {datetime.date.today()}, commit {git_commit()})", ""]
    if kept:
        parts += [f"Kept from an earlier snapshot (this run has no such report): {', '.join(kept)}.", ""]
    for name in [n for n in REPORTS if n in found or n in kept]:  # REPORTS' order
        fresh = name in found  # refreshed from the run; a kept report stays as the snapshot holds it
        dest = args.out / name
        dest.mkdir(parents=True, exist_ok=True)
        if fresh:
            for f in sorted((args.exp / name).glob("results.*")) + sorted((args.exp / name).glob("*.png")):
                shutil.copy2(f, dest / f.name)
        text = (dest / "results.md").read_text()
        plots = []
        for png in sorted(dest.glob("*.png")):  # linked plots point at the copies, the others are shown below
            if f"]({png.name})" in text:
                text = text.replace(f"]({png.name})", f"]({name}/{png.name})")
            else:
                plots.append(f"![{png.stem}]({name}/{png.name})")
        if text.startswith("# "):  # the section heading below replaces the report's own title
            text = text.split("\n", 1)[1].lstrip("\n")
        text = ("\n" + text).replace("\n# ", "\n### ").replace("\n## ", "\n### ")[1:]
        parts += [f"## {REPORTS[name]}" + ("" if fresh else " (kept from an earlier snapshot)"), "", text, *plots, ""]
    write_text_atomic(args.out / "RESULTS.md", "\n".join(parts))
    print(f"wrote {args.out / 'RESULTS.md'} ({', '.join(found)})")


if __name__ == "__main__":
    main()
