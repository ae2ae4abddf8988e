"""Text-aligned reading at layer K, its oracle, and the multi-fact benchmark that only hearing passes."""
import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from lhotse import CutSet
from omegaconf import open_dict

from nemo_aura import AuRAModel
from nemo_aura.data.dataset import AuRADataset
from nemo_aura.modules.text_align import text_aligned_loss, uniform_char_alignment
from nemo_aura.parts.prompting import cut_at_stop
from nemo_aura.testing import write_tiny_cuts


def test_uniform_char_alignment_is_monotonic_and_proportional_to_characters():
    index = uniform_char_alignment([1, 3], 8)  # token 0 owns a quarter of the characters, token 1 the rest
    assert index.tolist() == [0, 0, 1, 1, 1, 1, 1, 1]
    index = uniform_char_alignment([2, 2, 2, 2, 2], 3)  # fewer patches than tokens: centres pick tokens 0, 2, 4
    assert index.tolist() == [0, 2, 4]
    long = uniform_char_alignment([5, 0, 7, 1, 9], 40)
    assert long[0] == 0 and long[-1] == 4 and bool((long[1:] >= long[:-1]).all())
    assert set(long.tolist()) == {0, 1, 2, 3, 4}  # an empty token still owns a share of the time
    with pytest.raises(ValueError, match="empty transcript"):
        uniform_char_alignment([], 4)


def test_text_aligned_loss_is_zero_only_at_the_target_and_ignores_padding():
    target = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    exact = target.clone()
    exact[0, 3:] = 100.0  # padding positions do not count
    assert text_aligned_loss(exact, target, mask)["loss"].item() == pytest.approx(0.0, abs=1e-6)
    scaled = text_aligned_loss(2 * target, target, mask, centered=False)  # right direction, wrong scale: MSE > 0
    assert scaled["cos"].item() == pytest.approx(1.0, abs=1e-5) and scaled["loss"].item() > 0.05
    # states sharing one large direction: the mean state is "close" to every token uncentred, not centred
    shared = torch.randn(8) * 10
    target = shared + torch.randn(2, 5, 8)
    mean_state = target[mask].mean(0).expand_as(target) + 0.01 * torch.randn(2, 5, 8)
    assert text_aligned_loss(mean_state, target, mask, centered=False)["cos"].item() > 0.9
    assert abs(text_aligned_loss(mean_state, target, mask)["cos"].item()) < 0.5


