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


def write_cut_mix(paths: list[str | Path], out: Path) -> Path:
    """One Lhotse CutSet file holding the cuts of ``paths`` in order (each cut keeps its own ``task``), written
    atomically; an existing ``out`` is kept (rerun-safe). Training samplers shuffle it."""
    from lhotse import CutSet

    out = Path(out)
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name("tmp-" + out.name)
        CutSet.from_cuts(c for p in paths for c in CutSet.from_file(p)).to_file(tmp)
        tmp.replace(out)
    return out


def main(argv=None) -> None:
    """``python -m nemo_aura.parts.manifest mix OUT IN [IN ...]``: concatenate Lhotse CutSets (recipe stage 5)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3 or args[0] != "mix":
        raise SystemExit("usage: python -m nemo_aura.parts.manifest mix OUT.jsonl.gz IN.jsonl.gz [IN ...]")
    missing = [p for p in args[2:] if not Path(p).is_file()]
    if missing:
        raise SystemExit(f"mix: input cut files do not exist: {missing}")
    print(write_cut_mix(args[2:], Path(args[1])))


if __name__ == "__main__":
    main()
