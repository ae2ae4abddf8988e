"""Teacher-target cache: run the frozen teacher once, store its pooled mapped layers per cut.

Each cut gets a Lhotse ``Array`` in ``custom["teacher_targets"]`` of shape ``(N, L, D)`` (fp16: N
patches at the student's patch rate, L mapped teacher layers listed in ``custom["teacher_layers"]``).
The manifest is the index; the arrays live in a ``NumpyFilesWriter`` directory next to it.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from lhotse import CutSet
from lhotse.array import Array
from lhotse.dataset.collation import collate_audio
from lhotse.features.io import NumpyFilesWriter
from lhotse.utils import fastcopy
from torch import Tensor
from tqdm import tqdm

from nemo_aura.parts.files import link_atomic

TARGETS_FIELD = "teacher_targets"
LAYERS_FIELD = "teacher_layers"


def collate_teacher_targets(cuts: CutSet) -> dict[str, Tensor | dict[int, Tensor]]:
    """``teacher_targets`` ``{layer: (B, N_max, D)}`` (zero-padded) and ``teacher_target_lens`` (B,)."""
    layer_lists = {tuple(c.custom[LAYERS_FIELD]) for c in cuts}
    if len(layer_lists) != 1:
        raise ValueError(f"cuts in one batch carry teacher targets of different layer sets: {sorted(layer_lists)}")
    layers = list(layer_lists.pop())
    arrays = [torch.from_numpy(c.load_custom(TARGETS_FIELD)) for c in cuts]
    lens = torch.tensor([a.shape[0] for a in arrays])
    stacked = torch.nn.utils.rnn.pad_sequence(arrays, batch_first=True)
    return {"teacher_targets": {t: stacked[:, :, j] for j, t in enumerate(layers)}, "teacher_target_lens": lens}


def cache_signature(model) -> dict:
    """What the cached targets depend on; stage 3 refuses a cache whose signature differs."""
    from omegaconf import OmegaConf

    return {
        "teacher": OmegaConf.to_container(model.cfg.teacher, resolve=True),
        "teacher_layers": list(model.distillation.teacher_layers),
        "patch_size": model.patch_embedding.patch_size,
        "preprocessor": OmegaConf.to_container(model.cfg.patch_embedding.preprocessor, resolve=True),
        "sample_rate": model.sample_rate,
    }


def build_teacher_cache(model, cuts: CutSet, out_dir: Path, batch_size: int = 8, reuse_from: Path | None = None) -> Path:
    """Write ``out_dir/cuts.jsonl.gz`` (+ ``targets/``, ``cache.json``); return the manifest path.

    Rerun-safe: a finished cache (``cache.json`` present with the same signature) is reused; arrays of an
    interrupted run are kept in ``targets.partial/`` and only missing or unreadable ones are recomputed;
    the manifest and ``cache.json`` are written last, atomically. ``reuse_from``: another finished cache
    (same signature) whose arrays of the same audio are linked in, not recomputed.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest, meta_path = out_dir / "cuts.jsonl.gz", out_dir / "cache.json"
    signature = cache_signature(model)
    if manifest.exists() and meta_path.exists():
        if json.loads(meta_path.read_text())["signature"] == signature:
            return manifest
        raise ValueError(f"{out_dir} holds a teacher cache for another teacher/patch config; remove it first")
    final, partial = out_dir / "targets", out_dir / "targets.partial"
    layers = list(model.distillation.teacher_layers)
    cut_list = sorted(cuts, key=lambda c: c.id)
    by_length = sorted(cut_list, key=lambda c: (c.duration, c.id))  # similar lengths share a (short) teacher window
    writer = NumpyFilesWriter(partial)
    reused = _link_cached_arrays(reuse_from, signature, cut_list, partial) if reuse_from is not None else 0
    done = {}
    start, computed = time.time(), 0
    model.eval()
    for i in tqdm(range(0, len(by_length), batch_size), desc="teacher targets", unit="batch"):
        chunk = by_length[i : i + batch_size]
        todo = [c for c in chunk if _readable(partial, c.id) is None]
        for c in chunk:
            if c not in todo:
                done[c.id] = _readable(partial, c.id)
        if not todo:
            continue
        batch = CutSet.from_cuts(c if c.sampling_rate == model.sample_rate else c.resample(model.sample_rate) for c in todo)
        audio, audio_lens = collate_audio(batch)
        patch_lens = model.patch_lengths(audio_lens)
        targets = model.compute_teacher_targets(audio, audio_lens, patch_lens)
        for b, cut in enumerate(todo):
            arr = torch.stack([targets[t][b, : patch_lens[b]] for t in layers], dim=1).half().numpy()
            key = writer.write(_key(cut.id), arr)
            done[cut.id] = (key, arr.shape)
            computed += 1
    if final.exists():  # killed after the rename but before the manifest was written
        _merge_into(partial, final)
    else:
        os.replace(partial, final)
    out = [
        fastcopy(
            c,
            custom={
                **(c.custom or {}),
                TARGETS_FIELD: Array(storage_type="numpy_files", storage_path=str(final.resolve()),
                                     storage_key=done[c.id][0], shape=list(done[c.id][1])),
                LAYERS_FIELD: layers,
            },
        )
        for c in cut_list
    ]
    tmp = out_dir / "cuts.tmp.jsonl.gz"
    CutSet.from_cuts(out).to_file(tmp)
    os.replace(tmp, manifest)
    meta = {
        "signature": signature, "num_cuts": len(out), "computed_now": computed, "linked_from_other_cache": reused,
        "seconds": round(time.time() - start, 1), "dtype": "float16", "layout": "(patches, layers, dim)",
        "bytes": sum(f.stat().st_size for f in final.rglob("*.npy")),
    }
    tmp_meta = out_dir / "cache.json.tmp"
    tmp_meta.write_text(json.dumps(meta, indent=2))
    os.replace(tmp_meta, meta_path)
    return manifest


