"""Atomic writes: every output appears complete under its final name or not at all, so a killed stage never
leaves a half-written file that a rerun would take as done."""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary sibling of ``path`` (same suffix, so writers that look at it still work) for the caller
    to write; renamed over ``path`` when the block ends without an error, removed when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_nemo_atomic(path: str | Path, write) -> Path:
    """A ``.nemo`` written by ``write(tmp_path)`` (e.g. ``model.save_to``) that takes its name only once it is complete
    and readable: a rerun that skips on the name never takes a cut archive for a finished stage."""
    from nemo_aura.parts.restore import nemo_model_target

    with atomic_path(path) as tmp:
        write(str(tmp))
        nemo_model_target(str(tmp))  # raises, naming the file, when the archive is cut or has no config
    return Path(path)


def write_json_atomic(path: str | Path, data, **dumps_kwargs) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, **dumps_kwargs))


def write_jsonl_atomic(path: str | Path, rows) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def link_atomic(src: str | Path, dest: str | Path) -> None:
    """``dest`` as a hard link to ``src`` (a copy across file systems), appearing complete or not at all: a
    larger corpus shares the smaller one's wavs and teacher targets without duplicating them on disk."""
    import shutil

    with atomic_path(dest) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
