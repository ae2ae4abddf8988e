"""The reader: a text-QA adapter inside a ``reading.span: vocab`` model (``parts/reader.py``)."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from omegaconf import open_dict

from nemo_aura import AuRAModel
from nemo_aura.parts import lifecycle
from nemo_aura.parts.prompting import cut_at_stop
from nemo_aura.testing import synth_wave


def vocab_model(tiny_cfg) -> AuRAModel:
    torch.manual_seed(0)
    with open_dict(tiny_cfg):
        tiny_cfg.loss = {"distill_weight": 0.0, "ctc_weight": 1.0}
        tiny_cfg.audio_span = {"lora": "audio"}
        tiny_cfg.reading = {"span": "vocab"}
    return AuRAModel(tiny_cfg).eval()


@pytest.fixture(scope="module")
def reader_dirs(tiny_llm_dir, tmp_path_factory):
    """A reader trained on tiny QA items with LoRA on layers 2..3 (the tiny model reads with 0..1), and one on all."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes" / "aura" / "local"))
    from finetune_text_qa import main
    from nemo_aura.testing import write_tiny_cuts

    tmp = tmp_path_factory.mktemp("readers")
    cuts = write_tiny_cuts(tmp / "qa", n=4, task="qa")
    common = ["--llm-dir", str(tiny_llm_dir), "--train", str(cuts), "--batch-size", "4", "--lr", "1e-2", "--r", "4",
              "--threads", "1"]
    assert main(common + ["--out", str(tmp / "above"), "--steps", "20", "--lora-layers", "2-"]) == 0
    assert main(common + ["--out", str(tmp / "all"), "--steps", "20"]) == 0
    return tmp / "above", tmp / "all"


def answer_logprob(answerer, message: str, ids: list[int]) -> float:
    """log P(ids | message) under a TextAnswerer's LLM (teacher-forced)."""
    prompt = answerer.formatter.encode_dialog([{"role": "user", "slots": {"message": message}}])["input_ids"]
    full = torch.cat([prompt, torch.tensor(ids, dtype=prompt.dtype)])[None]
    with torch.no_grad():
        logprobs = answerer.llm(input_ids=full).logits[0, len(prompt) - 1:-1].log_softmax(-1)
    return float(logprobs.gather(1, torch.tensor(ids)[:, None]).sum())


def fixed_reads(model, monkeypatch, words, text_positions: list | None = None):
    """The CTC read gives ``words`` per item; ``text_positions`` collects how many prompt (non-audio, non-padding)
    positions framed each read."""
    def read(inputs):
        if text_positions is not None:
            text_positions.extend((inputs["attention_mask"].bool() & ~inputs["audio_mask"]).sum(1).tolist())
        return [(torch.tensor(words[b]), -1.0) for b in range(inputs["inputs_embeds"].shape[0])]

    monkeypatch.setattr(model, "vocab_span_tokens", read)


@pytest.mark.parametrize("which", ["above", "all"])
def test_a_reader_answers_the_transcript_text_prompts_keep_the_base_llm_and_a_restore_keeps_it(
        tiny_cfg, tiny_llm_dir, reader_dirs, monkeypatch, tmp_path, which):
    """With a reader attached (on the layers above the reading LoRA, or on every layer, those of the reading LoRA
    included), a spoken question is answered exactly as the merged reader answers its transcript in the reader's own
    prompt; transcripts and text prompts are what they were (base LLM); nothing new trains; the ``.nemo`` and its
    encoder-free export keep the reader."""
    from nemo_aura.scoring.systems import TextAnswerer, text_message

    above = dict(zip(("above", "all"), reader_dirs))[which]
    info = json.loads((above / "reader_adapter" / "reader.json").read_text())
    layers = [2, 3] if which == "above" else None
    assert json.loads((above / "reader_adapter" / "adapter_config.json").read_text())["layers_to_transform"] == layers
    assert info["lora_layers"] == layers and "{audio}" in info["templates"]["qa_context"]
    model = vocab_model(tiny_cfg)
    transcripts = ["one two three", "four"]
    words = [model.tokenizer.text_to_ids(t) for t in transcripts]
    framed = []
    fixed_reads(model, monkeypatch, words, framed)
    audio = [torch.from_numpy(synth_wave(0, 1.2)), torch.from_numpy(synth_wave(1, 0.7))]
    contexts = ["Anna lives in Paris. Tom lives in Rome.", None]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    base = TextAnswerer.from_dir(str(tiny_llm_dir))
    message = text_message("Where does Tom live?", contexts[0])
    text_before = TextAnswerer(model.llm, model.tokenizer, model.cfg.prompt_format, model.stop_token_ids,
                               model.pad_id).answer_ids(message, 6)

    model.attach_reader(str(above / "reader_adapter"))
    assert model.has_reader and {n for n, p in model.named_parameters() if p.requires_grad} == trainable
    assert model.cfg.training_history[-1]["name"] == "reader" and model.cfg.training_history[-1]["steps"] == 20
    merged = TextAnswerer.from_dir(str(above))  # the same reader merged into a plain LLM, as the cascade rows load it
    messages = [text_message(model.decode_ids(w), c) for w, c in zip(words, contexts)]
    expected = [merged.answer_ids(m, 6) for m in messages]
    framed.clear()
    assert model.generate_ids(audio, task="qa", contexts=contexts, max_new_tokens=6) == expected  # a padded batch
    # the read is framed by the ASR prompt, as the transcripts the reader was trained on, not by the QA prompt
    asr_prompt = len(model.prompts.encode(model.prompts.user_message("asr"))[0]) - 1
    assert framed == [asr_prompt, asr_prompt]
    assert [model.generate_ids([a], task="qa", contexts=[c], max_new_tokens=6)[0] for a, c in zip(audio, contexts)] == expected
    # the command line answers spoken questions through the reader too; a line's text question keeps the model's own
    from nemo_aura.infer import InferConfig, Item, predict

    entries = [{"audio_filepath": "0.wav", "context": contexts[0]}, {"audio_filepath": "1.wav"},
               {"audio_filepath": "0.wav", "question": "Is it loud?"}]
    items = [Item(line=n + 1, entry=e, audio=a) for n, (e, a) in enumerate(zip(entries, audio + audio[:1]))]
    predict(model, items, InferConfig(model_path="-", manifest="m.json", output="-", task="qa", batch_size=3,
                                      max_new_tokens=6))
    assert [it.added["pred_answer"] for it in items[:2]] == [model.decode_ids(ids) for ids in expected]
    assert items[2].added["pred_answer"] == model.generate(audio[:1], questions=["Is it loud?"], max_new_tokens=6)[0]
    # a random tiny LLM repeats one token whatever adapts it: the answers' log-probs tell the reader from the base LLM
    scored = model._answer_spoken_with_reader(audio, model._reader_messages(2, None, "qa", contexts, None), 2,
                                              {"max_new_tokens": 6, "do_sample": False}, with_scores=True)
    assert [ids for ids, _ in scored] == expected
    for (_, score), message, ids in zip(scored, messages, expected):
        assert score == pytest.approx(answer_logprob(merged, message, ids), abs=1e-3)
        assert abs(score - answer_logprob(base, message, ids)) > 0.05  # the base LLM would score it otherwise
    assert model.generate(audio, task="asr") == [model.decode_ids(w) for w in words]
    text = TextAnswerer(model.llm, model.tokenizer, model.cfg.prompt_format, model.stop_token_ids, model.pad_id)
    assert text.answer_ids(message, 6) == text_before == base.answer_ids(message, 6)  # text ability: the base LLM

    for path in (model.save_to(str(tmp_path / "with_reader.nemo")) or tmp_path / "with_reader.nemo",
                 model.export_encoder_free(str(tmp_path / "free.nemo"))):
        restored = AuRAModel.restore_from(str(path), map_location="cpu").eval()
        fixed_reads(restored, monkeypatch, words)
        assert restored.has_reader and restored.generate_ids(audio, task="qa", contexts=contexts, max_new_tokens=6) == expected