def _audio_identity(cut) -> tuple:
    """What makes two cuts the same teacher input: id, audio file name (stage 1 names wavs by a hash of
    text, voice and seed), offset and duration."""
    return cut.id, Path(cut.recording.sources[0].source).name, round(cut.start, 3), round(cut.duration, 3)


def _link_cached_arrays(other_dir: Path, signature: dict, cuts: list, partial: Path) -> int:
    """Link ``other_dir``'s arrays of the same audio into ``partial`` (the interrupted-run store, which the
    loop already trusts); returns how many. Refuses a cache of another teacher/patch configuration."""
    other_dir = Path(other_dir)
    meta, manifest = other_dir / "cache.json", other_dir / "cuts.jsonl.gz"
    if not (meta.is_file() and manifest.is_file()):
        raise FileNotFoundError(f"reuse_from '{other_dir}': no finished teacher cache (cache.json + cuts.jsonl.gz)")
    if json.loads(meta.read_text())["signature"] != signature:
        raise ValueError(f"reuse_from '{other_dir}': cached for another teacher/patch config; it cannot be reused")
    stored = {_audio_identity(c): c.custom[TARGETS_FIELD] for c in CutSet.from_file(manifest)}
    linked = 0
    for cut in cuts:
        array = stored.get(_audio_identity(cut))
        key = _key(cut.id) + ".npy"
        dest = partial / key[:3] / key
        if array is None or dest.exists():
            continue
        link_atomic(Path(array.storage_path) / array.storage_key, dest)
        linked += 1
    return linked


def _key(cut_id: str) -> str:
    return cut_id.replace("/", "_")


def _readable(storage: Path, cut_id: str) -> tuple[str, tuple] | None:
    """An array from an interrupted run that loads completely (else None: recompute it)."""
    key = _key(cut_id) + ".npy"
    path = storage / key[:3] / key
    if not path.exists():
        return None
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        return "/".join(path.parts[-2:]), tuple(arr.shape)
    except (ValueError, OSError, EOFError):
        path.unlink()
        return None


def _merge_into(partial: Path, final: Path) -> None:
    for f in partial.rglob("*.npy"):
        dest = final / f.relative_to(partial)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(f, dest)
    shutil.rmtree(partial)
