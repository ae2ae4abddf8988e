#!/usr/bin/env python
"""Give a ``reading.span: vocab`` model (AuRA, or the bridge with AuRA's reading objective) its text-QA reader.

    python recipes/aura/local/attach_reader.py --model exp/default/stage3/aura_reading_ctc_encoder_free.nemo \
        --reader exp/default/stage5/aura_qa_reader/reader_adapter --out exp/default/stage5/aura_with_reader.nemo

The reader (``finetune_text_qa.py --questions-from-asr <model>``, trained on the model's own transcripts of the QA
training questions) becomes a second LoRA adapter on the model's LLM (``parts/reader.py``):
spoken questions are read by the CTC head and answered by the reader, text prompts still see the base LLM, and
one LLM is in memory. Written to a temporary name, then renamed; an existing ``--out`` is kept.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a saved AuRA or bridge .nemo with reading.span vocab")
    p.add_argument("--reader", required=True, help="the reader's adapter dir (<finetune_text_qa --out>/reader_adapter)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.out.exists():
        print(f"[reader] {args.out} exists: keeping it")
        return 0
    from nemo_aura import AuRAModel
    from nemo_aura.parts.files import write_nemo_atomic

    model = AuRAModel.restore_from(args.model, map_location="cpu").eval()
    model.attach_reader(args.reader)
    write_nemo_atomic(args.out, model.save_to)
    print(f"[reader] wrote {args.out}: {args.model} answering with the reader {args.reader}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