def train_steps(model, batch, steps: int = 15, lr: float = 3e-3) -> tuple[dict[str, float], dict]:
    """AdamW steps on one batch: (the first step's losses, the last step's outputs)."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    first = None
    for _ in range(steps):
        out = model.compute_losses(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first or {k: v.item() for k, v in out.items()}
    return first, out


def asr_batch(model, tmp_path, task="asr"):
    cuts = CutSet.from_file(write_tiny_cuts(tmp_path / task, n=3, task=task))
    return AuRADataset(model.prompts, model.sample_rate, model.pad_id)[cuts]


def test_text_aligned_targets_are_the_llms_own_states_of_the_transcript_on_the_patch_grid(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    with open_dict(tiny_cfg):
        tiny_cfg.loss = {"distill_weight": 0.0, "text_align_weight": 1.0}
        tiny_cfg.audio_span = {"lora": "audio"}
    model = AuRAModel(tiny_cfg)
    batch = asr_batch(model, tmp_path, task="qa")  # a prompt with context before the audio
    patch_lens = model.patch_lengths(batch["audio_lens"])
    targets = model.text_aligned_targets(batch, patch_lens, int(patch_lens.max()))
    # item 0 by hand: the plain LLM (adapters off) reading the prompt with the transcript where the audio is
    ids = batch["input_ids"][0, : batch["input_lens"][0]]
    p = int((ids == model.audio_locator_id).nonzero()[0])
    words = batch["transcript_ids"][0, : batch["transcript_lens"][0]]
    text = torch.cat([ids[:p], words, ids[p + 1:]])[None]
    with torch.no_grad(), model.llm.disable_adapter():
        hidden = model.llm(input_ids=text, output_hidden_states=True).hidden_states[model.ctc_layer][0]
    n = int(patch_lens[0])
    chars = [len(model.tokenizer.ids_to_text([i])) for i in words.tolist()]
    expected = hidden[p + uniform_char_alignment(chars, n)]
    assert torch.allclose(targets[0, :n], expected, atol=1e-4)
    assert targets[0, n:].abs().sum() == 0  # padding patches stay empty


def test_text_aligned_objective_trains_only_the_audio_path_and_keeps_text_exact(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    with open_dict(tiny_cfg):
        tiny_cfg.loss = {"distill_weight": 1.0, "distill_layers": [1], "text_align_weight": 1.0}
        tiny_cfg.audio_span = {"lora": "audio"}
    model = AuRAModel(tiny_cfg)
    batch = asr_batch(model, tmp_path)
    text_prompt = torch.tensor([model.prompts.tokenizer.text_to_ids("one two three")])
    with torch.no_grad():
        before = model.llm(input_ids=text_prompt).logits.clone()
    first, out = train_steps(model, batch)
    first = first["text_align_loss"]
    assert "distill_loss_layer1" in out and "distill_cos_layer2" in out  # layer 2 reported, not trained on
    assert out["text_align_loss"].item() < 0.7 * first, (first, out["text_align_loss"].item())
    with torch.no_grad(), model.audio_span.positions(None):
        after = model.llm(input_ids=text_prompt).logits
    assert torch.equal(before, after)  # audio-only LoRA: text goes through the base LLM exactly


def test_distill_layers_and_text_align_are_checked(tiny_cfg):
    with open_dict(tiny_cfg):
        tiny_cfg.loss = {"distill_weight": 1.0, "distill_layers": [7]}
    with pytest.raises(ValueError, match=r"distill_layers \[7\] are not distilled layers"):
        AuRAModel(tiny_cfg)


def test_oracle_collapsed_reads_exactly_like_the_text_and_repeat_fills_the_patch_grid(tiny_cfg, tmp_path):
    """The collapsed oracle replaces layer K's span by the very states text reading has there: same answer as the
    plain LLM reading the prompt with the transcript; the repeat oracle spans one position per audio patch."""
    from nemo_aura.scoring.items import QAItem
    from nemo_aura.scoring.systems import TextStateOracle

    torch.manual_seed(0)
    model = AuRAModel(tiny_cfg)
    path = tmp_path / "m.nemo"
    model.save_to(str(path))
    item = QAItem(id="x", question="one two three four", answers=["two"], context="five six")
    collapsed = TextStateOracle(str(path), "collapsed")
    m = collapsed.model
    words = m.tokenizer.text_to_ids(item.question)
    prompt = m.prompts.encode(m.prompts.user_message("qa", item.context))[0]
    p = int((prompt == m.audio_locator_id).nonzero()[0])
    ids = torch.cat([prompt[:p], torch.tensor(words), prompt[p + 1:]])[None]
    with torch.no_grad(), m.llm.disable_adapter():
        plain = m.llm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                               eos_token_id=m.stop_token_ids, pad_token_id=m.pad_id)[0, ids.shape[1]:]
    audio = torch.zeros(16000).numpy()
    got = collapsed.answer(item, audio, 6)
    assert got["answer"] == m.decode_ids(cut_at_stop(plain, m.stop_token_ids))
    repeat = TextStateOracle(str(path), "repeat")
    spans = []
    handle = repeat.model.llm.get_base_model().model.layers[0].register_forward_pre_hook(
        lambda mod, args, kwargs=None: spans.append(args[0].shape[1] if args else None))
    try:
        repeat.answer(item, audio, 2)
    finally:
        handle.remove()
    patches = int(repeat.model.patch_lengths(torch.tensor([len(audio)]))[0])
    assert spans[0] == ids.shape[1]  # the text run that gives the targets
    assert spans[1] == ids.shape[1] - len(words) + patches  # generation's prefill: one position per patch


def test_multi_fact_items_come_in_pairs_that_only_the_question_tells_apart():
    from nemo_aura.data.corpus import load_spec, make_multi_fact_items

    spec = load_spec("manifests/qa_spec.yaml")
    names = {split: set(spec["entities"]["name"][split]) for split in ("train", "dev", "test")}
    for split in ("train", "dev", "test", "test_seen"):
        items = make_multi_fact_items(spec, split, 40, random.Random(1))
        assert len(items) == 40
        for a, b in zip(items[::2], items[1::2]):
            assert a["context"] == b["context"] and a["entity"] != b["entity"]
            assert a["answers"] != b["answers"]  # the control question's answer is another fact of the same context
            assert 3 <= a["facts"] <= 5 and a["context"].count(".") == a["facts"]
            for it in (a, b):
                assert it["entity"] in it["question"] and it["answers"][0] in it["context"]
        heard = {split: names["train"], "test_seen": names["train"], "dev": names["dev"], "test": names["test"]}[split]
        assert {it["entity"] for it in items} <= heard
    with pytest.raises(ValueError, match="odd"):
        make_multi_fact_items(spec, "train", 3, random.Random(0))


def test_pool_segments_averages_each_token_segment():
    from nemo_aura.modules.text_align import pool_segments, segment_starts

    index = torch.tensor([0, 0, 1, 1, 1, 3])
    starts = segment_starts(index)
    assert starts.tolist() == [True, False, True, False, False, True]
    states = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    pooled = pool_segments(states, starts)
    assert torch.allclose(pooled, torch.tensor([[1.0, 2.0], [6.0, 7.0], [10.0, 11.0]]))
    assert torch.equal(pool_segments(states, torch.ones(6, dtype=torch.bool)), states)


def collapsed_model(tiny_cfg):
    torch.manual_seed(0)
    with open_dict(tiny_cfg):
        tiny_cfg.loss = {"distill_weight": 0.0, "text_align_weight": 1.0, "boundary_weight": 1.0}
        tiny_cfg.audio_span = {"lora": "audio"}
        tiny_cfg.reading = {"span": "collapsed"}
    return AuRAModel(tiny_cfg)


def test_collapsed_span_trains_pooled_states_and_the_boundary_head(tiny_cfg, tmp_path):
    model = collapsed_model(tiny_cfg)
    assert model.parameter_counts()["boundary_head"] > 0
    batch = asr_batch(model, tmp_path)
    first, out = train_steps(model, batch)
    assert out["text_align_loss"].item() < 0.8 * first["text_align_loss"]
    assert out["text_align_boundary_loss"].item() < first["text_align_boundary_loss"]
    assert model.boundary_head.net[1].weight.grad is not None


def test_collapsed_generation_reads_one_position_per_segment(tiny_cfg, tmp_path):
    """The upper layers see one position per detected segment; with a segment at every patch the collapse is the
    identity and generation equals the frames model's, so the two-pass plumbing itself changes nothing."""
    model = collapsed_model(tiny_cfg).eval()
    from nemo_aura.testing import synth_wave

    audio = [torch.from_numpy(synth_wave(0, 1.2))]
    layer_k1 = model.llm.get_base_model().model.layers[model.ctc_layer]
    lengths = []
    handle = layer_k1.register_forward_pre_hook(lambda m, args: lengths.append(args[0].shape[1]))
    head = model.boundary_head.net[1]
    try:
        with torch.no_grad():
            head.bias.fill_(-20.0)  # no boundary found: the whole span pools into one position
            model.generate(audio, task="asr", max_new_tokens=2)
            one_segment = lengths[0]  # the prompt's prefill (the pass over the patches stops at layer K)
            lengths.clear()
            head.bias.fill_(20.0)  # a boundary at every patch: nothing is pooled
            every = model.generate(audio, task="asr", max_new_tokens=4)
            every_len = lengths[0]
    finally:
        handle.remove()
    patches = int(model.patch_lengths(torch.tensor([len(audio[0])]))[0])
    assert every_len - one_segment == patches - 1
    with open_dict(model.cfg):
        model.cfg.reading = {"span": "frames"}
    with torch.no_grad():
        frames = model.generate(audio, task="asr", max_new_tokens=4)
    assert every == frames