def test_a_reader_is_a_safe_adapter_dir_of_a_vocab_model_and_is_not_merged(tiny_cfg, reader_dirs, tmp_path):
    above, _ = reader_dirs
    model = vocab_model(tiny_cfg)
    pickled = tmp_path / "pickled"
    shutil.copytree(above / "reader_adapter", pickled)
    (pickled / "adapter_model.safetensors").rename(pickled / "adapter_model.bin")
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors' is missing.*pickled"):
        model.attach_reader(str(pickled))
    broken = tmp_path / "broken"
    shutil.copytree(above / "reader_adapter", broken)
    (broken / "reader.json").write_text(json.dumps({"templates": {"qa": "no slot", "qa_context": "{audio}"}}))
    with pytest.raises(ValueError, match=r"reader.json: templates.qa must be a prompt with an \{audio\} slot"):
        model.attach_reader(str(broken))
    assert not model.has_reader
    model.attach_reader(str(above / "reader_adapter"))
    with pytest.raises(ValueError, match="carries a text reader"):
        lifecycle.merge_lora(model)
    with open_dict(tiny_cfg):
        tiny_cfg.reading = {"span": "frames"}
        tiny_cfg.loss = {"distill_weight": 0.0, "lm_weight": 1.0}
    with pytest.raises(ValueError, match="reading.span vocab"):
        AuRAModel(tiny_cfg).attach_reader(str(above / "reader_adapter"))


def test_the_readers_loss_runs_the_lm_head_only_on_answers_and_equals_the_models_loss(tiny_llm_dir, reader_dirs,
                                                                                     tmp_path):
    """``finetune_text_qa.answer_loss`` (the LM head only where the next token is an answer token) gives the model's
    own causal-LM loss and the same adapter gradients on a right-padded batch of items of different lengths; the
    training report says how its batches were drawn."""
    import sys
    from pathlib import Path

    from peft import get_peft_model

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes" / "aura" / "local"))
    from finetune_text_qa import ChatExamples, answer_loss, collate, load_examples, reader_lora_config
    from nemo_aura.scoring.systems import TextAnswerer
    from nemo_aura.testing import write_tiny_cuts

    answerer = TextAnswerer.from_dir(str(tiny_llm_dir))
    rows = ChatExamples(load_examples([str(write_tiny_cuts(tmp_path / "qa", n=4, task="qa"))]), answerer.formatter).rows
    batch = collate(answerer.pad_id)(rows)
    assert batch["attention_mask"].sum() < batch["input_ids"].numel()  # padded: the lengths differ
    torch.manual_seed(0)
    model = get_peft_model(answerer.llm.train(), reader_lora_config(4, None))
    for name, p in model.named_parameters():  # LoRA B starts at zero: give the adapter something to pass on
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)

    def grads(loss):
        model.zero_grad(set_to_none=True)
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    reference = model(**batch).loss
    ref_grads = grads(reference)
    loss, outputs = answer_loss(model, batch)
    assert outputs.logits.shape[1] < batch["input_ids"].shape[1]  # the head did not run on every position
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    for name, g in grads(loss).items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    report = json.loads((reader_dirs[1] / "report.json").read_text())
    assert report["group_by_length"] is True and report["precision"] in ("32-true", "bf16-mixed")
