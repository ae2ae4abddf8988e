#!/usr/bin/env python
"""Export a trained encoder-free AuRA ``.nemo`` as a pretrained model for ``AuRAModel.from_pretrained``.

    python recipes/aura/local/export_pretrained.py --nemo exp/default/stage5/aura_qa.nemo \
        --llm-dir exp/models/smollm2-135m-instruct [--name aura_smollm2_135m_whisper_base] [--out DIR] \
        [--scores exp/default/stage6/results.md --scores exp/default/stage6/hearing/results.md]

Writes ``--out`` (default ``nemo_aura/assets/pretrained/<name>``): ``model.safetensors`` with exactly the tensors
that are not base-LLM weights (found by comparing every tensor with ``--llm-dir``'s: patch embedding, LoRA,
reading heads, any LLM weight that training changed), ``model_config.yaml`` (no machine paths: the base LLM is
named by its directory under the models dir) and ``MODEL_CARD.md`` (data, step budget, the ``--scores`` files,
licences; fill in its TODO lines). Before the directory is replaced, the export is loaded back the way
``from_pretrained`` loads it and every tensor is compared with the ``.nemo``'s.
"""
from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

DEFAULT_NAME = "aura_smollm2_135m_whisper_base"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nemo", type=Path, required=True, help="a trained encoder-free AuRA .nemo (stage 4 or 5)")
    p.add_argument("--llm-dir", type=Path, required=True, help="the base LLM directory the model was trained on")
    p.add_argument("--name", default=DEFAULT_NAME, help="the pretrained model's name (a registered one)")
    p.add_argument("--out", type=Path, default=None, help="default: nemo_aura/assets/pretrained/<name>")
    p.add_argument("--scores", type=Path, action="append", default=[],
                   help="a stage-6 results file (markdown) to put in the model card; repeatable")
    p.add_argument("--llm-name", default="SmolLM2-135M-Instruct", help="base LLM, for the card")
    p.add_argument("--llm-licence", default="Apache-2.0")
    p.add_argument("--teacher-name", default="Whisper-base", help="acoustic teacher (training only), for the card")
    p.add_argument("--teacher-licence", default="MIT")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                   help="storage type of the shipped floating-point tensors (float16 halves the package; loaded "
                        "back into the model's float32)")
    p.add_argument("--hearing", type=Path, default=None,
                   help="stage 6's hearing/results.json: the card says on which sets the model answers from the "
                        "spoken question (hearing interval above 0) and on which it does not")
    p.add_argument("--corpus-summary", type=Path, default=None, help="stage 1's summary.json, for the card's data")
    return p.parse_args(argv)


def portable_config(cfg: DictConfig, name: str, base_llm: str) -> DictConfig:
    """The model config without machine paths: no data sets, no skeleton file, the base LLM by directory name."""
    cfg = cfg.copy()
    with open_dict(cfg):
        for key in ("train_ds", "validation_ds"):
            cfg.pop(key, None)
        cfg.student.pop("skeleton", None)
        cfg.student.pretrained_path = None  # from_pretrained: <models dir>/<pretrained.base_llm>
        cfg.student.pretrained_weights = True
        cfg.pretrained = {"name": name, "base_llm": base_llm}
    _shorten_paths(cfg)
    return cfg


def _shorten_paths(node) -> None:
    """Absolute paths left anywhere in the config keep their last three parts (as training_history does)."""
    items = node.items() if isinstance(node, DictConfig) else enumerate(node) if isinstance(node, ListConfig) else []
    for key, value in list(items):
        if isinstance(value, (DictConfig, ListConfig)):
            _shorten_paths(value)
        elif isinstance(value, str) and value.startswith("/"):
            node[key] = "/".join(Path(value).parts[-3:])


def component(key: str) -> str:
    if "lora_" in key:
        return "LoRA"
    if key.startswith("llm."):
        return "LLM weights changed by training"
    return key.split(".", 1)[0]


