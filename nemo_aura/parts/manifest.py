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
    """Relative audio paths are relative to the manifest's folder, as NeMo's manifest readers take them."""
    audio = Path(audio_filepath).expanduser()
    return str(audio if audio.is_absolute() else Path(manifest).parent / audio)


def _json_kind(value) -> str:
    return {type(None): "null", list: "an array", str: "a string", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


def entry_error(path: Path, n: int, entry, needed: tuple[str, ...] = ("audio_filepath",)) -> str | None:
    """What is wrong with line ``n`` of manifest ``path`` as ``json_lines`` read it, or None: not JSON, not a JSON
    object, a missing field in ``needed``, or an ``audio_filepath`` that is not a non-empty string."""
    if isinstance(entry, json.JSONDecodeError):
        return f"{path}:{n}: not valid JSON ({entry.msg})"
    if not isinstance(entry, dict):
        return f"{path}:{n}: a manifest line must be a JSON object, got {_json_kind(entry)}"
    missing = [k for k in needed if k not in entry]
    if missing:
        return f"{path}:{n}: missing field(s) {missing}"
    audio = entry.get("audio_filepath")
    if "audio_filepath" in entry and not (isinstance(audio, str) and audio.strip()):
        return f"{path}:{n}: audio_filepath must be a path (a non-empty string), got {_json_kind(audio)} {audio!r}"
    return None


def read_audio_manifest(path: str | Path) -> list[tuple[int, dict]]:
    """A NeMo JSON manifest as (line number, entry) with ``audio_filepath`` resolved against its folder
    (``resolve_audio``); the first bad line is an error naming it (``entry_error``). No lines: an empty list."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest '{path}' " + ("is a directory" if path.is_dir() else "does not exist"))
    entries = []
    for n, entry in json_lines(path):
        error = entry_error(path, n, entry)
        if error:
            raise ValueError(error)
        entries.append((n, {**entry, "audio_filepath": resolve_audio(path, entry["audio_filepath"])}))
    return entries


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
