#!/usr/bin/env python
"""Stage 0 of the tiny preset: a random tiny Llama + a locally trained tokenizer (no downloads).

The tiny preset's teacher is a config (conf/model/aura_tiny.yaml), so nothing else is built.
"""
import argparse
import os
import shutil
from pathlib import Path

from nemo_aura.testing import build_tiny_llm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if (args.out / "config.json").exists():
        print(f"[stage0] {args.out} exists: skipping")
        return
    tmp = args.out.with_name(args.out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    build_tiny_llm(tmp)
    os.replace(tmp, args.out)
    print(f"[stage0] built tiny LLM in {args.out}")


if __name__ == "__main__":
    main()
