#!/usr/bin/env python
"""What each way of decoding the character CTC read costs and buys: one model, the same utterances, side by side.

    python benchmarks/ctc_decoding_latency.py --nemo exp/default/stage4/aura_encoder_free_lm.nemo \
        --cuts exp/default/stage1/lhotse/mf_test_cuts.jsonl.gz [--items 30] [--repeats 2] --out exp/default/bench_decoding

The model (a character-CTC AuRA or bridge carrying its character LM) is restored once; its read of each spoken
question (``generate_ids(task="asr", contexts=[context])``: layers 1..K, the CTC head, the decoding) is timed under
each decoding in turn, alternating per item and repeated after a warm-up, so drift hits all alike:

- ``greedy``: the argmax path;
- ``lm``: beam search with the model's character LM (its own alpha, beta, beam);
- ``lm_boost``: the same with the words of each question's context boosted (``--boost-alpha``, ``--boost-score``,
  ``--boost-words``);
- ``lm_boost_rescored``: and the beam's N-best rescored by the base LLM (``--rescoring-weight``).

Reports the median read time per decoding, its ratio to greedy, and the corpus WER of the reads (each item's cut
supervision is the reference); writes ``results.json`` and ``results.md``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from nemo_aura.modules.ctc_beam import BOOST_WORDS, context_boosting_tree


def decodings(beam: dict, boost_alpha: float, boost_score: float, rescoring: float,
              boost_words: str = "all") -> dict[str, dict]:
    plain = {k: v for k, v in beam.items() if k not in ("boosting_tree_alpha", "boosting_tree", "llm_rescoring_weight")}
    boosted = {**plain, "boosting_tree_alpha": boost_alpha,
               "boosting_tree": context_boosting_tree(boost_score, boost_words)}
    return {"greedy": {"strategy": "greedy", "beam": plain},
            "lm": {"strategy": "beam_batch", "beam": plain},
            "lm_boost": {"strategy": "beam_batch", "beam": boosted},
            "lm_boost_rescored": {"strategy": "beam_batch", "beam": {**boosted, "llm_rescoring_weight": rescoring}}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nemo", required=True, help="a character-CTC model whose ctc_decoding holds its LM")
    p.add_argument("--cuts", required=True, help="Lhotse cuts of spoken questions (custom.context, supervision text)")
    p.add_argument("--items", type=int, default=30)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--boost-alpha", type=float, default=1.0)
    p.add_argument("--boost-score", type=float, default=2.0)
    p.add_argument("--boost-words", choices=BOOST_WORDS, default="all")
    p.add_argument("--rescoring-weight", type=float, default=0.2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from lhotse import CutSet

    from nemo_aura import AuRAModel
    from nemo_aura.parts.config import plain_dict
    from nemo_aura.parts.files import write_json_atomic, write_text_atomic
    from nemo_aura.scoring.metrics import wer

    model = AuRAModel.restore_from(args.nemo, map_location="cpu").eval()
    beam = plain_dict((model.cfg.get("ctc_decoding") or {}).get("beam"))
    if not beam.get("ngram_lm_model"):
        raise SystemExit(f"{args.nemo}: its ctc_decoding holds no character LM (add one with add_decoding_lm.py)")
    ways = decodings(beam, args.boost_alpha, args.boost_score, args.rescoring_weight, args.boost_words)
    cuts = list(CutSet.from_file(args.cuts).subset(first=args.items))
    waves = [torch.from_numpy(c.resample(model.sample_rate).load_audio()[0]) for c in cuts]
    contexts = [(c.custom or {}).get("context") for c in cuts]
    refs = [" ".join(s.text or "" for s in c.supervisions).strip() for c in cuts]

    decoders = {}
    for name, way in ways.items():  # built once each (the LM read from ARPA), swapped in per read
        model.set_ctc_decoding(way)
        decoders[name] = model.ctc_head.beam_decoder

    def read(name: str, i: int) -> tuple[float, str]:
        model.ctc_head.beam_decoder = decoders[name]
        start = time.perf_counter()
        ids = model.generate_ids([waves[i]], task="asr", contexts=[contexts[i]])[0]
        return time.perf_counter() - start, model.decode_ids(ids)

    for name in ways:  # warm-up: the LM cache, the first boosting tree, the allocator
        read(name, 0)
    seconds = {name: [] for name in ways}
    texts: dict[str, list[str]] = {name: [""] * len(waves) for name in ways}
    for repeat in range(args.repeats):
        for i in range(len(waves)):
            order = list(ways) if (i + repeat) % 2 == 0 else list(reversed(ways))
            for name in order:
                took, texts[name][i] = read(name, i)
                seconds[name].append(took)
        print(f"[decoding] repeat {repeat + 1}/{args.repeats} done", flush=True)
    base = statistics.median(seconds["greedy"])
    rows = {name: {"median_read_s": statistics.median(s), "ratio_to_greedy": statistics.median(s) / base,
                   "wer": wer(texts[name], refs), "wer_other": wer(texts[name], refs[1:] + refs[:1])}
            for name, s in seconds.items()}
    result = {"model": args.nemo, "cuts": args.cuts, "items": len(waves), "repeats": args.repeats,
              "threads": args.threads, "decodings": ways, "results": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "results.json", result)
    lines = ["# The character CTC read: time and WER per decoding (one model, the same utterances)", "",
             f"Model `{args.nemo}`; {len(waves)} utterances of `{Path(args.cuts).name}` x {args.repeats} repeats, "
             f"{args.threads} threads; the read alone (`generate_ids(task=\"asr\", contexts=...)`).", "",
             "| decoding | median read (s) | x greedy | WER | WER vs other utterances |", "|---|---|---|---|---|"]
    lines += [f"| {n} | {r['median_read_s']:.3f} | {r['ratio_to_greedy']:.2f} | {r['wer']:.3f} | {r['wer_other']:.3f} |"
              for n, r in rows.items()]
    write_text_atomic(args.out / "results.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