def test_hearing_summary_counts_a_gold_answer_inside_a_sentence_and_the_control():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes/aura/local"))
    from score_hearing import contains_gold, summarize

    assert contains_gold("Jasmine drives a pink van.", ["pink"]) == 1.0
    assert contains_gold("Jasmine drives a pinkish van.", ["pink"]) == 0.0  # whole words only
    rows = [{"f1": 1.0, "f1_control": 0.0, "em": 1.0, "answer": "pink", "answer_control": "a blue van", "gold": ["pink"],
             "question": "q1"},
            {"f1": 0.0, "f1_control": 0.0, "em": 0.0, "answer": "It is red.", "answer_control": "red", "gold": ["red"],
             "question": "q2"}]
    out = summarize(rows)
    assert out["hearing"] == pytest.approx(0.5) and out["acc"] == 1.0 and out["acc_control"] == 0.5
    assert out["hearing_acc"] == pytest.approx(0.5) and "wer" not in out  # no transcripts: a text system


def test_collapsed_next_token_training_runs_the_span_generation_reads(tiny_cfg, tmp_path):
    """With ``reading.span: collapsed`` the next-token loss goes through one position per token segment, with layers
    1..K's pooled states put in place as generation does: given the same segments, the training forward's logits
    at the last prompt position equal the inference path's, and the LM loss alone reaches the audio path."""
    model = collapsed_model(tiny_cfg)
    with open_dict(model.cfg):
        model.cfg.loss = {"distill_weight": 0.0, "lm_weight": 1.0}
    batch = asr_batch(model, tmp_path)
    one = {k: (v[:1] if torch.is_tensor(v) else v[:1] if isinstance(v, list) else v) for k, v in batch.items()}
    model.eval()
    inputs = model.embed_audio_and_text(one["audio"], one["audio_lens"], one["input_ids"], one["input_lens"],
                                        one["loss_mask"])
    _, index = model.text_teacher_tokens(one, inputs["patch_lens"])
    with torch.no_grad():
        _, logits, labels = model.collapsed_forward(inputs, index)
    segments = len(torch.unique_consecutive(index[0]))
    assert logits.shape[1] == inputs["inputs_embeds"].shape[1] - int(inputs["patch_lens"][0]) + segments
    assert (labels != -100).sum() == (inputs["labels"] != -100).sum()  # the same answer tokens
    # the inference path (collapse_audio_span + replaced states) with the boundary head forced to those segments
    from nemo_aura.modules.text_align import segment_starts
    prompt_len = int(one["loss_mask"][0].nonzero()[0])  # the prompt before the answer
    prompt = {"input_ids": one["input_ids"][:, :prompt_len], "input_lens": torch.tensor([prompt_len])}
    infer_inputs = model.embed_audio_and_text(one["audio"], one["audio_lens"], prompt["input_ids"],
                                              prompt["input_lens"], left_pad=True)
    starts = segment_starts(index[0])
    model.boundary_head.starts = lambda states, threshold=0.5: starts
    with torch.no_grad():
        short, pooled = model.collapse_audio_span(infer_inputs)
        with model.replaced_span_states(short["audio_mask"], pooled), model.audio_span.positions(short["audio_mask"]):
            expected = model.llm(inputs_embeds=short["inputs_embeds"], attention_mask=short["attention_mask"]).logits
    last = short["inputs_embeds"].shape[1] - 1
    assert torch.allclose(logits[0, last], expected[0, -1], atol=1e-4)
    del model.boundary_head.starts
    model.train()
    out = model.compute_losses(batch)
    out["loss"].backward()
    assert out["lm_loss"].item() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.patch_embedding.parameters())


