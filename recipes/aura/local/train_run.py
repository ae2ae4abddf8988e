#!/usr/bin/env python
"""One training run of ``nemo_aura.train``, as the recipe's stages (``run.sh``) and the ablation runner start it.

    python recipes/aura/local/train_run.py --config reading_ctc --init exp/default/stage3/aura_distilled.nemo \
        --train-cuts mix.jsonl.gz --dev-cuts dev.jsonl.gz --exp-dir exp/default/stage3 \
        --out exp/default/stage3/aura_reading_ctc.nemo [--name NAME] [--report-dir DIR] [-- Hydra overrides]

``conf/<config>.yaml`` holds the run's settings and budget; this only names its data, start model and outputs, so
every stage's command has one shape. A run whose ``--out`` exists is skipped (rerun-safe); an interrupted one
resumes from its last checkpoint under ``--exp-dir`` (exp_manager).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def training_command(config: str, train_cuts: str | Path, dev_cuts: str | Path, exp_dir: str | Path,
                     out: str | Path, init: str | Path | None = None, name: str | None = None,
                     report_dir: str | Path | None = None, overrides: list[str] = ()) -> list[str]:
    """The ``python -m nemo_aura.train`` command line of one run; ``overrides`` come last (they win)."""
    report_dir = report_dir or Path(exp_dir) / f"{name or config}_report"
    cmd = [sys.executable, "-m", "nemo_aura.train", "--config-name", config]
    cmd += [f"name={name}"] if name else []
    cmd += [f"init_from_nemo={init}"] if init else []
    return cmd + [f"model.train_ds.cuts_path={train_cuts}", f"model.validation_ds.cuts_path={dev_cuts}",
                  f"exp_manager.exp_dir={exp_dir}", f"report.dir={report_dir}", f"report.save_nemo={out}",
                  *overrides]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="conf/<config>.yaml")
    p.add_argument("--init", default=None, help="start from this .nemo (init_from_nemo); none: from the config")
    p.add_argument("--train-cuts", required=True)
    p.add_argument("--dev-cuts", required=True)
    p.add_argument("--exp-dir", required=True)
    p.add_argument("--out", required=True, help="the trained .nemo; the run is skipped when it exists")
    p.add_argument("--name", default=None, help="the run's name (default: the config's)")
    p.add_argument("--report-dir", default=None, help="default: <exp-dir>/<name>_report")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, after --")
    args = p.parse_args(argv)
    if Path(args.out).exists():
        print(f"  {args.out} exists: skipping {args.name or args.config}", flush=True)
        return 0
    cmd = training_command(args.config, args.train_cuts, args.dev_cuts, args.exp_dir, args.out, args.init, args.name,
                           args.report_dir, args.overrides)
    return subprocess.run(cmd, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
