#!/usr/bin/env python
"""Tune the character LM's beam search for a character-CTC model on dev sets (as NeMo's eval_beamsearch_ngram_ctc).

    python recipes/aura/local/tune_decoding_lm.py --model exp/default/stage4/aura_encoder_free.nemo \
        --dev distill_dev=exp/default/stage1/lhotse/distill_dev_cuts.jsonl.gz --dev mf_dev=... --dev qa_dev=... \
        --text .../distill_train_cuts.jsonl.gz --text .../qa_train_cuts.jsonl.gz --text .../mf_train_cuts.jsonl.gz \
        --orders 6,8 --alphas 0.6,1.0,1.5 --betas 0,1 --beam-sizes 8 --out exp/default/ctc_lm_tuning

The model reads each dev utterance once (its CTC log-probs under its ASR prompt, as ``transcribe`` reads them); then
every combination of LM order, LLM vocabulary words the LM also learns (``--lexicon-sizes``: the spelling of the N
commonest words of the LLM's vocabulary, ``char_lm.vocabulary_words``), LM weight (alpha), per-character bonus
(beta), beam size and context-biasing weight and score (``--boost-alphas``, ``--boost-scores``: the words of each
spoken question's context, a QA cut's ``custom.context``, boosted by NeMo's phrase-boosting tree; 0 = off) decodes
the same log-probs, and each ``--rescoring-weights`` picks from the beam's N-best by beam score + weight x the base
LLM's log-likelihood of the hypothesis (``AuRAModel.text_log_likelihoods``; 0 = the beam's best). Writes
``results.{json,md}``: corpus WER per dev set (and against the next utterance's transcript) and the mean over the
sets, best first; greedy decoding is the first row. Dev sets are Lhotse cuts with transcripts (``CUTS:closed_book``:
only a QA set's closed-book questions, which come with no context to boost).
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a saved model with a character CTC head (reading.span vocab)")
    p.add_argument("--dev", action="append", required=True, metavar="NAME=CUTS[:closed_book]")
    p.add_argument("--text", action="append", required=True, help="Lhotse cuts whose transcripts the LM learns")
    p.add_argument("--orders", default="8")
    p.add_argument("--lexicon-sizes", default="0",
                   help="how many of the LLM's commonest vocabulary words the LM also learns (0: transcripts only)")
    p.add_argument("--alphas", default="1.0")
    p.add_argument("--betas", default="1.0")
    p.add_argument("--beam-sizes", default="8")
    p.add_argument("--boost-alphas", default="0", help="context-biasing weights (0: none)")
    p.add_argument("--boost-scores", default="1.0", help="the boosting tree's context_score per character")
    p.add_argument("--boost-words", default="all", help="which context words are boosted: all, capitalized (or both)")
    p.add_argument("--rescoring-weights", default="0",
                   help="weights of the base LLM's log-likelihood when the beam's N-best are rescored (0: none)")
    p.add_argument("--limit", type=int, default=None, help="utterances per dev set")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    return p.parse_args(argv)


def floats(spec: str) -> list[float]:
    return [float(x) for x in spec.split(",") if x.strip()]


def dev_log_probs(model, specs: list[str], limit: int | None) -> dict[str, list[dict]]:
    """{set: [{"ref", "log_probs"}]}: the character head's log-probs of each utterance, read as ``transcribe`` reads."""
    from lhotse import CutSet

    from nemo_aura.scoring.items import is_closed_book, split_set_spec

    head = model.ctc_head
    seen: list[torch.Tensor] = []
    logits = head.logits

    def recording(states):  # the read's logits, their log-probs kept
        out = logits(states)
        seen.append(out[0].log_softmax(-1).float())
        return out

    head.logits, head.beam_decoder = recording, None
    sets = {}
    for spec in specs:
        name, path, closed_only = split_set_spec(spec, "--dev")
        cuts = CutSet.from_file(path)
        if closed_only:
            cuts = cuts.filter(is_closed_book)
        rows = []
        for cut in itertools.islice(cuts, limit):
            ref = " ".join(s.text or "" for s in cut.supervisions).strip()
            if not ref:
                raise SystemExit(f"--dev {name}: cut {cut.id} has no transcript")
            audio = cut.resample(16000).load_audio()[0] if cut.sampling_rate != 16000 else cut.load_audio()[0]
            seen.clear()
            with torch.no_grad():
                model.transcribe([torch.as_tensor(audio)], batch_size=1, verbose=False)
            rows.append({"ref": ref, "log_probs": seen[-1], "context": (cut.custom or {}).get("context")})
        if not rows:
            raise SystemExit(f"--dev {spec!r}: no {'closed-book ' if closed_only else ''}utterances in {path}")
        sets[name] = rows
        print(f"[tune] {name}: {len(rows)} utterances read", flush=True)
    head.logits = logits
    return sets