def model_card(name: str, model, tensors: dict, args, description: str) -> str:
    cfg = model.cfg
    counts: dict[str, int] = {}
    for key, t in tensors.items():
        counts[component(key)] = counts.get(component(key), 0) + t.numel()
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    lora = cfg.get("lora") or cfg.get("merged_lora") or {}
    history = cfg.get("training_history")
    history = OmegaConf.to_container(history, resolve=True) if history else []
    lines = [
        f"# {name}", "", description, "",
        "| | |", "|---|---|",
        f"| base LLM | {args.llm_name} (`{args.llm_dir.name}` under the models dir, built offline by stage 0) |",
        f"| acoustic teacher (training only, not shipped) | {args.teacher_name} |",
        f"| LoRA | r={lora.get('r')}, alpha={lora.get('lora_alpha')}, K={model.ctc_layer} distilled layers"
        f"{', merged into the LLM' if cfg.get('merged_lora') else ''} |",
        f"| patch embedding | {cfg.patch_embedding.get('patch_size')} mel frames a token, stem "
        f"{cfg.patch_embedding.get('stem', 'mlp')} |",
        f"| reading | span {model.reading_span}; audio_span {OmegaConf.to_container(cfg.get('audio_span') or {})} |",
        *([reader_row(cfg.reader)] if model.has_reader else []),
        f"| shipped tensors | {len(tensors)} tensors, {sum(counts.values()):,} values, {size / 2**20:.1f} MiB: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())) + f" (stored as {args.dtype}) |",
        f"| exported from | `{args.nemo.name}`, {dt.date.today().isoformat()} |", "",
        *hearing_lines(args.hearing, model.has_reader),
        "## Use", "", "```python", "from nemo_aura import AuRAModel", "",
        f'model = AuRAModel.from_pretrained("{name}")',
        'print(model.generate(["question.wav"], task="qa"))', "```", "",
        "## Data", "",
        *corpus_lines(args.corpus_summary), "",
    ]
    lines += [f"- run `{h.get('name')}`: train cuts `{h.get('train_cuts')}`" for h in history] + [""]
    lines += ["## Training budget", "", "| run | steps | batch seconds | init from | fit seconds |",
              "|---|---|---|---|---|"]
    lines += [f"| {h.get('name')} | {h.get('steps')} | {h.get('batch_duration')} | {h.get('init_from')} | "
              f"{h.get('fit_seconds')} |" for h in history]
    if not history:
        lines.append("| TODO (the .nemo records no training_history) | | | | |")
    lines += ["", "## Scores (stage 6)", ""]
    for path in args.scores:
        lines += [f"From `{'/'.join(path.parts[-3:])}`:", "", path.read_text().strip(), ""]
    if not args.scores:
        lines += ["TODO: stage 6's results.md (spoken QA, WER, latency) and hearing/results.md.", ""]
    lines += ["## Licences", "",
              f"- {args.llm_name} (base LLM weights, not shipped here): {args.llm_licence}",
              f"- {args.teacher_name} (teacher during training, not shipped): {args.teacher_licence}",
              "- these AuRA weights: Apache-2.0, as nemo-aura",
              "- TODO: licences of the training speech (TTS voices, texts)", ""]
    return "\n".join(lines)


def export(args) -> Path:
    from safetensors.torch import save_file

    from nemo_aura import AuRAModel
    from nemo_aura.parts import pretrained as P

    out = args.out or (P.PACKAGE_PRETRAINED_DIR / args.name)
    model = AuRAModel.restore_from(str(args.nemo), map_location="cpu").eval()
    if model.teacher is not None or model.distillation is not None:
        raise SystemExit(f"{args.nemo} still holds the teacher / distillation heads: export the encoder-free model "
                         "(stage 4's aura_encoder_free.nemo, or stage 5's fine-tuned one)")
    base = P.load_base_weights(args.llm_dir)
    tied = bool(getattr(model.llm.config, "tie_word_embeddings", False))
    state = model.state_dict()
    dtype = DTYPES[args.dtype]
    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in P.non_base_tensors(state, base, tied).items()}
    meta = {"nemo_aura_pretrained": args.name, "dtype": args.dtype, "base_llm": args.llm_dir.name, "base_llm_fingerprint": P.fingerprint(base)}
    description = P.MODELS[args.name].description if args.name in P.MODELS else f"AuRA model exported from {args.nemo.name}."
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        save_file(tensors, str(tmp / P.WEIGHTS_FILE), metadata=meta)
        config = portable_config(model.cfg, args.name, args.llm_dir.name)
        lm = ((model.cfg.get("ctc_decoding") or {}).get("beam") or {}).get("ngram_lm_model")
        if lm:  # the decoding LM ships beside the weights; the config names it relative to the directory
            shutil.copyfile(lm, tmp / P.DECODING_LM_FILE)
            config.ctc_decoding.beam.ngram_lm_model = P.DECODING_LM_FILE
        OmegaConf.save(config, tmp / P.CONFIG_FILE)
        (tmp / P.CARD_FILE).write_text(model_card(args.name, model, tensors, args, description))
        check_round_trip(AuRAModel, tmp, args.llm_dir, state, set(tensors), dtype)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"[export_pretrained] {out}: {len(tensors)} of {len(state)} tensors shipped "
          f"({(out / P.WEIGHTS_FILE).stat().st_size / 2**20:.1f} MiB); the rest are {args.llm_dir.name}'s weights")
    return out