def test_collapsed_training_can_split_the_span_where_the_boundary_head_does(tiny_cfg, tmp_path):
    """``reading.train_segments: head``: the training forward pools the segments the boundary head finds (as generation
    does), not the alignment's: a head that finds no boundary leaves one position, one that finds every patch none
    pooled; ``alignment`` ignores the head."""
    model = collapsed_model(tiny_cfg)
    batch = asr_batch(model, tmp_path)
    one = {k: (v[:1] if torch.is_tensor(v) else v[:1] if isinstance(v, list) else v) for k, v in batch.items()}
    inputs = model.embed_audio_and_text(one["audio"], one["audio_lens"], one["input_ids"], one["input_lens"],
                                        one["loss_mask"])
    _, index = model.text_teacher_tokens(one, inputs["patch_lens"])
    full, patches = inputs["inputs_embeds"].shape[1], int(inputs["patch_lens"][0])
    segments = len(torch.unique_consecutive(index[0]))
    lengths = {}
    for mode in ("alignment", "head"):
        with open_dict(model.cfg):
            model.cfg.reading = {"span": "collapsed", "train_segments": mode}
        for bias in (-20.0, 20.0):
            with torch.no_grad():
                model.boundary_head.net[1].bias.fill_(bias)
                lengths[mode, bias] = model.collapsed_forward(inputs, index)[1].shape[1]
    assert lengths["alignment", -20.0] == lengths["alignment", 20.0] == full - patches + segments
    assert lengths["head", -20.0] == full - patches + 1
    assert lengths["head", 20.0] == full
    with open_dict(model.cfg):
        model.cfg.reading = {"span": "collapsed", "train_segments": "heads"}
    with pytest.raises(ValueError, match="train_segments"):
        model.train_segments


def test_text_systems_get_the_asr_ceiling_row_speech_systems_their_transcripts():
    """score_hearing asks a text system that can (the topline) for its reply to AuRA's ASR prompt with the question's
    text in place of the audio, and scores it as a transcript: the WER ceiling of a span read as text."""
    import sys
    from pathlib import Path

    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes/aura/local"))
    from score_hearing import score_system, summarize

    from nemo_aura.scoring.items import QAItem
    from nemo_aura.scoring.systems import TEXT_ASR_TEMPLATE

    assert "{question}" in TEXT_ASR_TEMPLATE and "{audio}" not in TEXT_ASR_TEMPLATE

    class Parrot:  # answers with the question, "transcribes" its text by dropping the last word
        uses_audio, sample_rate, asr_ceiling = False, 16000, True

        def answer(self, item, audio, max_new_tokens):
            return {"answer": item.question}

        def transcribe_text(self, text):
            return " ".join(text.split()[:-1])

    items = [QAItem(id=str(i), question=f"where did person{i} move to", answers=[f"town{i}"]) for i in range(3)]
    rows = score_system(Parrot(), items, ["1", "2", "0"], 8)["rows"]
    assert [r["transcript"] for r in rows] == [f"where did person{i} move" for i in range(3)]
    out = summarize(rows)
    assert out["wer"] == pytest.approx(0.2) and out["distinct_transcripts"] == 1.0

    class Plain:  # a text system with no transcription: no WER
        uses_audio, sample_rate = False, 16000
        answer = Parrot.answer

    assert "wer" not in summarize(score_system(Plain(), items, ["1", "2", "0"], 8)["rows"])

    class QATuned(Parrot):  # the fine-tuned reader answers the ASR prompt with a span: not a transcription ceiling
        asr_ceiling = False

    assert "wer" not in summarize(score_system(QATuned(), items, ["1", "2", "0"], 8)["rows"])


def test_greedy_ctc_tokens_merge_repeats_and_drop_blanks():
    from nemo_aura.modules.vocab_ctc import VocabCTCHead

    torch.manual_seed(0)
    table = torch.randn(5, 16)
    head = VocabCTCHead(16, init_scale=30.0)
    blank, token = head.blank.detach(), table - table.mean(0)  # the head scores against centred embeddings
    states = torch.stack([token[2], token[2], blank, token[2], token[4], token[4], blank])
    ids, score = head.greedy_tokens(states, table)
    assert ids.tolist() == [2, 2, 4] and score <= 0.0
    assert head.greedy_tokens(torch.stack([blank, blank]), table)[0].tolist() == []


def vocab_model(tiny_cfg):
    torch.manual_seed(0)
    with open_dict(tiny_cfg):
        tiny_cfg.loss = {"distill_weight": 0.0, "ctc_weight": 1.0}
        tiny_cfg.audio_span = {"lora": "audio"}
        tiny_cfg.reading = {"span": "vocab"}
    return AuRAModel(tiny_cfg)