def score(rows: list[dict], hyps: list[str]) -> dict:
    from nemo_aura.scoring.metrics import wer

    refs = [r["ref"] for r in rows]
    return {"wer": wer(hyps, refs), "wer_other": wer(hyps, refs[1:] + refs[:1])}


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from add_decoding_lm import build_lm, transcripts
    from nemo_aura import AuRAModel
    from nemo_aura.modules.ctc_beam import BOOST_WORDS, CTCBeamDecoder, context_boosting_tree
    from nemo_aura.modules.vocab_ctc import (
        ALPHABET, CharacterCTCHead, greedy_path, labels_to_text, pick_rescored, rescorable_hypotheses, text_to_labels)
    from nemo_aura.parts.char_lm import vocabulary_words
    from nemo_aura.parts.files import write_json_atomic, write_text_atomic

    words = [w for w in args.boost_words.split(",") if w]
    if not words or set(words) - set(BOOST_WORDS):
        raise SystemExit(f"--boost-words {args.boost_words!r}: expected {' and/or '.join(BOOST_WORDS)}")
    boost_alphas = floats(args.boost_alphas)
    boosts = ([(0.0, 0.0, "all")] if 0.0 in boost_alphas else []) + [
        (a, sc, w) for a in boost_alphas if a for sc in floats(args.boost_scores) for w in words]
    model = AuRAModel.restore_from(args.model, map_location="cpu").eval()
    if not isinstance(getattr(model, "ctc_head", None), CharacterCTCHead):
        raise SystemExit(f"{args.model}: no character CTC head (loss.ctc_vocabulary: characters) to decode")
    sets = dev_log_probs(model, args.dev, args.limit)
    weights = floats(args.rescoring_weights)

    def nbest(decoder, row) -> list[tuple[str, float, float]]:
        """(text, beam score, LLM log-likelihood) of the beam's hypotheses (only the best, unscored, without
        rescoring)."""
        if not any(weights):
            labels, beam_score = decoder(row["log_probs"], context=row["context"])
            return [(labels_to_text(labels), beam_score, 0.0)]
        return rescorable_hypotheses(decoder, row["log_probs"], row["context"], model.text_log_likelihoods)
    texts = transcripts(args.text)
    args.out.mkdir(parents=True, exist_ok=True)

    results = [{"decoding": "greedy", **{n: score(rows, [labels_to_text(greedy_path(r["log_probs"])[0]) for r in rows])
                                         for n, rows in sets.items()}}]
    lexicon_sizes = [int(n) for n in floats(args.lexicon_sizes)]
    vocabulary = vocabulary_words(model.tokenizer, max(lexicon_sizes)) if any(lexicon_sizes) else []
    for order, lexicon_size in itertools.product(sorted({int(o) for o in floats(args.orders)}), lexicon_sizes):
        lm = build_lm(texts, order, args.out / f"char_lm_{order}_{lexicon_size}.arpa", vocabulary[:lexicon_size])
        for alpha, beta, beam, (boost, boost_score, boost_words) in itertools.product(
                floats(args.alphas), floats(args.betas), floats(args.beam_sizes), boosts):
            decoder = CTCBeamDecoder(len(ALPHABET), beam_size=int(beam), lm_path=lm, lm_alpha=alpha, beam_beta=beta,
                                     boosting_tree_alpha=boost,
                                     boosting_tree=context_boosting_tree(boost_score, boost_words),
                                     text_to_labels=text_to_labels)
            start = time.perf_counter()
            found = {name: [nbest(decoder, r) for r in rows] for name, rows in sets.items()}
            seconds = (time.perf_counter() - start) / max(sum(map(len, sets.values())), 1)
            for weight in weights:
                row = {"decoding": "beam_batch", "order": order, "lexicon_words": lexicon_size, "alpha": alpha,
                       "beta": beta, "beam_size": int(beam),
                       "boost_alpha": boost, "boost_score": boost_score if boost else None,
                       "boost_words": boost_words if boost else None, "rescoring_weight": weight,
                       "seconds_per_utterance": round(seconds, 4)}
                for name, rows in sets.items():
                    row[name] = score(rows, [pick_rescored(hyps, weight)[0] for hyps in found[name]])
                results.append(row)
                print(f"[tune] order {order} lexicon {lexicon_size} alpha {alpha:g} beta {beta:g} beam {int(beam)} "
                      f"boost {boost:g}"
                      f"{f' x {boost_score:g} ({boost_words})' if boost else ''} rescoring {weight:g}: " +
                      ", ".join(f"{n} {row[n]['wer']:.3f}" for n in sets), flush=True)
    for row in results:
        row["mean_wer"] = sum(row[n]["wer"] for n in sets) / len(sets)
    results.sort(key=lambda r: (r["decoding"] != "greedy", r["mean_wer"]))
    write_json_atomic(args.out / "results.json", {"model": args.model, "dev": args.dev, "text": args.text,
                                                  "results": results})
    lines = ["# Beam search with the character LM: dev WER (against the next utterance's transcript)", "",
             f"Model `{args.model}`; LM texts: {', '.join(Path(t).name for t in args.text)}.", "",
             "| decoding | order | LLM words | alpha | beta | beam | context boost (alpha x score) | LLM rescoring | " +
             " | ".join(sets) + " | mean | s/utt |", "|---" * (10 + len(sets)) + "|"]
    for r in results:
        cells = [f"{r[n]['wer']:.3f} ({r[n]['wer_other']:.3f})" for n in sets]
        lines.append(f"| {r['decoding']} | {r.get('order', '-')} | {r.get('lexicon_words', '-')} | "
                     f"{r.get('alpha', '-')} | {r.get('beta', '-')} | "
                     f"{r.get('beam_size', '-')} | " +
                     (f"{r['boost_alpha']:g} x {r['boost_score']:g}" + (" (capitalized)" if r.get("boost_words") ==
                      "capitalized" else "") if r.get("boost_alpha") else "-") + " | " +
                     (f"{r['rescoring_weight']:g}" if r.get("rescoring_weight") else "-") + " | " +
                     " | ".join(cells) + f" | {r['mean_wer']:.3f} | "
                     f"{r.get('seconds_per_utterance', '-')} |")
    write_text_atomic(args.out / "results.md", "\n".join(lines) + "\n")
    print(f"[tune] wrote {args.out}/results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
