#!/usr/bin/env python
"""One hearing table for several AuRA runs scored by ``score_hearing.py`` (``hearing_compare.sh``'s last step).

    python recipes/aura/local/hearing_table.py --out exp/default/hearing collapsed frames distilled_only

Reads ``<out>/<run>/results.json`` of each run; the reference systems (topline, cascade, oracles) come from the first
run, each run's ``aura`` row is named after the run. Writes ``<out>/results.{json,md}`` and ``<out>/hearing.png``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from score_hearing import plot, to_markdown  # noqa: E402

from nemo_aura.parts.files import write_json_atomic, write_text_atomic  # noqa: E402


def combine(out: Path, runs: list[str], all_systems: bool = False) -> dict:
    """``all_systems``: every run's other rows too, those after the first run named ``<system>_<run>`` (runs that
    score one reference system two ways, e.g. the cascade with and without its context prompt)."""
    combined: dict = {"paths": {}, "sets": {}}
    for n, run in enumerate(runs):
        path = out / run / "results.json"
        if not path.is_file():
            raise SystemExit(f"hearing_table: {path} does not exist (score the run first)")
        result = json.loads(path.read_text())
        combined["paths"][run] = result["paths"].get("aura")
        for set_name, systems in result["sets"].items():
            rows = combined["sets"].setdefault(set_name, {})
            for name, row in systems.items():
                if name == "aura":
                    rows[f"aura_{run}"] = row
                elif n == 0:
                    rows[name] = row
                elif all_systems:
                    rows[f"{name}_{run}"] = row
    return combined


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--all-systems", action="store_true",
                   help="keep every run's reference rows, not only the first run's (named <system>_<run>)")
    p.add_argument("runs", nargs="+")
    args = p.parse_args(argv)
    combined = combine(args.out, args.runs, args.all_systems)
    write_json_atomic(args.out / "results.json", combined)
    write_text_atomic(args.out / "results.md", to_markdown(combined))
    plot(combined, args.out)
    print(to_markdown(combined))


if __name__ == "__main__":
    main()
