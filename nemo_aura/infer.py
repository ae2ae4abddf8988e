"""Command-line inference over a NeMo JSON manifest, like NeMo's ``transcribe_speech.py``.

    python -m nemo_aura.infer model_path=aura.nemo manifest=in.json output=out.json [batch_size=4] [task=qa|asr]
        [max_new_tokens=64] [generation.do_sample=true generation.temperature=0.7 generation.seed=0]

``model_path``: a ``.nemo`` (full or encoder-free), a Lightning/exp_manager ``.ckpt``, or a pretrained model's
name (``aura_smollm2_135m_whisper_base``, see ``AuRAModel.list_available_models()``). Each input line
(``audio_filepath``, relative paths resolved against the manifest's folder; for ``task=qa`` optionally a
``context`` for a spoken question, or a text ``question`` about the audio) is written back unchanged
plus ``pred_answer`` (qa) or ``pred_text`` (asr). An item that fails (missing/corrupt/empty/NaN/too long
audio, a directory, invalid JSON, a line that is not an object, a missing field, a non-string audio_filepath)
gets an ``error`` field naming the manifest line instead; the others go on. Before the model is loaded: the
task, ``batch_size``/``max_new_tokens`` >= 1, an output that is not the manifest and can be written, a
manifest with lines. The output is written to a temporary file and renamed. Exit status: 0 if at least one
item succeeded (failures are listed in the summary and the output), 1 if every item failed, 2 if nothing
ran (the reason on stderr).
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from tqdm import tqdm

from nemo_aura.parts.files import write_jsonl_atomic
from nemo_aura.parts.manifest import entry_error, json_lines, resolve_audio

TASKS = ("qa", "asr", "question")


@dataclass
class InferConfig:
    model_path: str = MISSING  # a .nemo (full or encoder-free), a Lightning/exp_manager .ckpt or a pretrained name
    manifest: str = MISSING  # NeMo JSON manifest in
    output: str = MISSING  # the same lines with predictions out
    batch_size: int = 4
    task: str = "qa"
    max_new_tokens: int | None = None  # default: the model config's generation.max_new_tokens, else 64
    pred_field: str | None = None  # default: pred_text (asr) / pred_answer (qa, question)
    generation: dict = field(default_factory=dict)  # more Hugging Face generate options (do_sample, seed, ...)


def load_model(path: str):
    """A trained AuRA/bridge model from a ``.nemo`` or a training ``.ckpt``, or a pretrained model by name
    (``AuRAModel.list_available_models()``), in eval mode."""
    from nemo_aura.models.aura_model import AuRAModel
    from nemo_aura.parts.pretrained import MODELS

    p = Path(path)
    if not p.exists() and path in MODELS:
        return AuRAModel.from_pretrained(path, map_location="cpu").eval()
    if not p.is_file():
        raise FileNotFoundError(f"model_path: '{path}' is neither a file nor a pretrained model name "
                                f"({', '.join(sorted(MODELS))})")
    model = AuRAModel.load_checkpoint(str(p)) if p.suffix == ".ckpt" else AuRAModel.restore_from(str(p), map_location="cpu")
    return model.eval()


@dataclass
class Item:
    """One manifest line: written back as it was read, plus the ``added`` fields (the prediction or an ``error``)."""

    line: int
    entry: dict | None  # the line as read; None when it is not a JSON object (then ``raw`` holds its text)
    raw: str | None = None
    audio: str | None = None  # audio_filepath resolved against the manifest's folder (the line keeps its own)
    added: dict = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return "error" in self.added

    def row(self) -> dict:
        return {**(self.entry if self.entry is not None else {"raw": self.raw}), **self.added}


def read_manifest(path: Path, task: str) -> list[Item]:
    """Manifest lines; a line that is not a JSON object, lacks a field or has a non-string ``audio_filepath``
    becomes an item with an ``error`` naming the line."""
    if not path.is_file():
        raise FileNotFoundError(f"manifest: '{path}' " + ("is a directory" if path.is_dir() else "does not exist"))
    items = []
    for n, entry in json_lines(path):
        needed = ("audio_filepath",) + (("question",) if task == "question" else ())
        error = entry_error(path, n, entry, needed)
        if not isinstance(entry, dict):
            raw = entry.doc if isinstance(entry, json.JSONDecodeError) else json.dumps(entry)
            items.append(Item(n, None, raw=raw, added={"error": error}))
        elif error:
            items.append(Item(n, entry, added={"error": error}))
        else:
            items.append(Item(n, entry, audio=resolve_audio(path, entry["audio_filepath"])))
    return items


def predict(model, items: list[Item], cfg: InferConfig) -> None:
    """Fill each item's prediction or error; a failing batch is retried item by item to isolate the bad one."""
    pred = cfg.pred_field or ("pred_text" if cfg.task == "asr" else "pred_answer")
    todo = [it for it in items if not it.failed]
    bar = tqdm(total=len(items), desc="inference", unit="item")
    bar.update(len(items) - len(todo))
    for i in range(0, len(todo), cfg.batch_size):
        batch = todo[i : i + cfg.batch_size]
        try:
            for it, text in zip(batch, _run(model, batch, cfg)):
                it.added[pred] = text
        except Exception:
            for it in batch:
                try:
                    it.added[pred] = _run(model, [it], cfg)[0]
                except Exception as e:  # reported per item; the run goes on
                    it.added["error"] = f"{cfg.manifest}:{it.line} ({it.entry['audio_filepath']}): {e}"
        bar.update(len(batch))
    bar.close()