def check_round_trip(cls, path: Path, llm_dir: Path, state: dict, shipped: set[str],
                     dtype: torch.dtype = torch.float32) -> None:
    """Load ``path`` as ``from_pretrained`` does and compare every tensor with the exported model's (a shipped
    tensor as stored: rounded to ``dtype``)."""
    from nemo_aura.parts import pretrained as P

    cfg, _ = P.load_config(path, llm_dir.parent)
    loaded = P.compose(cls, cfg, llm_dir, path / P.WEIGHTS_FILE).state_dict()
    expected = {k: v.to(dtype).to(v.dtype) if k in shipped and v.is_floating_point() else v for k, v in state.items()}
    differ = [k for k in expected if k not in loaded or not torch.equal(expected[k], loaded[k])]
    if differ or set(loaded) - set(state):
        raise RuntimeError(f"the export does not load back to the same model: {(differ or sorted(set(loaded) - set(state)))[:5]}")


#: The hearing rows the card reports: this model reading its CTC text with the base LLM, and the same text read by
#: stage 5's fine-tuned text-QA reader (a separate LLM directory, not shipped here).
CARD_SYSTEMS = {"aura": "This model (its CTC text read by the base LLM)",
                "aura_ctc_ft": "Its CTC text read by the fine-tuned text-QA reader (stage 5; not in this directory)"}
#: aura_ctc_ft's label when its reader was trained on this model's own transcripts (score_hearing --aura-reader-dir)
OWN_READER_LABEL = ("Its CTC text read by a text-QA reader fine-tuned on this model's transcripts of the training "
                    "questions (stage 5; not in this directory)")


def reader_row(reader) -> str:
    """The card's row for a reader carried by the model (``AuRAModel.attach_reader``)."""
    lora, trained = reader.lora, reader.get("trained") or {}
    layers = lora.get("layers_to_transform")
    where = "every decoder layer" if not layers else f"decoder layers {min(layers)}..{max(layers)} (0-based)"
    dev = trained.get("dev_after") or {}
    return (f"| reader (answers spoken questions; text prompts see the base LLM) | LoRA r={lora.get('r')}, "
            f"alpha={lora.get('lora_alpha')} on {where}, {trained.get('steps')} "
            f"steps on the QA training items as this model transcribes them"
            + (f"; dev EM on text {dev['em']:.2f}" if dev.get("em") is not None else "") + " |")


def hearing_lines(results: Path | None, own_reader: bool = False) -> list[str]:
    """The card's 'Does it hear?' section: per system and test set, F1 with the item's own spoken question minus F1
    with its control question (95% interval), and what that says."""
    if results is None:
        return []
    import json

    scored = json.loads(results.read_text())
    sets = scored["sets"]
    labels = dict(CARD_SYSTEMS)
    if own_reader:
        labels["aura"] = "This model (its CTC text answered by its own reader, shipped in this directory)"
    if scored.get("paths", {}).get("aura_reader_dir"):
        labels["aura_ctc_ft"] = OWN_READER_LABEL
    lines = ["## Does it hear?", "",
             "F1 with the item's own spoken question minus F1 with a control question (multi-fact sets: about another "
             "entity of the same context; others: the next item's), same context and gold; 95% paired-bootstrap "
             f"interval (`{'/'.join(results.parts[-3:])}`):", ""]
    heard = False
    for system, label in labels.items():
        rows = {name: r[system] for name, r in sets.items() if system in r}
        if rows:
            lines += [f"{label}:", ""]
        for name, r in rows.items():
            lo, hi = r.get("hearing_ci") or (r["hearing"], r["hearing"])
            heard = heard or lo > 0
            verdict = "hears" if lo > 0 else "does not hear (interval includes 0)" if hi >= 0 else "worse than chance"
            wer = "" if r.get("wer") is None else f", transcript WER {r['wer']:.2f}" + (
                "" if r.get("wer_other") is None else f" (vs other utterances {r['wer_other']:.2f})")
            lines.append(f"- {name} ({r['items']} items): F1 {r['f1']:.3f}, hearing {r['hearing']:+.3f} "
                         f"[{lo:+.3f}, {hi:+.3f}]: {verdict}{wer}")
        if rows:
            lines.append("")
    if not heard and any(s in r for r in sets.values() for s in CARD_SYSTEMS):
        lines += ["**This model does not yet answer from the spoken question**: its answers are no better with the "
                  "question asked than with another one. Its transcripts follow the audio (see the WER above).", ""]
    return lines


def corpus_lines(summary: Path | None) -> list[str]:
    """The card's data section from stage 1's summary.json: utterances and hours per subset."""
    if summary is None:
        return ["TODO: the corpus (stage 1 preset, hours of speech per set, voices) and its licences."]
    import json

    data = json.loads(summary.read_text())
    lines = ["Synthesized speech (stage 1 of the recipe; no recorded speech, no dataset download):", "",
             "| subset | utterances | hours |", "|---|---|---|"]
    for name, sub in (data.get("subsets") or {}).items():
        lines.append(f"| {name} | {sub.get('utterances')} | {sub.get('hours')} |")
    voices = data.get("voices") or {}
    if voices:
        lines += ["", "Voices (utterances): " + ", ".join(f"{v} ({n})" for v, n in dict(voices).items()) + "."]
    return lines


def main(argv=None) -> int:
    export(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