def test_vocab_span_reads_its_ctc_tokens_as_plain_text(tiny_cfg, monkeypatch):
    """``reading.span: vocab``: a transcript is the CTC tokens themselves, and an answer is the base LLM's (no adapter)
    reading the prompt with those tokens where the audio placeholder was, item by item in a left-padded batch."""
    from nemo_aura.testing import synth_wave

    model = vocab_model(tiny_cfg).eval()
    words = [model.tokenizer.text_to_ids(t) for t in ("one two three", "four")]
    monkeypatch.setattr(model, "vocab_span_tokens",
                        lambda inputs: [(torch.tensor(words[b]), -1.0) for b in range(inputs["inputs_embeds"].shape[0])])
    audio = [torch.from_numpy(synth_wave(0, 1.2)), torch.from_numpy(synth_wave(1, 0.7))]
    assert model.generate(audio, task="asr") == [model.decode_ids(w) for w in words]
    hyps = model.transcribe(audio, batch_size=2, return_hypotheses=True, verbose=False)
    assert [h.y_sequence.tolist() for h in hyps] == words and hyps[0].score == -1.0
    from nemo_aura.infer import InferConfig, Item, predict  # the command line's asr path transcribes the same way

    items = [Item(line=n + 1, entry={"audio_filepath": f"{n}.wav"}, audio=a) for n, a in enumerate(audio)]
    predict(model, items, InferConfig(model_path="-", manifest="m.json", output="-", task="asr", batch_size=2))
    assert [it.added["pred_text"] for it in items] == [model.decode_ids(w) for w in words]

    contexts = ["seven eight nine", "ten"]
    answers = model.generate_ids(audio, task="qa", contexts=contexts, max_new_tokens=5)
    for b in range(2):
        ids = model.prompts.encode(model.prompts.user_message("qa", contexts[b]))[0].tolist()
        at = ids.index(model.audio_locator_id)
        prompt = torch.tensor([ids[:at] + words[b] + ids[at + 1:]])
        with torch.no_grad(), model.llm.disable_adapter():
            out = model.llm.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=5,
                                     do_sample=False, eos_token_id=model.stop_token_ids, pad_token_id=model.pad_id)
        assert answers[b] == cut_at_stop(out[0, prompt.shape[1]:], model.stop_token_ids), b


def test_vocab_span_trains_ctc_keeps_its_head_through_export_and_takes_no_next_token_loss(tiny_cfg, tmp_path):
    """With ``loss.ctc_vocabulary: corpus`` the head's classes are the training transcripts' tokens; it trains, its
    tokens map back to LLM ids, and the export keeps the head and its vocabulary."""
    with open_dict(tiny_cfg):
        tiny_cfg.loss = {"distill_weight": 0.0, "ctc_weight": 1.0, "ctc_vocabulary": "corpus"}
        tiny_cfg.audio_span = {"lora": "audio"}
        tiny_cfg.reading = {"span": "vocab"}
    torch.manual_seed(0)
    model = AuRAModel(tiny_cfg)
    cuts = write_tiny_cuts(tmp_path / "asr", n=3)
    model.set_ctc_vocabulary({"cuts_path": str(cuts)})
    spoken = {t for c in CutSet.from_file(cuts) for t in model.tokenizer.text_to_ids(c.supervisions[0].text)}
    assert model.ctc_head.token_ids.tolist() == sorted(spoken) and model.ctc_head.classes.shape[0] == len(spoken)
    first, out = train_steps(model, asr_batch(model, tmp_path), steps=10)
    assert out["ctc_loss"].item() < 0.8 * first["ctc_loss"] and model.ctc_head.classes.grad is not None
    model.eval()
    from nemo_aura.testing import synth_wave

    audio = [torch.from_numpy(synth_wave(0, 1.5)), torch.from_numpy(synth_wave(1, 1.0))]
    before = model.generate_ids(audio, task="asr")
    assert any(before) and all(set(ids) <= spoken for ids in before)  # LLM token ids, from the corpus's tokens
    path = model.export_encoder_free(str(tmp_path / "vocab.nemo"))
    restored = AuRAModel.restore_from(path, map_location="cpu").eval()
    assert restored.teacher is None and torch.equal(restored.ctc_head.token_ids, model.ctc_head.token_ids)
    with pytest.raises(ValueError, match="beam_batch decodes the character CTC head"):
        restored.set_ctc_decoding({"strategy": "beam_batch"})  # its LM would be over characters
    assert restored.generate_ids(audio, task="asr") == before
    with open_dict(tiny_cfg):
        tiny_cfg.loss = {"distill_weight": 0.0, "ctc_weight": 1.0, "lm_weight": 1.0}
    with pytest.raises(ValueError, match="reading.span vocab"):
        AuRAModel(tiny_cfg)


