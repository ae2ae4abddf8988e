#!/usr/bin/env python
"""Dev-loss curves of several training runs side by side (the reading-run levers of stage 3).

    python recipes/aura/local/compare_reading_runs.py --run "first=exp/default/stage3r/reading_ctc" \
        --run "bidirectional=exp/default/stage3b_bidirectional_500/reading_ctc" --out exp/default/reading_runs

Each run directory holds the Lightning CSV log ``csv/metrics.csv`` that ``nemo_aura.train`` writes; its validation
rows (``val_loss``) are read (step times are not: runs that shared the cores would not compare). A run stopped early simply has fewer points;
a run that continues another (``--continues NAME=STEPS``) is plotted from where that one ended. Writes
``reading_runs.json``, ``reading_runs.md`` and ``reading_runs.png`` (validation loss against step).
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from nemo_aura.parts.files import write_json_atomic, write_text_atomic  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", required=True, metavar="NAME=DIR", help="a run's log directory")
    p.add_argument("--continues", action="append", default=[], metavar="NAME=STEPS",
                   help="run NAME started from the end of another run of STEPS steps (init_from_nemo): its steps are "
                        "counted from there, so a continued run plots after the run it continues")
    p.add_argument("--metric", default="val_loss")
    p.add_argument("--out", type=Path, required=True)
    return p.parse_args(argv)


def read_run(log_dir: Path, metric: str) -> dict:
    """``{"points": [[step, value], ...]}`` from ``csv/metrics.csv`` (a repeated value one step later, the final
    validation logged again at the end of fit, is kept once)."""
    path = log_dir / "csv" / "metrics.csv"
    if not path.is_file():
        raise SystemExit(f"{log_dir}: no csv/metrics.csv (a nemo_aura.train log directory was expected)")
    points = {}
    with path.open(newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            try:
                if row.get(metric):
                    points[int(row["step"]) + 1] = float(row[metric])  # Lightning logs the step before it
            except (KeyError, ValueError) as e:
                raise SystemExit(f"{path}:{line}: unreadable row ({e})") from None
    if not points:
        raise SystemExit(f"{path}: no '{metric}' values")
    kept = []
    for step, value in sorted(points.items()):
        if kept and step == kept[-1][0] + 1 and value == kept[-1][1]:
            continue
        kept.append((step, value))
    return {"points": kept}


def to_markdown(runs: dict, metric: str) -> str:
    steps = sorted({s for r in runs.values() for s, _ in r["points"]})
    lines = [f"# {metric} of the runs, by training step", "",
             "| run | " + " | ".join(str(s) for s in steps) + " |",
             "|---|" + "---|" * len(steps)]
    for name, r in runs.items():
        values = dict(r["points"])
        cells = " | ".join("" if s not in values else f"{values[s]:.3f}" for s in steps)
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines) + "\n"


def plot(runs: dict, metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import textwrap

    fig, ax = plt.subplots(figsize=(7, 4 + 0.35 * len(runs)))
    for name, r in runs.items():
        pts = [(s, v) for s, v in r["points"] if s > 1]  # the step-1 value is the untrained head's
        ax.plot([s for s, _ in pts], [v for _, v in pts], marker="o", label=textwrap.fill(name, 80))
    ax.set_xlabel("training step")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), frameon=False)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def main(argv=None) -> dict:
    args = parse_args(argv)
    runs = {}
    for spec in args.run:
        name, sep, directory = spec.partition("=")
        if not sep or not name or not directory:
            raise SystemExit(f"--run {spec!r}: expected NAME=DIR")
        runs[name] = read_run(Path(directory), args.metric)
    for spec in args.continues:
        name, sep, steps = spec.partition("=")
        if name not in runs or not steps.isdigit():
            raise SystemExit(f"--continues {spec!r}: expected NAME=STEPS with NAME one of the --run names")
        runs[name]["points"] = [(step + int(steps), value) for step, value in runs[name]["points"]]
        runs[name]["continues_after_steps"] = int(steps)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "reading_runs.json", {"metric": args.metric, "runs": runs})
    write_text_atomic(args.out / "reading_runs.md", to_markdown(runs, args.metric))
    plot(runs, args.metric, args.out / "reading_runs.png")
    print(to_markdown(runs, args.metric))
    return runs


if __name__ == "__main__":
    main()
