"""Does a model *read* its audio? Dev transcription WER, spoken-QA EM/F1, and text ability kept.

    python recipes/aura/local/score_reading.py --nemo model.nemo --asr-cuts dev.jsonl.gz --qa-cuts qa_dev.jsonl.gz \
        --out eval.json [--items 40] [--text-items 20]

Text ability: the model's LLM with its adapters answers the text questions (no audio) and is compared with the
base LLM (the same weights, adapters disabled): the share of identical answers and both F1s.
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from lhotse import CutSet

from nemo_aura.data.dataset import cut_transcript
from nemo_aura.parts.files import write_json_atomic
from nemo_aura.scoring.items import load_items
from nemo_aura.scoring.metrics import exact_match, token_f1, wer
from nemo_aura.scoring.systems import TextAnswerer, history_of, text_message


def transcription_wer(model, cuts_path: str, limit: int, batch_size: int = 8, max_new_tokens: int = 48) -> dict:
    cuts = [c if c.sampling_rate == model.sample_rate else c.resample(model.sample_rate)
            for c in CutSet.from_file(cuts_path).subset(first=limit)]
    refs = [cut_transcript(c) for c in cuts]
    audio = [torch.from_numpy(c.load_audio()[0]) for c in cuts]
    hyps = model.generate(audio, task="asr", max_new_tokens=max_new_tokens, batch_size=batch_size)  # chunks itself
    out = {"wer": wer(hyps, refs), "items": len(refs), "examples": [{"ref": r, "hyp": h} for r, h in zip(refs[:5], hyps[:5])],
           "distinct_hypotheses": len(set(hyps)) / max(len(hyps), 1), "hyps": hyps}
    if len(refs) > 1:  # does the output depend on the audio? the same hypotheses scored against other utterances
        out["wer_mismatched"] = wer(hyps, refs[1:] + refs[:1])
    return out


def spoken_qa(model, cuts_path: str, limit: int, max_new_tokens: int = 24) -> dict:
    """EM/F1 on the items; with more than one item also ``f1_other_question``: each item's context and gold answers
    with the *next* item's spoken question. As high as ``f1`` when the answers ignore the spoken question."""
    items = load_items(cuts_path, limit)
    audio = [torch.from_numpy(item.load_audio(model.sample_rate)) for item in items]

    def answer(speech, item) -> str:
        return model.generate([speech], task="qa", contexts=[item.context], max_new_tokens=max_new_tokens)[0]

    answers = [answer(a, item) for a, item in zip(audio, items)]
    n = max(len(items), 1)
    out = {"em": sum(exact_match(a, i.answers) for a, i in zip(answers, items)) / n,
           "f1": sum(token_f1(a, i.answers) for a, i in zip(answers, items)) / n, "items": len(items),
           "examples": [{"question": i.question, "gold": i.answers, "answer": a} for a, i in zip(answers[:5], items[:5])]}
    if len(items) > 1:
        swapped = [answer(a, item) for a, item in zip(audio[1:] + audio[:1], items)]
        out["f1_other_question"] = sum(token_f1(a, i.answers) for a, i in zip(swapped, items)) / n
    return out


def text_ability(model, cuts_path: str, limit: int, max_new_tokens: int = 24) -> dict:
    """Answers to the text questions with the adapters vs the base LLM (adapters disabled)."""
    items = load_items(cuts_path, limit)
    answerer = TextAnswerer(model.llm, model.tokenizer, model.cfg.prompt_format, model.stop_token_ids, model.pad_id)
    same = f1_adapted = f1_base = 0.0
    for item in items:
        message = text_message(item.question, item.context)
        with model.audio_span.positions(None):
            adapted = answerer.answer(message, max_new_tokens)
        with model.llm.disable_adapter():
            base = answerer.answer(message, max_new_tokens)
        same += adapted == base
        f1_adapted += token_f1(adapted, item.answers)
        f1_base += token_f1(base, item.answers)
    n = max(len(items), 1)
    return {"identical": same / n, "f1_adapted": f1_adapted / n, "f1_base": f1_base / n, "items": len(items)}


def evaluate(nemo_path: str, asr_cuts: str, qa_cuts: str, items: int, text_items: int) -> dict:
    from nemo_aura import AuRAModel

    torch.manual_seed(0)
    model = AuRAModel.restore_from(str(nemo_path), map_location="cpu").eval()
    t0 = time.perf_counter()
    out = {"model": str(nemo_path), "training_history": history_of(model)}
    with torch.no_grad():
        out["asr"] = transcription_wer(model, asr_cuts, items)
        out["qa"] = spoken_qa(model, qa_cuts, items)
        out["text"] = text_ability(model, qa_cuts, text_items)
    out["eval_seconds"] = time.perf_counter() - t0
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nemo", required=True)
    p.add_argument("--asr-cuts", required=True, help="Lhotse cuts with transcripts (dev WER)")
    p.add_argument("--qa-cuts", required=True, help="Lhotse cuts of spoken questions with answers (dev EM/F1)")
    p.add_argument("--items", type=int, default=40)
    p.add_argument("--text-items", type=int, default=20)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    result = evaluate(args.nemo, args.asr_cuts, args.qa_cuts, args.items, args.text_items)
    write_json_atomic(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "model"}, indent=1)[:2000])


if __name__ == "__main__":
    main()