def test_vocab_span_read_alone_gives_the_same_tokens_whatever_the_prompt_and_trains(tiny_cfg, tmp_path):
    """``reading.context: audio``: layers 1..K see the audio span alone, so an item's CTC tokens are those of its span
    run by itself, identical under the asr and the qa prompt (with a context) and in a batch of another length; the CTC
    trains on the same pass. With the prompt as context (the default) the tokens see the prompt; other spans refuse."""
    from nemo_aura.models.aura_model import _audio_span_alone
    from nemo_aura.testing import synth_wave

    with open_dict(tiny_cfg):
        tiny_cfg.loss = {"distill_weight": 0.0, "ctc_weight": 1.0}
        tiny_cfg.audio_span = {"lora": "audio"}
        tiny_cfg.reading = {"span": "vocab", "context": "audio"}
    torch.manual_seed(0)
    model = AuRAModel(tiny_cfg)
    first, out = train_steps(model, asr_batch(model, tmp_path), steps=8)
    assert out["ctc_loss"].item() < first["ctc_loss"]
    model.eval()
    audio = [torch.from_numpy(synth_wave(0, 1.5)), torch.from_numpy(synth_wave(1, 0.6))]

    def span_states(task, contexts=None, batch=audio):
        from nemo_aura.parts.audio import collate_waveforms
        from nemo_aura.parts.prompting import right_pad

        ids = [model.prompts.encode(m)[0] for m in model._messages(len(batch), None, task, contexts, None)]
        waves, lens = collate_waveforms(batch)
        inputs = model.embed_audio_and_text(waves, lens, right_pad(ids, model.pad_id),
                                            torch.tensor([len(i) for i in ids]), left_pad=True)
        alone = _audio_span_alone(inputs)
        with torch.no_grad():
            states, _ = model.run_llm(alone["inputs_embeds"], alone["attention_mask"], [model.ctc_layer], False,
                                      audio_mask=alone["audio_mask"])
        return [states[model.ctc_layer][b][alone["audio_mask"][b]] for b in range(len(batch))], inputs

    asr_states, asr_inputs = span_states("asr")
    qa_states, qa_inputs = span_states("qa", ["one two three four five six", "seven"])
    single, _ = span_states("asr", batch=audio[1:])
    assert asr_inputs["inputs_embeds"].shape[1] != qa_inputs["inputs_embeds"].shape[1]
    for a, q in zip(asr_states, qa_states):
        assert torch.allclose(a, q, atol=1e-5)
    assert torch.allclose(asr_states[1], single[0], atol=1e-5)
    with torch.no_grad():
        assert [ids.tolist() for ids, _ in model.vocab_span_tokens(asr_inputs)] == \
            [ids.tolist() for ids, _ in model.vocab_span_tokens(qa_inputs)]
    with open_dict(tiny_cfg):
        tiny_cfg.reading = {"span": "frames", "context": "audio"}
    with pytest.raises(ValueError, match="reading.context audio"):
        AuRAModel(tiny_cfg)


