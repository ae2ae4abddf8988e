"""NeMo JSON manifests (one JSON object per line), read with line numbers for error messages."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator


def json_lines(path: Path) -> Iterator[tuple[int, dict | json.JSONDecodeError]]:
    """``(line number, entry)`` for each non-empty line; a line that is not JSON yields its decode error."""
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as e:
            yield n, e


def resolve_audio(manifest: Path, audio_filepath: str) -> str:
    """Relative audio paths are relative to the manifest, as in NeMo."""
    audio = Path(audio_filepath)
    return str(audio if audio.is_absolute() else Path(manifest).parent / audio)
