#!/usr/bin/env python
"""Decode a character-CTC model's read by beam search with a character n-gram LM of the training transcripts.

    python recipes/aura/local/add_decoding_lm.py --model exp/default/stage4/aura_encoder_free.nemo \
        --text exp/default/stage1/lhotse/distill_train_cuts.jsonl.gz --text .../qa_train_cuts.jsonl.gz \
        --text .../mf_train_cuts.jsonl.gz --lm exp/default/stage4/char_lm.arpa \
        --out exp/default/stage4/aura_encoder_free_lm.nemo [--order 8 --alpha 0.6 --beta 1.0 --beam-size 8] \
        [--boost-alpha 1 --boost-score 2 --boost-words all --rescoring-weight 0 --lexicon-words 0]

The LM (interpolated Kneser-Ney over the head's characters, ``nemo_aura.parts.char_lm``) is estimated from the
supervision texts of ``--text`` (Lhotse cuts: the transcripts the model was trained to read), and with
``--lexicon-words N`` also from the N commonest words of the LLM's vocabulary (their spelling), and written to
``--lm`` unless that file exists (several models share one LM). The model gets ``ctc_decoding.strategy: beam_batch`` with it
(``AuRAModel.set_ctc_decoding``: ``cfg.ctc_decoding``; the ARPA file travels inside the ``.nemo``). The defaults were chosen on
the dev sets (recipes/aura/results/default/HEARING.md): order, beta and beam by dev WER, alpha by what the reader
answers (0.6; 1.0 had the lowest WER). ``--boost-alpha`` > 0 also boosts the words of the context each spoken
question comes with (``ctc_decoding.beam.boosting_tree``), ``--rescoring-weight`` > 0 rescores the beam's N-best
with the base LLM (``llm_rescoring_weight``): boosting chosen by dev WER, rescoring left off for its latency
(recipes/aura/results/default/HEARING.md). Both outputs are written to temporary names, then
renamed; an existing ``--out`` is kept.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from nemo_aura.modules.ctc_beam import BOOST_WORDS, context_boosting_tree


def transcripts(paths: list[str]) -> list[str]:
    """The supervision texts of Lhotse cut manifests, folded to the character head's alphabet (blank ones dropped)."""
    from lhotse import CutSet

    from nemo_aura.modules.vocab_ctc import fold_to_alphabet

    texts = []
    for path in paths:
        if not Path(path).is_file():
            raise SystemExit(f"--text {path}: no such cut manifest")
        for cut in CutSet.from_file(path):
            text = fold_to_alphabet(" ".join(s.text or "" for s in cut.supervisions))
            if text:
                texts.append(text)
    if not texts:
        raise SystemExit(f"--text {', '.join(paths)}: no supervision text to estimate the LM from")
    return texts


def build_lm(texts: list[str], order: int, out: Path, lexicon: list[str] = ()) -> Path:
    """Estimate the LM from ``texts`` and ``lexicon`` (words, ``char_lm.vocabulary_words``) and write it to ``out``."""
    from nemo_aura.modules.vocab_ctc import ALPHABET, text_to_labels
    from nemo_aura.parts.char_lm import kneser_ney_arpa_lines, lexicon_sentences, write_arpa

    start = time.time()
    lines = kneser_ney_arpa_lines((text_to_labels(t) for t in texts + lexicon_sentences(lexicon)), len(ALPHABET),
                                  order)
    write_arpa(out, lines)
    print(f"[lm] {out}: order {order} over {len(texts)} transcripts ({sum(map(len, texts))} characters)"
          f"{f' and {len(lexicon)} words of the LLM' if lexicon else ''}, {len(lines)} lines, "
          f"{time.time() - start:.1f} s")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a saved model whose CTC head writes characters")
    p.add_argument("--text", action="append", required=True, help="Lhotse cuts whose transcripts the LM learns")
    p.add_argument("--lm", type=Path, required=True, help="the ARPA file (built here unless it exists)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--order", type=int, default=8)
    p.add_argument("--alpha", type=float, default=0.6, help="the LM's weight in the beam score")
    p.add_argument("--beta", type=float, default=1.0, help="a bonus per emitted character")
    p.add_argument("--beam-size", type=int, default=8)
    p.add_argument("--lexicon-words", type=int, default=0,
                   help="also teach the LM the spelling of the LLM's N commonest vocabulary words (0: transcripts only)")
    p.add_argument("--boost-alpha", type=float, default=1.0,
                   help="context biasing: the weight of the boosted context words (0: off)")
    p.add_argument("--boost-score", type=float, default=2.0, help="context biasing: the boosting tree's context_score")
    p.add_argument("--boost-words", choices=BOOST_WORDS, default="all",
                   help="context biasing: the context's words boosted (capitalized: names and sentence openers)")
    p.add_argument("--rescoring-weight", type=float, default=0.0,
                   help="the base LLM's weight when the beam's N-best are rescored (0: off; 0.2 was best on dev, at "
                        "~0.4 s more per read on 2 CPU cores)")
    args = p.parse_args(argv)
    if args.out.exists():
        print(f"[lm] {args.out} exists: keeping it")
        return 0
    from nemo_aura import AuRAModel
    from nemo_aura.parts.char_lm import vocabulary_words
    from nemo_aura.parts.files import write_nemo_atomic

    model = AuRAModel.restore_from(args.model, map_location="cpu").eval()
    if not args.lm.exists():
        lexicon = vocabulary_words(model.tokenizer, args.lexicon_words) if args.lexicon_words else []
        build_lm(transcripts(args.text), args.order, args.lm, lexicon)
    beam = {"beam_size": args.beam_size, "ngram_lm_model": str(args.lm), "ngram_lm_alpha": args.alpha,
            "beam_beta": args.beta}
    if args.boost_alpha:
        beam.update(boosting_tree_alpha=args.boost_alpha,
                    boosting_tree=context_boosting_tree(args.boost_score, args.boost_words))
    if args.rescoring_weight:
        beam["llm_rescoring_weight"] = args.rescoring_weight
    model.set_ctc_decoding({"strategy": "beam_batch", "beam": beam})
    write_nemo_atomic(args.out, model.save_to)
    print(f"[lm] wrote {args.out}: {args.model} decoding its CTC read by beam search ({args.beam_size}) with {args.lm}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
