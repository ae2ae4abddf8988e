#!/usr/bin/env python
"""Stage 0 of the tiny preset: a random tiny Llama + a locally trained tokenizer (no downloads).

Also a tiny NeMo CTC .nemo that the cascade uses as its ASR. The tiny preset's teacher is a config
(conf/model/aura_tiny.yaml), so nothing else is built.
"""
import argparse
import os
import shutil
from pathlib import Path

from nemo_aura.testing import build_tiny_ctc_nemo, build_tiny_llm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--asr-out", type=Path, required=True, help="a tiny NeMo CTC .nemo for the cascade")
    args = parser.parse_args()
    if not args.asr_out.exists():
        tmp = args.asr_out.with_name(args.asr_out.stem + ".tmp.nemo")
        build_tiny_ctc_nemo(tmp)
        os.replace(tmp, args.asr_out)
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