def _run(model, batch: list[Item], cfg: InferConfig) -> list[str]:
    """One batch; for qa each line is a spoken question (with its optional ``context``) or, if it has a
    ``question`` field, a text question about its audio. The model's own paths answer: spoken questions through
    ``contexts`` (a vocab-span model's reader, and a CTC read that boosts the context's words), text questions
    through ``questions``; asr keeps the task's own prompt, whose reading interface may transcribe directly (the
    vocab span's CTC tokens), with a line's ``context`` for the read's biasing."""
    options = {"max_new_tokens": cfg.max_new_tokens, **dict(cfg.generation)}
    audio = [it.audio for it in batch]
    contexts = [it.entry.get("context") for it in batch]
    if cfg.task == "asr":
        return model.generate(audio, task="asr", contexts=contexts, **options)
    asked = [cfg.task == "question" or bool(it.entry.get("question")) for it in batch]
    out: list[str] = [""] * len(batch)
    for text_question in (True, False):
        rows = [i for i, a in enumerate(asked) if a == text_question]
        if not rows:
            continue
        kind = {"questions": [batch[i].entry["question"] for i in rows]} if text_question else \
            {"task": "qa", "contexts": [contexts[i] for i in rows]}
        for i, text in zip(rows, model.generate([audio[i] for i in rows], **kind, **options)):
            out[i] = text
    return out


def write_output(items: list[Item], path: Path) -> None:
    write_jsonl_atomic(path, (it.row() for it in items))


def check_config(cfg: InferConfig) -> None:
    """Everything that can be checked before the model is loaded: the task, the sizes, and that the output can be
    written and is not the manifest (results are never computed only to be lost, nor the input overwritten)."""
    if cfg.task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {cfg.task!r}")
    if not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {cfg.batch_size!r}")
    if cfg.max_new_tokens is not None and cfg.max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {cfg.max_new_tokens!r}")
    manifest, output = Path(cfg.manifest), Path(cfg.output)
    if output.resolve() == manifest.resolve() or (output.exists() and manifest.exists() and output.samefile(manifest)):
        raise ValueError(f"output: '{output}' is the manifest itself; write the predictions to another file")
    if output.is_dir():
        raise IsADirectoryError(f"output: '{output}' is a directory; give a file path")
    folder = output.resolve().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(f"output: '{output}' cannot be written: '{folder}' is not a directory")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise PermissionError(f"output: '{output}' cannot be written: no file can be created in '{folder}' "
                              f"({e.strerror})") from None


def run(cfg: InferConfig) -> dict:
    start = time.time()
    check_config(cfg)
    items = read_manifest(Path(cfg.manifest), cfg.task)
    if not items:
        raise ValueError(f"manifest: '{cfg.manifest}' has no lines (an empty manifest): nothing to infer")
    model = load_model(cfg.model_path)
    predict(model, items, cfg)
    write_output(items, Path(cfg.output))
    failed = [it for it in items if it.failed]
    summary = {"items": len(items), "failed": len(failed), "seconds": round(time.time() - start, 1),
               "failures": [it.added["error"] for it in failed], "output": cfg.output}
    print(f"[infer] {len(items)} items, {len(items) - len(failed)} ok, {len(failed)} failed, "
          f"{summary['seconds']} s -> {cfg.output}")
    for message in summary["failures"]:
        print(f"[infer] failed: {message}")
    return summary


def main(argv: list[str] | None = None) -> int:
    """Exit status 0: some items succeeded; 1: all failed; 2: nothing was run (a bad argument, manifest, output
    path or model file, reported in one line on stderr)."""
    argv = list(argv if argv is not None else sys.argv[1:])
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0
    try:
        cli = OmegaConf.from_cli(argv)
        try:
            cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(InferConfig), cli))
        except OmegaConfBaseException as e:  # an unknown key or a value of the wrong type
            key = f"{e.full_key}: " if getattr(e, "full_key", None) else ""
            raise ValueError(f"{key}{str(e).splitlines()[0]} (python -m nemo_aura.infer --help)") from None
        summary = run(cfg)
    except (ValueError, OSError) as e:  # argument, manifest, output or model-file errors: before any inference
        print(f"[infer] error: {e}", file=sys.stderr)
        return 2
    return 0 if summary["items"] > summary["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
