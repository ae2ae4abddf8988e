"""Stage 4's proof that an encoder-free ``.nemo`` holds no teacher: by value, not by name, and by use.

- ``compare_to_teacher``: every tensor of the export is compared with every teacher tensor of the same shape (the
  full model's ``teacher.*`` / ``distillation.*`` tensors and every tensor in the teacher's own directory): equal
  values are a copy; a centred correlation >= ``CORRELATED`` is a copy that was trained further. Only the audio
  stem of a model built with ``patch_embedding.init_from_teacher`` (lever 5) may be such a copy; it is reported.
  Constant tensors (a LayerNorm's ones, zero biases) carry nothing and are skipped.
- ``run_guarded``: Python code in a fresh interpreter in which the teacher directory is unreadable: opening or
  listing anything under it raises ``PermissionError`` (an audit hook, so it holds for root too), and files mapped
  from it at the end (native loaders) are reported.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import torch

NAME_PREFIXES = ("teacher.", "distillation.")
CORRELATED = 0.9
MIN_NUMEL = 16
STEM_PREFIX = "patch_embedding."


def nemo_state_dict(nemo_path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors stored in a ``.nemo`` (its ``model_weights.ckpt``)."""
    with tarfile.open(nemo_path) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("model_weights.ckpt"))
        return torch.load(tar.extractfile(member), map_location="cpu", weights_only=True)


def directory_tensors(path: str | Path | None) -> dict[str, torch.Tensor]:
    """Every tensor of the weight files (``*.safetensors``, ``*.bin``, ``*.pt``) in a model directory."""
    out: dict[str, torch.Tensor] = {}
    if path is None or not Path(path).is_dir():
        return out
    for f in sorted(Path(path).iterdir()):
        if f.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(f))
        elif f.suffix in (".bin", ".pt"):
            tensors = torch.load(f, map_location="cpu", weights_only=True)
        else:
            continue
        out.update({f"{f.name}:{k}": v for k, v in tensors.items() if isinstance(v, torch.Tensor)})
    return out


def _flat(t: torch.Tensor) -> torch.Tensor | None:
    """The tensor as float64 values, or None when it says nothing (not floating, too small, constant)."""
    if not t.is_floating_point() or t.numel() < MIN_NUMEL:
        return None
    x = t.detach().reshape(-1).to(torch.float64)
    return None if float(x.std()) == 0.0 else x


def compare_to_teacher(export: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor],
                       stem_copied: bool = False) -> dict:
    """See the module docstring. ``stem_copied``: the model was built with ``init_from_teacher``."""
    by_shape: dict[tuple, list[tuple[str, torch.Tensor]]] = {}
    compared = 0
    for name, t in teacher.items():
        x = _flat(t)
        if x is not None:
            by_shape.setdefault(tuple(t.shape), []).append((name, x))
            compared += 1
    named = sorted(k for k in export if k.startswith(NAME_PREFIXES))
    copies, allowed = [], []
    for name, t in export.items():
        x = _flat(t)
        if x is None:
            continue
        xc = x - x.mean()
        for teacher_name, y in by_shape.get(tuple(t.shape), []):
            identical = torch.equal(x, y)
            yc = y - y.mean()
            corr = 1.0 if identical else float(xc @ yc / (xc.norm() * yc.norm()))
            if identical or abs(corr) >= CORRELATED:
                found = {"tensor": name, "teacher_tensor": teacher_name, "identical": identical,
                         "correlation": round(corr, 4)}
                (allowed if stem_copied and name.startswith(STEM_PREFIX) else copies).append(found)
    return {
        "export_tensors": len(export), "teacher_tensors_compared": compared,
        "teacher_named_tensors_in_export": len(named), "teacher_named_examples": named[:5],
        "teacher_valued_tensors_in_export": len(copies), "teacher_valued_examples": copies[:5],
        "stem_copied_from_teacher": allowed,  # lever 5: copied, then trained (identical: copied, never trained)
    }


GUARD = r"""
import json, os, sys
_forbidden = [os.path.abspath(p) for p in json.loads(os.environ["NEMO_AURA_UNREADABLE"])]
_forbidden += [os.path.realpath(p) for p in _forbidden]
_blocked = []
def _inside(path):
    if isinstance(path, int):
        return False
    try:
        p = os.path.abspath(os.fsdecode(path))
    except TypeError:
        return False
    return any(p == f or p.startswith(f + os.sep) for f in _forbidden)
def _guard(event, args):
    if event in ("open", "os.listdir", "os.scandir", "os.chdir", "shutil.copyfile", "shutil.copytree") and args \
            and _inside(args[0]):
        _blocked.append(os.fsdecode(args[0]))
        raise PermissionError(13, "unreadable in this check (the teacher directory)", os.fsdecode(args[0]))
sys.addaudithook(_guard)
def _guard_report():
    try:
        maps = open("/proc/self/maps").read().splitlines()
    except OSError:
        maps = []
    mapped = sorted({line.split()[-1] for line in maps if line.split() and _inside(line.split()[-1])})
    return {"teacher_dir_unreadable": _forbidden[:1], "teacher_dir_access_blocked": _blocked,
            "teacher_dir_files_mapped": mapped}
"""


def run_guarded(code: str, unreadable: list[str | Path], timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where the ``unreadable`` folders cannot be opened or listed; the code
    may call ``_guard_report()`` (what it tried, what is mapped) and print it."""
    env = {**os.environ, "NEMO_AURA_UNREADABLE": json.dumps([str(p) for p in unreadable])}
    return subprocess.run([sys.executable, "-c", GUARD + code], capture_output=True, text=True, env=env, timeout=timeout)
