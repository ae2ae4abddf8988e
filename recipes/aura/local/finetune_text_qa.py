#!/usr/bin/env python
"""The fine-tuned text-QA reader (recipe stage 5): the LLM with LoRA trained on the QA training items *as text*.

    python recipes/aura/local/finetune_text_qa.py --llm-dir exp/models/smollm2-135m-instruct \
        --train exp/default/stage1/lhotse/qa_train_cuts.jsonl.gz --train exp/default/stage1/lhotse/mf_train_cuts.jsonl.gz \
        --dev exp/default/stage1/lhotse/mf_dev_cuts.jsonl.gz --out exp/default/stage5/text_qa_llm

The raw instruct LLM answers in sentences and picks the asked person's fact in a multi-fact context only a third of
the time, so F1 ratios against it compare answer styles more than hearing. This reader learns the task from the same
training items the speech systems see (context + question text -> the gold span) and is used by the fine-tuned
topline (gold question text), the fine-tuned cascade (Whisper's transcript) and AuRA's CTC transcript (what AuRA
with ``reading.span: vocab`` computes when its text path carries this adapter). Prompts are stage 6's text prompts
(``scoring.systems.text_message``) in the LLM's chat format, loss on the answer only; LoRA via peft, trained with
the transformers ``Trainer`` (the LM head run on the answer positions alone, batches grouped by length, bf16
autocast where the CPU has it natively: ``benchmarks/reader_training.py``), merged into a plain HF directory
(written to a temporary name, then renamed; an existing ``--out`` is kept). ``report.json`` beside it holds the
loss curve and the dev EM/F1 before and after; ``reader_adapter/`` holds the unmerged adapter and its prompt
templates, which a speech model carries as its reader (``AuRAModel.attach_reader``).

With ``--questions-from-asr`` the training questions are a speech front end's transcripts of the training audio
(AuRA's CTC text, say): the reader learns to answer what it will be given at test time, as a speech-QA
fine-tuning of the text path would. When that model decodes its CTC read with a character LM of the training
transcripts (``add_decoding_lm.py``), the LM has seen every training question word for word and would transcribe
them far better than any test question; ``--lm-folds N --lm-text CUTS...`` transcribes them in N folds instead, each
with the LM re-estimated without that fold's questions (cross-fitting, as ASR transcripts for training a downstream
model are made), so the reader trains on the errors it will meet.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

READER_SUBDIR = "reader_adapter"  # the unmerged adapter + reader.json, beside the merged LLM

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--llm-dir", required=True)
    p.add_argument("--train", action="append", required=True, help="QA cuts (custom question/context/answers)")
    p.add_argument("--dev", action="append", default=[], help="QA cuts scored before and after (EM/F1)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--questions-from-asr", default=None, metavar="NEMO_OR_WHISPER_DIR",
                   help="train on this model's transcripts of the spoken questions instead of their text: the reader "
                        "learns to answer what that speech front end writes (an AuRA .nemo with reading.span vocab: its "
                        "CTC text; or a cascade's ASR); the dev set stays text")
    p.add_argument("--asr-window-seconds", default="",
                   help="with a Whisper --questions-from-asr: the shorter windows it may encode, as the cascade's "
                        "(score_hearing.py / score_benchmark.py --asr-window-seconds); empty: the padded 30 s")
    p.add_argument("--asr-batch-size", type=int, default=16, help="questions transcribed at once (Whisper)")
    p.add_argument("--lm-folds", type=int, default=0,
                   help="with a --questions-from-asr model that decodes with a character LM: transcribe the training "
                        "questions in this many folds, each with the LM re-estimated from --lm-text without that "
                        "fold's questions; 0: the model's own LM")
    p.add_argument("--lm-text", action="append", default=[],
                   help="the cuts the model's LM was estimated from (add_decoding_lm.py --text)")
    p.add_argument("--lm-order", type=int, default=8, help="the held-out LMs' order (add_decoding_lm.py --order)")
    p.add_argument("--steps", type=int, default=150,
                   help="optimizer steps (the same for the text reader and every front end's, so the rows compare)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--r", type=int, default=16, help="LoRA rank on the decoder layers' attention and MLP")
    p.add_argument("--lora-layers", default="",
                   help="decoder layers (0-based) that get LoRA: 'FIRST-LAST', 'FIRST-' (to the last) or '' (all)")
    p.add_argument("--dev-limit", type=int, default=60)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--group-by-length", action=argparse.BooleanOptionalAction, default=True,
                   help="batch items of similar lengths (transformers' LengthGroupedSampler): less padding per step")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16-mixed", "32-true"],
                   help="auto: bf16 autocast where the CPU computes bf16 natively (parts/precision.py), else fp32")
    return p.parse_args(argv)


def parse_layers(spec: str, depth: int) -> list[int] | None:
    """``--lora-layers`` as a sorted list of 0-based decoder layers (None: all)."""
    spec = spec.strip()
    if not spec:
        return None
    first, dash, last = spec.partition("-")
    try:
        lo, hi = int(first), (int(last) if last.strip() else depth - 1) if dash else int(first)
    except ValueError:
        raise SystemExit(f"--lora-layers {spec!r}: expected 'FIRST-LAST', 'FIRST-' or one layer index") from None
    if not 0 <= lo <= hi < depth:
        raise SystemExit(f"--lora-layers {spec!r}: the LLM has decoder layers 0..{depth - 1}")
    return list(range(lo, hi + 1))


def load_examples(paths: list[str], asr=None, asr_batch_size: int = 16, lm_folds=None) -> list[dict]:
    """{"message", "answer", "answers"} per QA item: stage 6's text prompt with the item's question text, or with
    ``asr``'s transcript of its audio (a callable 16 kHz waveform -> text, ``scoring.systems.load_asr``; batched
    where it can be, ``scoring.systems.transcribe_all``)."""
    from nemo_aura.scoring.items import load_items
    from nemo_aura.scoring.systems import text_message, transcribe_all

    examples = []
    for path in paths:
        items = load_items(path)
        if not items:
            raise SystemExit(f"{path}: no QA items")
        if asr is None:
            questions = [i.question for i in items]
        else:
            t0, shown = time.perf_counter(), [0]

            def progress(done, total, every=max(1, len(items) // 5)):  # about five lines per file
                if done == total or done // every > shown[0]:
                    shown[0] = done // every
                    print(f"[text-qa] {path}: transcribed {done}/{total} ({time.perf_counter() - t0:.0f} s)", flush=True)

            audios = [i.load_audio(16000) for i in items]
            if lm_folds is None:
                questions = transcribe_all(asr, audios, asr_batch_size, progress)
            else:
                questions = lm_folds.transcribe(asr, items, audios, progress)
        for i, question in zip(items, questions):
            examples.append({"message": text_message(question, i.context), "answer": i.answers[0],
                             "answers": i.answers, "question": question})
    return examples


class HeldOutLMFolds:
    """Transcribes training questions fold by fold (item ``n`` of the run in fold ``n % folds``), each fold with the
    model's character LM re-estimated from ``lm_texts`` less that fold's question texts, with the model's own beam
    settings and LM order. The ARPA files are kept under ``work_dir``."""

    def __init__(self, model, lm_texts: list[str], folds: int, work_dir: Path, order: int):
        from add_decoding_lm import transcripts

        beam = (model.cfg.get("ctc_decoding") or {}).get("beam") or {}
        if (model.cfg.get("ctc_decoding") or {}).get("strategy") != "beam_batch" or not beam.get("ngram_lm_model"):
            raise SystemExit("--lm-folds: the --questions-from-asr model decodes without a character LM "
                             "(add_decoding_lm.py gives it one)")
        if not lm_texts:
            raise SystemExit("--lm-folds needs --lm-text: the cuts the model's LM was estimated from")
        self.model, self.folds, self.work_dir, self.order = model, folds, work_dir, order
        self.beam = {k: v for k, v in beam.items() if k != "ngram_lm_model"}
        self.texts = transcripts(lm_texts)
        self.seen = 0  # items transcribed so far, over all the training files: the folds run across them
        self.excluded = [0] * folds

    def transcribe(self, asr, items, audios, progress) -> list[str]:
        from collections import Counter

        from add_decoding_lm import build_lm
        from nemo_aura.modules.vocab_ctc import fold_to_alphabet

        fold_of = [(self.seen + n) % self.folds for n in range(len(items))]
        self.seen += len(items)
        questions: list[str | None] = [None] * len(items)
        done = 0
        for fold in range(self.folds):
            members = [n for n, f in enumerate(fold_of) if f == fold]
            if not members:
                continue
            held_out = Counter(fold_to_alphabet(items[n].question) for n in members)
            kept = []
            for text in self.texts:
                if held_out[text] > 0:
                    held_out[text] -= 1
                    self.excluded[fold] += 1
                else:
                    kept.append(text)
            lm = self.work_dir / f"heldout_lm_fold{fold}.arpa"
            build_lm(kept, self.order, lm)
            self.model.set_ctc_decoding({"strategy": "beam_batch", "beam": {**self.beam, "ngram_lm_model": str(lm)}})
            for n in members:
                questions[n] = asr(audios[n])
                done += 1
                progress(done, len(items))
        return questions


class ChatExamples(torch.utils.data.Dataset):
    """Examples encoded in the LLM's chat format; labels are the answer turn's tokens (the prompt is not learnt)."""

    def __init__(self, examples: list[dict], formatter):
        self.rows = []
        for ex in examples:
            user = [{"role": "user", "slots": {"message": ex["message"]}}]
            prompt = formatter.encode_dialog(user)["input_ids"]  # what generation starts from (the turn opened)
            ids = formatter.encode_dialog(user + [{"role": "assistant", "slots": {"message": ex["answer"]}}])["input_ids"]
            if not torch.equal(ids[: len(prompt)], prompt):
                raise ValueError(f"{type(formatter).__name__}: the answer turn does not extend the generation prompt")
            labels = ids.clone()
            labels[: len(prompt)] = -100
            self.rows.append({"input_ids": ids, "labels": labels})

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def collate(pad_id: int):
    def fn(rows: list[dict]) -> dict:
        pad = torch.nn.utils.rnn.pad_sequence
        ids = pad([r["input_ids"] for r in rows], batch_first=True, padding_value=pad_id)
        lens = torch.tensor([len(r["input_ids"]) for r in rows])
        return {"input_ids": ids, "labels": pad([r["labels"] for r in rows], batch_first=True, padding_value=-100),
                "attention_mask": (torch.arange(ids.shape[1])[None] < lens[:, None]).long()}
    return fn


def reader_lora_config(r: int, layers: list[int] | None):
    """The reader's adapter: LoRA of rank ``r`` on the attention and MLP projections of ``layers`` (None: all)."""
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                      layers_to_transform=layers, layers_pattern="layers" if layers else None)


