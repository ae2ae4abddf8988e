#!/usr/bin/env python
"""Stage 4: encoder removal. Export the encoder-free ``.nemo``, prove no teacher weight is inside (every tensor
compared by value with every teacher tensor: the full model's and the teacher directory's, ``parts/export_proof``),
compare sizes and parameter counts, then load it in a fresh process in which the teacher directory is unreadable
and answer a dev utterance.

    python recipes/aura/local/export_encoder_free.py --nemo exp/t/stage3/aura_distilled.nemo \
        --out exp/t/stage4 --dev-cuts exp/t/stage1/...dev_cuts.jsonl.gz [--teacher-dir D --llm-dir D]
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from nemo_aura.parts.export_proof import compare_to_teacher, directory_tensors, nemo_state_dict, run_guarded
from nemo_aura.parts.files import write_nemo_atomic


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nemo", type=Path, required=True, help="the full (distilled) AuRA .nemo")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dev-cuts", type=Path, required=True, help="a CutSet; its first cut is answered")
    parser.add_argument("--teacher-dir", type=Path, default=None, help="teacher model dir, for the size comparison")
    parser.add_argument("--llm-dir", type=Path, default=None, help="LLM model dir, for the size comparison")
    parser.add_argument("--task", default="asr", help="prompt task for the smoke answer (asr | qa)")
    return parser.parse_args()


def dir_weight_bytes(path: Path | None) -> int | None:
    if path is None or not path.is_dir():
        return None
    return sum(f.stat().st_size for f in path.iterdir() if f.suffix in (".safetensors", ".bin"))


def answer_in_fresh_process(nemo_path: Path, cuts_path: Path, task: str, teacher_dir: Path | None = None) -> dict:
    """Restore in a new interpreter where ``teacher_dir`` is unreadable (``run_guarded``) and answer the first dev cut."""
    code = f"""
import json, time, torch
from lhotse import CutSet
from nemo_aura import AuRAModel
t0 = time.perf_counter()
model = AuRAModel.restore_from({str(nemo_path)!r}, map_location="cpu").eval()
t1 = time.perf_counter()
cut = next(iter(CutSet.from_file({str(cuts_path)!r})))
audio = torch.from_numpy(cut.resample(model.sample_rate).load_audio()[0])
text = model.generate([audio], task={task!r}, max_new_tokens=32)[0]
t2 = time.perf_counter()
print(json.dumps({{"cut_id": cut.id, "reference": cut.supervisions[0].text if cut.supervisions else None,
                  "answer": text, "has_teacher": model.teacher is not None,
                  "restore_seconds": round(t1 - t0, 2), "generate_seconds": round(t2 - t1, 2), **_guard_report()}}))
"""
    out = run_guarded(code, [teacher_dir] if teacher_dir is not None else [])
    if out.returncode != 0:
        raise RuntimeError(f"restoring {nemo_path} in a fresh process failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    from nemo_aura import AuRAModel

    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / "aura_encoder_free.nemo"
    full = AuRAModel.restore_from(str(args.nemo), map_location="cpu")
    counts_full = full.parameter_counts()
    stem_copied = bool(full.cfg.patch_embedding.get("init_from_teacher", False))
    if not target.exists():
        write_nemo_atomic(target, full.export_encoder_free)
    del full
    full_state = nemo_state_dict(args.nemo)
    teacher = {k: v for k, v in full_state.items() if k.startswith(("teacher.", "distillation."))}
    teacher.update(directory_tensors(args.teacher_dir))
    proof = compare_to_teacher(nemo_state_dict(target), teacher, stem_copied=stem_copied)
    if proof["teacher_named_tensors_in_export"] or proof["teacher_valued_tensors_in_export"]:
        raise RuntimeError(f"{target} still holds teacher tensors: by name {proof['teacher_named_examples']}, "
                           f"by value {proof['teacher_valued_examples']}")
    smoke = answer_in_fresh_process(target, args.dev_cuts, args.task, args.teacher_dir)
    if smoke["has_teacher"] or smoke["teacher_dir_access_blocked"] or smoke["teacher_dir_files_mapped"]:
        raise RuntimeError(f"{target} restored with a teacher, or reached for the teacher directory: {smoke}")
    free = AuRAModel.restore_from(str(target), map_location="cpu")
    report = {
        "full_nemo": str(args.nemo), "encoder_free_nemo": str(target),
        "bytes": {
            "full_nemo": args.nemo.stat().st_size, "encoder_free_nemo": target.stat().st_size,
            "teacher_dir_weights": dir_weight_bytes(args.teacher_dir), "llm_dir_weights": dir_weight_bytes(args.llm_dir),
        },
        "parameters": {"full": counts_full, "encoder_free": free.parameter_counts()},
        "teacher_or_head_tensors_in_export": proof["teacher_named_tensors_in_export"] + proof["teacher_valued_tensors_in_export"],
        "teacher_comparison": proof,
        "fresh_process_answer": smoke,
    }
    report["parameters"]["teacher_plus_llm"] = counts_full["teacher"] + counts_full["llm_base"]
    tmp = args.out / "export_report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, args.out / "export_report.json")
    mib = lambda n: "n/a" if n is None else f"{n / 2**20:.1f} MiB"  # noqa: E731
    b, p = report["bytes"], report["parameters"]
    print(f"[stage4] full .nemo {mib(b['full_nemo'])}, encoder-free .nemo {mib(b['encoder_free_nemo'])}, "
          f"teacher dir {mib(b['teacher_dir_weights'])} + LLM dir {mib(b['llm_dir_weights'])}")
    print(f"[stage4] parameters: full {p['full']['total']:,}, encoder-free {p['encoder_free']['total']:,}, "
          f"teacher + LLM {p['teacher_plus_llm']:,}; no teacher/head tensor in the export (its "
          f"{proof['export_tensors']} tensors compared by value with {proof['teacher_tensors_compared']} teacher tensors; "
          f"stem copied from the teacher, then trained: {len(proof['stem_copied_from_teacher'])})")
    print(f"[stage4] fresh-process answer to {smoke['cut_id']}: {smoke['answer']!r} (reference {smoke['reference']!r}; "
          f"restore {smoke['restore_seconds']} s, generate {smoke['generate_seconds']} s)")


if __name__ == "__main__":
    main()
