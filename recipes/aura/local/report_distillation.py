#!/usr/bin/env python
"""Stage 3 report: per mapped layer, the student<->teacher cosine on dev before and after training.

Reads ``validation_{before,after}.json`` written by ``nemo_aura.train``; writes ``distill_report.{json,md}``
and ``distill_cosine.png``.
"""
import argparse
import json
import os
import re
from pathlib import Path


def layer_cosines(metrics: dict) -> dict[int, float]:
    out = {}
    for key, value in metrics.items():
        m = re.fullmatch(r"val_distill_cos_layer(\d+)", key)
        if m:
            out[int(m.group(1))] = value
    return dict(sorted(out.items()))


def plot(before: dict[int, float], after: dict[int, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted(after)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(layers, [before.get(s, float("nan")) for s in layers], "o--", label="before")
    ax.plot(layers, [after[s] for s in layers], "o-", label="after")
    ax.set_xlabel("student layer (mapped)")
    ax.set_ylabel("dev cosine to teacher")
    ax.set_ylim(-0.1, 1.0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name("tmp-" + path.name)
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stage-dir", type=Path, required=True)
    args = parser.parse_args()
    read = lambda name: json.loads((args.stage_dir / name).read_text()) if (args.stage_dir / name).exists() else {}  # noqa: E731
    before, after = read("validation_before.json"), read("validation_after.json")
    cb, ca = layer_cosines(before), layer_cosines(after)
    report = {"cosine_before": cb, "cosine_after": ca, "val_loss_before": before.get("val_loss"),
              "val_loss_after": after.get("val_loss")}
    if "val_lm_loss" in after:
        report["val_lm_loss_after"] = after["val_lm_loss"]
    lines = ["| student layer | dev cosine before | dev cosine after |", "|---|---|---|"]
    lines += [f"| {s} | {cb.get(s, float('nan')):.3f} | {ca[s]:.3f} |" for s in ca]
    for name, text in (("distill_report.json", json.dumps(report, indent=2)), ("distill_report.md", "\n".join(lines) + "\n")):
        tmp = args.stage_dir / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, args.stage_dir / name)
    if ca:
        plot(cb, ca, args.stage_dir / "distill_cosine.png")
    print("[stage3] per-layer dev cosine (before -> after): "
          + ", ".join(f"L{s}: {cb.get(s, float('nan')):.3f} -> {ca[s]:.3f}" for s in ca))


if __name__ == "__main__":
    main()
