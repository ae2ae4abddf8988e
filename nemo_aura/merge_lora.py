"""Fold an AuRA model's LoRA into its LLM weights and save the result.

    python -m nemo_aura.merge_lora in.nemo out.nemo [--hf-dir DIR]

The merged ``.nemo`` restores and generates like the original (same outputs within float tolerance)
without adapter layers; ``--hf-dir`` also writes the merged LLM as a plain Hugging Face directory with
the patch embedding beside it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from nemo_aura.parts.files import write_nemo_atomic


def merge_file(src: str, dst: str, hf_dir: str | None = None) -> Path:
    from nemo_aura.models.aura_model import AuRAModel

    if not Path(src).is_file():
        raise FileNotFoundError(f"'{src}' does not exist")
    model = AuRAModel.restore_from(src, map_location="cpu").eval().merge_lora()
    dst = Path(dst)
    write_nemo_atomic(dst, model.save_to)
    if hf_dir:
        model.save_hf(hf_dir)
    return dst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--hf-dir", default=None)
    args = parser.parse_args()
    print(f"[merge_lora] wrote {merge_file(args.src, args.dst, args.hf_dir)}")


if __name__ == "__main__":
    main()