def answer_loss(model, inputs: dict, num_items_in_batch=None):
    """The causal-LM loss with the LM head run only where a label is learnt (the next token is an answer token).

    The model's own loss (transformers' causal-LM loss, given the already shifted targets of the kept positions), but
    the 49k-way head over every prompt position is a fifth of SmolLM2's FLOPs and most of its activation memory, and
    a reader's items are mostly prompt. Returns ``(loss, outputs)``.
    """
    inputs = dict(inputs)
    targets = inputs.pop("labels")[:, 1:]  # the token each position predicts
    keep = (targets != -100).any(0).nonzero().squeeze(1)  # positions where some item learns its next token
    picked = targets[:, keep]
    outputs = model(**inputs, labels=picked, shift_labels=picked, logits_to_keep=keep,
                    num_items_in_batch=num_items_in_batch)
    return outputs.loss, outputs


def score(answerer, examples: list[dict], max_new_tokens: int) -> dict:
    from nemo_aura.scoring.metrics import exact_match, token_f1

    answers = [answerer.answer(ex["message"], max_new_tokens) for ex in examples]
    return {"em": sum(exact_match(a, ex["answers"]) for a, ex in zip(answers, examples)) / len(examples),
            "f1": sum(token_f1(a, ex["answers"]) for a, ex in zip(answers, examples)) / len(examples),
            "items": len(examples), "examples": [[ex["message"][-80:], a] for ex, a in zip(examples[:3], answers)]}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.out.exists():
        print(f"[text-qa] {args.out} exists: keeping it")
        return 0
    from peft import get_peft_model
    from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed

    from nemo_aura.parts.precision import resolve_precision
    from nemo_aura.parts.prompting import TEXT_QA_TEMPLATES
    from nemo_aura.parts.reader import READER_INFO
    from nemo_aura.scoring.systems import TextAnswerer

    torch.set_num_threads(args.threads)
    set_seed(args.seed)
    answerer = TextAnswerer.from_dir(args.llm_dir)
    asr = None
    if args.questions_from_asr:
        from nemo_aura.scoring.systems import load_asr, parse_window_seconds

        asr = load_asr(args.questions_from_asr, window_seconds=parse_window_seconds(args.asr_window_seconds))
    lm_folds = None
    if args.lm_folds:
        if getattr(asr, "model", None) is None:
            raise SystemExit("--lm-folds: --questions-from-asr must be a .nemo whose CTC read has a character LM")
        work = args.out.with_name(args.out.name + ".lm_folds")
        work.mkdir(parents=True, exist_ok=True)
        lm_folds = HeldOutLMFolds(asr.model, args.lm_text, args.lm_folds, work, args.lm_order)
    train_examples = load_examples(args.train, asr, args.asr_batch_size, lm_folds)
    del asr
    if lm_folds is not None:
        lm_folds.model = None  # the speech model is not needed for training
    train = ChatExamples(train_examples, answerer.formatter)
    dev = load_examples(args.dev)[: args.dev_limit] if args.dev else []
    report = {"llm_dir": args.llm_dir, "train": args.train, "train_items": len(train), "steps": args.steps,
              "batch_size": args.batch_size, "lr": args.lr, "lora_r": args.r, "group_by_length": args.group_by_length,
              "questions_from_asr": args.questions_from_asr,
              "asr_window_seconds": args.asr_window_seconds,
              "lm_folds": ({"folds": args.lm_folds, "lm_text": args.lm_text, "questions_held_out": lm_folds.excluded}
                           if lm_folds else None),
              "train_questions": [[ex["answer"], ex["question"]] for ex in train_examples[:5]]}
    if dev:
        report["dev_before"] = score(answerer, dev, args.max_new_tokens)
        print(f"[text-qa] dev before: EM {report['dev_before']['em']:.3f} F1 {report['dev_before']['f1']:.3f}", flush=True)
    layers = parse_layers(args.lora_layers, answerer.llm.config.num_hidden_layers)
    report["lora_layers"] = layers
    model = get_peft_model(answerer.llm.train(), reader_lora_config(args.r, layers))
    tmp = args.out.with_name(args.out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)

    class Progress(TrainerCallback):
        def on_log(self, _args, state, _control, logs=None, **_):
            if logs and "loss" in logs:
                print(f"[text-qa] step {state.global_step}/{state.max_steps} loss {logs['loss']:.3f}", flush=True)

    class AnswerLossTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, outputs = answer_loss(model, inputs, num_items_in_batch)
            return (loss, outputs) if return_outputs else loss

    precision = resolve_precision(args.precision, "auto")
    report["precision"] = precision
    trainer = AnswerLossTrainer(
        model=model, train_dataset=train, data_collator=collate(answerer.pad_id), callbacks=[Progress()],
        args=TrainingArguments(
            output_dir=str(tmp / "trainer"), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
            learning_rate=args.lr, warmup_steps=max(1, args.steps // 10), lr_scheduler_type="cosine",
            weight_decay=0.0, logging_steps=max(1, args.steps // 20), save_strategy="no", report_to=[],
            use_cpu=not torch.cuda.is_available(), seed=args.seed, data_seed=args.seed, disable_tqdm=True,
            train_sampling_strategy="group_by_length" if args.group_by_length else "random",
            bf16=precision == "bf16-mixed",
        ),
    )
    t0 = time.perf_counter()
    trainer.train()
    report["train_seconds"] = round(time.perf_counter() - t0, 1)
    report["log"] = [h for h in trainer.state.log_history if "loss" in h]
    # the adapter itself, for a speech model to carry as its reader (AuRAModel.attach_reader: one LLM in memory)
    model.save_pretrained(tmp / READER_SUBDIR, safe_serialization=True)
    info = {"templates": TEXT_QA_TEMPLATES, "questions_from": args.questions_from_asr or "text", "train": args.train,
            "steps": args.steps, "batch_size": args.batch_size, "lora_layers": layers,
            "group_by_length": args.group_by_length, "precision": precision, "train_seconds": report["train_seconds"]}
    answerer.llm = model.merge_and_unload().eval()
    if dev:
        report["dev_after"] = score(answerer, dev, args.max_new_tokens)
        print(f"[text-qa] dev after: EM {report['dev_after']['em']:.3f} F1 {report['dev_after']['f1']:.3f}", flush=True)
    shutil.rmtree(tmp / "trainer", ignore_errors=True)
    answerer.llm.save_pretrained(tmp)
    answerer.tokenizer.tokenizer.save_pretrained(tmp)
    (tmp / "report.json").write_text(json.dumps(report, indent=2))
    if dev:
        info["dev_after"] = {k: report["dev_after"][k] for k in ("em", "f1", "items")}
    (tmp / READER_SUBDIR / READER_INFO).write_text(json.dumps(info, indent=2))
    tmp.rename(args.out)
    print(f"[text-qa] wrote {args.out} ({report['train_seconds']} s of training)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
