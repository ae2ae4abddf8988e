"""Command-line inference over a NeMo JSON manifest, like NeMo's ``transcribe_speech.py``.

    python -m nemo_aura.infer model_path=aura.nemo manifest=in.json output=out.json [batch_size=4] [task=qa|asr]
        [max_new_tokens=64] [generation.do_sample=true generation.temperature=0.7 generation.seed=0]

``model_path``: a ``.nemo`` (full or encoder-free) or a Lightning/exp_manager ``.ckpt``. Each input line
(``audio_filepath``, relative paths resolved against the manifest's folder; for ``task=qa`` optionally a
``context`` for a spoken question, or a text ``question`` about the audio) is written back unchanged
plus ``pred_answer`` (qa) or ``pred_text`` (asr). An item that fails (missing/corrupt/empty/too long
audio, invalid JSON, a missing field) gets an ``error`` field naming the manifest line instead; the
others go on. The output is written to a temporary file and renamed. Exit status: 0 if at least one item
succeeded (failures are listed in the summary and the output), 1 if every item failed.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import MISSING, OmegaConf
from tqdm import tqdm

from nemo_aura.parts.files import write_jsonl_atomic
from nemo_aura.parts.manifest import json_lines, resolve_audio

TASKS = ("qa", "asr", "question")


@dataclass
class InferConfig:
    model_path: str = MISSING  # a .nemo (full or encoder-free) or a Lightning/exp_manager .ckpt
    manifest: str = MISSING  # NeMo JSON manifest in
    output: str = MISSING  # the same lines with predictions out
    batch_size: int = 4
    task: str = "qa"
    max_new_tokens: int | None = None  # default: the model config's generation.max_new_tokens, else 64
    pred_field: str | None = None  # default: pred_text (asr) / pred_answer (qa, question)
    generation: dict = field(default_factory=dict)  # more Hugging Face generate options (do_sample, seed, ...)


def load_model(path: str):
    """A trained AuRA/bridge model from a ``.nemo`` or a training ``.ckpt``, in eval mode."""
    from nemo_aura.models.aura_model import AuRAModel

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"model_path: '{path}' does not exist")
    model = AuRAModel.load_checkpoint(str(p)) if p.suffix == ".ckpt" else AuRAModel.restore_from(str(p), map_location="cpu")
    return model.eval()


def read_manifest(path: Path, task: str) -> list[dict]:
    """Manifest lines; a line that is not JSON or lacks a field becomes an item with an ``error``."""
    if not path.is_file():
        raise FileNotFoundError(f"manifest: '{path}' does not exist")
    items = []
    for n, entry in json_lines(path):
        if isinstance(entry, json.JSONDecodeError):
            items.append({"_line": n, "raw": entry.doc, "error": f"{path}:{n}: not valid JSON ({entry.msg})"})
            continue
        needed = ["audio_filepath"] + (["question"] if task == "question" else [])
        missing = [k for k in needed if k not in entry]
        if missing:
            entry["error"] = f"{path}:{n}: missing field(s) {missing}"
        else:
            entry["audio_filepath"] = resolve_audio(path, entry["audio_filepath"])
        entry["_line"] = n
        items.append(entry)
    return items


def predict(model, items: list[dict], cfg: InferConfig) -> None:
    """Fill each item's prediction or error; a failing batch is retried item by item to isolate the bad one."""
    pred = cfg.pred_field or ("pred_text" if cfg.task == "asr" else "pred_answer")
    todo = [it for it in items if "error" not in it]
    bar = tqdm(total=len(items), desc="inference", unit="item")
    bar.update(len(items) - len(todo))
    for i in range(0, len(todo), cfg.batch_size):
        batch = todo[i : i + cfg.batch_size]
        try:
            for it, text in zip(batch, _run(model, batch, cfg)):
                it[pred] = text
        except Exception:
            for it in batch:
                try:
                    it[pred] = _run(model, [it], cfg)[0]
                except Exception as e:  # reported per item; the run goes on
                    it["error"] = f"{cfg.manifest}:{it['_line']} ({it.get('audio_filepath')}): {e}"
        bar.update(len(batch))
    bar.close()


def _run(model, batch: list[dict], cfg: InferConfig) -> list[str]:
    """One batch; for qa each line is a spoken question (with its optional ``context``) or, if it has a
    ``question`` field, a text question about its audio."""
    messages = [_message(model, it, cfg.task) for it in batch]
    return model.generate([it["audio_filepath"] for it in batch], prompts=messages, task=cfg.task,
                          max_new_tokens=cfg.max_new_tokens, **dict(cfg.generation))


def _message(model, item: dict, task: str) -> str:
    if task == "question" or (task == "qa" and item.get("question")):
        return model.prompts.user_message("question", question=item["question"])
    return model.prompts.user_message(task, item.get("context") if task == "qa" else None)


def write_output(items: list[dict], path: Path) -> None:
    write_jsonl_atomic(path, ({k: v for k, v in it.items() if k != "_line"} for it in items))


def run(cfg: InferConfig) -> dict:
    if cfg.task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {cfg.task!r}")
    start = time.time()
    items = read_manifest(Path(cfg.manifest), cfg.task)
    model = load_model(cfg.model_path)
    predict(model, items, cfg)
    write_output(items, Path(cfg.output))
    failed = [it for it in items if "error" in it]
    summary = {"items": len(items), "failed": len(failed), "seconds": round(time.time() - start, 1),
               "failures": [it["error"] for it in failed], "output": cfg.output}
    print(f"[infer] {len(items)} items, {len(items) - len(failed)} ok, {len(failed)} failed, "
          f"{summary['seconds']} s -> {cfg.output}")
    for message in summary["failures"]:
        print(f"[infer] failed: {message}")
    return summary


def main(argv: list[str] | None = None) -> int:
    argv = list(argv if argv is not None else sys.argv[1:])
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0
    cli = OmegaConf.from_cli(argv)
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(InferConfig), cli))
    summary = run(cfg)
    return 0 if summary["items"] > summary["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
