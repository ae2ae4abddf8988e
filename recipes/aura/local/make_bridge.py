#!/usr/bin/env python
"""Stage 5 (bridge baseline): build the untrained bridge matched to the AuRA config and save it as .nemo.

Same LLM, prompts, audio-token grid and teacher encoder as AuRA; LoRA with the same trainable budget
(see ``bridge_config_from_aura``). Trained afterwards by ``nemo_aura.train`` like any AuRA model.
"""
import argparse
from pathlib import Path

import torch
from omegaconf import open_dict

from nemo_aura.models.bridge_model import BridgeModel, bridge_config_from_aura
from nemo_aura.parts.files import write_nemo_atomic
from nemo_aura.parts.student import check_llm_dir
from nemo_aura.train import compose_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lora-on-first-k", action="store_true", help="LoRA on AuRA's K layers instead of all layers")
    parser.add_argument("overrides", nargs="*", help="the AuRA model overrides (model=..., model.*=...)")
    args = parser.parse_args()
    if args.out.exists():
        print(f"[stage5] {args.out} exists: skipping")
        return
    cfg = compose_config(args.overrides).model
    with open_dict(cfg):
        cfg.pop("train_ds", None)
        cfg.pop("validation_ds", None)
    from transformers import AutoConfig

    depth = AutoConfig.from_pretrained(check_llm_dir(cfg.student.pretrained_path)).num_hidden_layers
    torch.manual_seed(0)
    bridge = BridgeModel(bridge_config_from_aura(cfg, depth, lora_on_all_layers=not args.lora_on_first_k))
    counts = bridge.parameter_counts()
    print("[stage5] bridge parameters: " + ", ".join(f"{k}={v:,}" for k, v in counts.items()))
    write_nemo_atomic(args.out, bridge.save_to)


if __name__ == "__main__":
    main()