def test_character_ctc_head_learns_to_write_its_transcripts_and_the_llm_reads_them_tokenized(tiny_cfg, tmp_path):
    """``loss.ctc_vocabulary: characters``: several CTC frames per audio token over printable ASCII; trained on three
    utterances it writes their transcripts (validation's ``ctc_wer`` says so), generation reads the text through the
    LLM's tokenizer, and the encoder-free export writes the same."""
    from nemo_aura.modules.vocab_ctc import CharacterCTCHead, fold_to_alphabet

    assert fold_to_alphabet("Zoë  Ångström\tsays “hi”") == "Zoe Angstrom says hi"
    with open_dict(tiny_cfg):
        tiny_cfg.loss = {"distill_weight": 0.0, "ctc_weight": 1.0, "ctc_vocabulary": "characters", "ctc_upsample": 4}
        tiny_cfg.audio_span = {"lora": "audio"}
        tiny_cfg.reading = {"span": "vocab"}
    torch.manual_seed(0)
    model = AuRAModel(tiny_cfg)
    assert isinstance(model.ctc_head, CharacterCTCHead)
    batch = asr_batch(model, tmp_path)
    model.eval()
    with torch.no_grad():
        assert model.compute_losses(batch)["ctc_wer"].item() >= 0.9  # untrained: writes nothing right
    first, out = train_steps(model, batch, steps=150, lr=3e-3)
    assert out["ctc_loss"].item() < 0.2 * first["ctc_loss"] and "ctc_wer" not in out  # no decoding while training
    model.eval()
    with torch.no_grad():
        assert model.compute_losses(batch)["ctc_wer"].item() < 0.35
    audio = [batch["audio"][b, : batch["audio_lens"][b]] for b in range(3)]
    ids = model.generate_ids(audio, task="asr")
    right = [b for b in range(3) if model.tokenizer.ids_to_text(ids[b]) == batch["transcripts"][b]]
    assert len(right) >= 2
    for b in right:  # the LLM reads the head's text tokenized as it tokenizes any text
        assert ids[b] == model.tokenizer.text_to_ids(batch["transcripts"][b])
    path = model.export_encoder_free(str(tmp_path / "chars.nemo"))
    restored = AuRAModel.restore_from(path, map_location="cpu").eval()
    assert isinstance(restored.ctc_head, CharacterCTCHead) and restored.generate_ids(audio, task="asr") == ids
    # Beam search with a character LM of the transcripts (add_decoding_lm.py): at least as many reads right as the
    # greedy path, and the LM travels inside the .nemo.
    from nemo_aura.modules.vocab_ctc import ALPHABET
    from nemo_aura.parts.char_lm import kneser_ney_arpa_lines, write_arpa

    texts = [fold_to_alphabet(t) for t in batch["transcripts"]]
    lm = write_arpa(tmp_path / "lm" / "chars.arpa", kneser_ney_arpa_lines(
        ([ALPHABET.index(ch) for ch in t] for t in texts), len(ALPHABET), 6))
    restored.set_ctc_decoding({"strategy": "beam_batch", "beam": {"beam_size": 4, "ngram_lm_model": str(lm),
                                                                          "beam_beta": 1.0}})
    beam_ids = restored.generate_ids(audio, task="asr")
    beam_right = [b for b in range(3) if model.tokenizer.ids_to_text(beam_ids[b]) == batch["transcripts"][b]]
    assert len(beam_right) >= len(right)
    restored.save_to(str(tmp_path / "chars_lm.nemo"))
    shutil.rmtree(tmp_path / "lm")
    with_lm = AuRAModel.restore_from(str(tmp_path / "chars_lm.nemo"), map_location="cpu").eval()
    assert with_lm.cfg.ctc_decoding.strategy == "beam_batch" and with_lm.ctc_head.beam_decoder.lm is not None
    assert with_lm.generate_ids(audio, task="asr") == beam_ids
    with_lm.save_to(str(tmp_path / "again.nemo"))  # a restored model keeps its LM for the next save
    again = AuRAModel.restore_from(str(tmp_path / "again.nemo"), map_location="cpu").eval()
    assert again.generate_ids(audio, task="asr") == beam_ids
    with_lm.change_decoding_strategy({"strategy": "greedy_batch"})  # as NeMo's scripts ask: the CTC read greedy
    assert with_lm.ctc_head.beam_decoder is None and with_lm.generate_ids(audio, task="asr") == ids
    with pytest.raises(ValueError, match="ctc_decoding.strategy must be 'greedy' or 'beam_batch'"):
        with_lm.set_ctc_decoding({"strategy": "beam"})
    with pytest.raises(ValueError, match="transcribes with its character CTC read"):
        with_lm.change_decoding_strategy({"strategy": "sample"})
    # a NeMo beam config without an LM path keeps the model's own LM (and its tuning where the config is silent)
    with_lm.change_decoding_strategy({"strategy": "beam_batch", "beam": {"beam_size": 4}})
    assert with_lm.ctc_head.beam_decoder.lm is not None and with_lm.generate_ids(audio, task="asr") == beam_ids
    assert with_lm.cfg.ctc_decoding.beam.beam_beta == 1.0 and with_lm.decoding.num_beams == 1  # the LLM untouched
    # Context biasing: each item's context reaches its own read; with its own words as context the reads are at
    # least as right; the settings survive a save, and NeMo's boosting_tree config (a phrase file) is taken.
    with_lm.change_decoding_strategy({"strategy": "beam_batch", "beam": {
        "boosting_tree_alpha": 1.0, "boosting_tree": {"context_score": 2.0, "use_triton": True, "model_path": None}}})
    seen = []
    decoder = with_lm.ctc_head.beam_decoder
    with_lm.ctc_head.beam_decoder = lambda lp, context=None: (seen.append(context), decoder(lp, context=context))[1]
    with_lm.generate_ids(audio, task="asr", contexts=["first", None, "third"])
    assert seen == ["first", None, "third"]
    with_lm.ctc_head.beam_decoder = decoder
    biased_ids = with_lm.generate_ids(audio, task="asr", contexts=list(batch["transcripts"]))
    biased_right = [b for b in range(3) if model.tokenizer.ids_to_text(biased_ids[b]) == batch["transcripts"][b]]
    assert len(biased_right) >= len(beam_right) and with_lm.generate_ids(audio, task="asr") == beam_ids
    with_lm.save_to(str(tmp_path / "biased.nemo"))
    biased = AuRAModel.restore_from(str(tmp_path / "biased.nemo"), map_location="cpu").eval()
    assert biased.cfg.ctc_decoding.beam.boosting_tree_alpha == 1.0
    assert biased.generate_ids(audio, task="asr", contexts=list(batch["transcripts"])) == biased_ids
    (tmp_path / "phrases.txt").write_text("Dmitri Volkov\n\nOslo\n")
    biased.change_decoding_strategy({"strategy": "beam_batch", "beam": {
        "boosting_tree": {"key_phrases_file": str(tmp_path / "phrases.txt"), "source_lang": "en"}}})
    assert biased.ctc_head.beam_decoder.phrases_for(None) == ("Dmitri Volkov", "Oslo")
    assert biased.cfg.ctc_decoding.beam.boosting_tree.context_score == 2.0  # kept where the config is silent
    with pytest.raises(ValueError, match="boosting_tree.model_path 'tree.nemo'"):
        biased.change_decoding_strategy({"strategy": "beam_batch", "beam": {"boosting_tree": {"model_path": "tree.nemo"}}})
    # N-best rescoring by the base LLM: the LLM's log-likelihoods of texts, batched as alone, from the logits of the
    # user turn that holds them (its closing token included); a rescorer that prefers short texts picks, among the
    # beam's hypotheses, one no longer than the beam's best.
    texts = ["one two three", "four", ""]
    scores = biased.text_log_likelihoods(texts)
    assert scores == pytest.approx([biased.text_log_likelihoods([t])[0] for t in texts], abs=1e-4)
    from nemo_aura.parts.prompting import text_generation_prompt

    full = text_generation_prompt(biased.prompts.formatter, "four")
    empty = text_generation_prompt(biased.prompts.formatter, "")
    start = next(i for i, (a, b) in enumerate(zip(full.tolist(), empty.tolist())) if a != b)
    end = len(full) - (len(empty) - start) + 1
    with biased.llm.disable_adapter():
        lp = biased.llm(input_ids=full[None, :end]).logits[0].float().log_softmax(-1)
    assert scores[1] == pytest.approx(float(lp[start - 1 : end - 1].gather(-1, full[start:end, None]).sum()), abs=1e-4)
    contexts = list(batch["transcripts"])
    plain_texts = [biased.decode_ids(i) for i in biased.generate_ids(audio, task="asr", contexts=contexts)]
    biased.change_decoding_strategy({"strategy": "beam_batch", "beam": {"llm_rescoring_weight": 100.0}})
    biased.text_log_likelihoods = lambda texts: [-float(len(t)) for t in texts]
    short = [biased.decode_ids(i) for i in biased.generate_ids(audio, task="asr", contexts=contexts)]
    assert all(len(s) <= len(p) for s, p in zip(short, plain_texts)) and biased.cfg.ctc_decoding.beam.llm_rescoring_weight == 100
    # benchmarks/ctc_decoding_latency.py: the four decodings of one model side by side on the same utterances
    import importlib.util

    from nemo_aura.scoring.metrics import wer

    cuts_path = str(tmp_path / "asr" / "cuts.jsonl.gz")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "ctc_decoding_latency.py"
    spec = importlib.util.spec_from_file_location("ctc_decoding_latency", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--nemo", str(tmp_path / "biased.nemo"), "--cuts", cuts_path, "--items", "3", "--repeats", "1",
                       "--threads", "1", "--out", str(tmp_path / "bench")]) == 0
    timed = json.loads((tmp_path / "bench" / "results.json").read_text())["results"]
    assert list(timed) == ["greedy", "lm", "lm_boost", "lm_boost_rescored"] and timed["greedy"]["ratio_to_greedy"] == 1.0
    greedy_read = [model.tokenizer.ids_to_text(i) for i in ids]
    assert timed["greedy"]["wer"] == pytest.approx(wer(greedy_read, batch["transcripts"]))
    assert timed["lm_boost"]["wer"] == timed["lm"]["wer"]  # these cuts carry no context: nothing to boost
    # tune_decoding_lm.py: the greedy row equals the model's greedy reads; the LM rows decode the same log-probs
    from tune_decoding_lm import main as tune

    cuts = str(tmp_path / "asr" / "cuts.jsonl.gz")
    assert tune(["--model", path, "--dev", f"tiny={cuts}", "--text", cuts, "--orders", "4", "--alphas", "0,1",
                 "--betas", "1", "--beam-sizes", "4", "--boost-alphas", "0,2", "--lexicon-sizes", "0,50",
                 "--threads", "1", "--out", str(tmp_path / "tune")]) == 0
    tuned = json.loads((tmp_path / "tune" / "results.json").read_text())["results"]
    from nemo_aura.parts.char_lm import vocabulary_words
    from nemo_aura.scoring.metrics import wer

    greedy_texts = [model.tokenizer.ids_to_text(i) for i in ids]
    assert tuned[0]["decoding"] == "greedy" and tuned[0]["tiny"]["wer"] == pytest.approx(
        wer(greedy_texts, batch["transcripts"]))
    assert len(tuned) == 9 and min(r["tiny"]["wer"] for r in tuned[1:]) <= tuned[0]["tiny"]["wer"]
    assert sorted({r["lexicon_words"] for r in tuned[1:]}) == [0, 50]
    for alpha in (0.0, 1.0):  # these cuts carry no context: boosting it changes nothing
        same = [r["tiny"]["wer"] for r in tuned[1:] if r["alpha"] == alpha and r["lexicon_words"] == 0]
        assert len(same) == 2 and same[0] == same[1]
    # the LLM's vocabulary words are in the second LM and not only in the transcripts' one
    taught, plain = ((tmp_path / "tune" / f"char_lm_4_{n}.arpa").read_text() for n in (50, 0))
    assert vocabulary_words(model.tokenizer, 50) and len(taught) > len(plain)
    from add_decoding_lm import main as add_lm  # the recipe's LM: the same texts and words give the same ARPA

    assert add_lm(["--model", path, "--text", cuts, "--lm", str(tmp_path / "lex.arpa"), "--order", "4",
                   "--lexicon-words", "50", "--boost-alpha", "0", "--out", str(tmp_path / "lex.nemo")]) == 0
    assert (tmp_path / "lex.arpa").read_text() == taught and (tmp_path / "lex.nemo").is_file()
    assert "| greedy |" in (tmp_path / "tune" / "results.md").read_text()
    # stage 6's aura_ctc_ft: the fine-tuned reader answers what this model writes, loaded through NeMo's ASRModel
    from nemo_aura.scoring.systems import build_system

    with pytest.raises(ValueError, match="needs --reader-dir"):
        build_system("aura_ctc_ft", {"aura": path})
    import nemo.core.classes.common as nemo_common

    from nemo_aura.parts.registration import PLUGIN_PREFIX

    # as in a scorer process where no AuRA model was built first: NeMo must still be allowed to build this one
    allowed = [p for p in nemo_common.ALLOWED_TARGET_PREFIXES if p != PLUGIN_PREFIX]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nemo_common, "ALLOWED_TARGET_PREFIXES", allowed)
        system = build_system("aura_ctc_ft", {"aura": path, "reader_dir": tiny_cfg.student.pretrained_path})
    assert system.name == "aura_ctc_ft" and system.uses_audio
    assert [system.transcribe(a.numpy()) for a in audio] == [model.tokenizer.ids_to_text(i) for i in ids]
