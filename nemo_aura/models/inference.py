"""Inference API of AuRA models: ``generate`` (answers, transcripts, text questions about audio) and
NeMo's ``transcribe`` (through NeMo's own ``ASRTranscriptionMixin``, so ASR workflows call it unchanged).
"""
from __future__ import annotations

from contextlib import nullcontext

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from nemo.collections.asr.parts.mixins.transcription import (
    ASRTranscriptionMixin,
    TranscribeConfig,
    TranscriptionMixin,
    get_value_from_transcription_config,
)
from nemo.collections.asr.parts.utils.rnnt_utils import Hypothesis

from nemo_aura.parts.config import plain_dict
from nemo_aura.parts.audio import batch_rows, collate_waveforms, load_audio_item, resample_waveform, warn_if_other_rate
from nemo_aura.parts.manifest import read_audio_manifest
from nemo_aura.parts.nemo_tools import check_generation_options, transcribe_prompt
from nemo_aura.parts.prompting import cut_at_stop, left_pad, right_pad, stop_token_ids, text_generation_prompt
from nemo_aura.parts.reader import reader_active

DEFAULT_MAX_AUDIO_SECONDS = 30.0
DEFAULT_MAX_NEW_TOKENS = 64
DEFAULT_TRANSCRIBE_MAX_NEW_TOKENS = 128


@dataclass
class AuRATranscribeConfig(TranscribeConfig):
    """NeMo's ``TranscribeConfig`` plus what an LLM decoder needs (``transcribe(..., max_new_tokens=...)``)."""

    max_new_tokens: int | None = None  # default: cfg.generation.max_new_tokens, else 128
    prompt: str | None = None  # a user message with the audio placeholder; default: the `asr` template


class _AudioItems(Dataset):
    """Paths, manifest entries (``audio_filepath`` already resolved), arrays or tensors -> mono waveforms at the
    model's rate (``load_audio_item``).

    Used for every ``transcribe`` input so files and in-memory audio get the same handling (NeMo's tensor
    dataset pads short audio to 1 s, which would change an LLM's transcript).
    """

    def __init__(self, entries: list, sample_rate: int, names: list[str] | None = None):
        self.entries, self.sample_rate = entries, sample_rate
        self.names = names or [f"audio[{i}]" for i in range(len(entries))]

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> Tensor:
        entry = self.entries[i]
        if isinstance(entry, dict):
            if "audio_filepath" not in entry:
                raise ValueError(f"{self.names[i]}: manifest entry has no 'audio_filepath' field: {entry}")
            entry = entry["audio_filepath"]
        wave = load_audio_item(entry, self.sample_rate, self.names[i])
        if not isinstance(entry, (str, Path)):
            warn_if_other_rate(wave, self.sample_rate, self.names[i])
        return wave


@runtime_checkable
class InferenceHost(Protocol):
    """What ``AuRAInferenceMixin`` needs from the model it is mixed into (``AuRAModel`` and the bridge provide it)."""

    cfg: Any  # prompt_format, generation defaults, max_audio_seconds, long_audio, stop_tokens
    llm: torch.nn.Module  # the HF causal LM (peft-wrapped while it carries LoRA)
    tokenizer: Any  # NeMo tokenizer of the LLM
    prompts: Any  # parts.prompting.PromptBuilder
    audio_span: Any  # parts.audio_span.AudioSpan: audio-only LoRA / bidirectional audio attention
    device: torch.device
    sample_rate: int
    pad_id: int
    reading_span: str  # frames | collapsed | vocab
    has_reader: bool  # a vocab model carrying a text reader (parts.reader) answers spoken questions with it

    def embed_audio_and_text(self, audio: Tensor, audio_lens: Tensor, input_ids: Tensor, input_lens: Tensor,
                             loss_mask: Tensor | None = None, left_pad: bool = False, audio_tokens=None) -> dict: ...

    def collapse_audio_span(self, inputs: dict) -> tuple[dict, dict]: ...

    def replaced_span_states(self, audio_mask: Tensor, pooled: dict): ...

    def vocab_span_tokens(self, inputs: dict) -> list[tuple[Tensor, float]]: ...

    def read_span_as_tokens(self, inputs: dict) -> tuple[dict, list[Tensor]]: ...

    def reader_message(self, transcript: str, context: str | None) -> str: ...


class AuRAInferenceMixin(ASRTranscriptionMixin):
    """Mixed into ``AuRAModel``: everything a user of a trained model calls. The host's side of the contract is
    ``InferenceHost``.

    Generation defaults may be set in the model config (``generation: {max_new_tokens: 64, ...}``, any
    Hugging Face ``generate`` option); arguments given to ``generate`` override them.
    """

    # ------------------------------------------------------------------ generate
    @torch.no_grad()
    def generate(
        self,
        audio: list | Tensor,
        audio_lens: Tensor | None = None,
        prompts: list[str] | str | None = None,
        task: str = "qa",
        contexts: list[str | None] | None = None,
        questions: list[str] | str | None = None,
        max_new_tokens: int | None = None,
        batch_size: int | None = None,
        sample_rate: int | None = None,
        **generation_kwargs: Any,
    ) -> list[str]:
        """Answer (``task="qa"``, with optional text ``contexts``), transcribe (``task="asr"``), or answer text
        ``questions`` about each audio; one string per item. A character-CTC model whose ``ctc_decoding`` biases
        (``beam.boosting_tree_alpha`` > 0) boosts the words of each item's context in its read, for either task.

        ``audio``: a list of items (paths, 1-D arrays/tensors, or 2-D ones holding one multi-channel recording
        in either layout, downmixed), one item, or a padded (B, T) array/tensor (one item per row) with optional
        ``audio_lens``; the rule and its errors: ``nemo_aura.parts.audio``. Arrays/tensors are taken to be at
        ``sample_rate`` if given, else at the model's rate (``self.sample_rate``): one at another rate given
        without ``sample_rate=`` is read too fast or too slow, and a warning is logged where its length looks like
        it (files are always resampled). NaN/inf samples are an error naming the item. ``prompts``: user messages holding the audio
        placeholder (override the task template). ``batch_size`` chunks the items. Greedy by default; pass
        ``do_sample=True, temperature=..., top_p=...`` (and ``seed=`` for reproducible sampling) to sample.
        """
        rows = self.generate_ids(audio, audio_lens, prompts, task, contexts, max_new_tokens, questions=questions,
                                 batch_size=batch_size, sample_rate=sample_rate, **generation_kwargs)
        return [self.decode_ids(r) for r in rows]

    @torch.no_grad()
    def generate_ids(
        self, audio, audio_lens=None, prompts=None, task="qa", contexts=None, max_new_tokens=None, questions=None,
        batch_size=None, sample_rate=None, **generation_kwargs,
    ) -> list[list[int]]:
        """Like ``generate`` but returns the new token ids of each item, cut at the first stop token."""
        _check_batch_size(batch_size)
        waves = self._waveforms(audio, audio_lens, sample_rate)
        messages = self._messages(len(waves), prompts, task, contexts, questions)
        self._check_audio_lengths(waves, task)
        options = self._generation_options(max_new_tokens, generation_kwargs)
        seed = options.pop("seed", None)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # a seed makes sampling reproducible, the caller's RNG untouched
            if seed is not None:
                torch.manual_seed(int(seed))
            transcripts = task == "asr" and prompts is None and questions is None
            reader = self._reader_messages(len(waves), prompts, task, contexts, questions)
            about = _per_item(contexts, len(waves), "contexts") if contexts is not None else None
            if reader is not None:
                return [ids for ids, _ in self._answer_spoken_with_reader(waves, reader, batch_size or len(waves), options,
                                                                          contexts=about)]
            return [ids for ids, _ in self._generate_items(waves, messages, batch_size or len(waves), options,
                                                           transcripts=transcripts, contexts=about)]

    def _generation_options(self, max_new_tokens: int | None, kwargs: dict) -> dict:
        """cfg.generation defaults < explicit arguments; greedy unless sampling is asked for."""
        options = {"do_sample": False, "max_new_tokens": DEFAULT_MAX_NEW_TOKENS, **plain_dict(self.cfg.get("generation"))}
        options.update(kwargs)
        if max_new_tokens is not None:
            options["max_new_tokens"] = int(max_new_tokens)
        check_generation_options(self, options)
        return options

    def _generate_items(
        self, waves: list[Tensor], messages: list[str], batch_size: int, options: dict, with_scores: bool = False,
        transcripts: bool = False, contexts: list[str | None] | None = None,
    ) -> list[tuple[list[int], float | None]]:
        """Batches of ``batch_size`` items; audio over ``max_audio_samples`` (only reached with
        ``long_audio: chunk``) is cut into pieces whose outputs are joined. ``contexts``: the text each item is
        about, for a CTC read that biases towards its words."""
        limit = self.max_audio_samples
        pieces = [(i, w[s : s + limit], m) for i, (w, m) in enumerate(zip(waves, messages)) for s in range(0, w.numel(), limit)]
        outs = []
        for b in range(0, len(pieces), batch_size):
            chunk = pieces[b : b + batch_size]
            about = [contexts[i] for i, _, _ in chunk] if contexts is not None else None
            outs += self._generate_batch([w for _, w, _ in chunk], [m for _, _, m in chunk], options, with_scores,
                                         transcripts, about)
        joined: list[tuple[list[int], float | None]] = [([], 0.0 if with_scores else None) for _ in waves]
        for (i, _, _), (ids, score) in zip(pieces, outs):
            joined[i] = (joined[i][0] + ids, None if score is None else joined[i][1] + score)
        return joined

    def _generate_batch(
        self, waves: list[Tensor], messages: list[str], options: dict, with_scores: bool = False,
        transcripts: bool = False, contexts: list[str | None] | None = None,
    ) -> list[tuple[list[int], float | None]]:
        """One left-padded batch through ``llm.generate``: (new ids cut at the first stop token, log-prob sum).
        ``transcripts`` (the asr task's own prompt): with ``reading.span: vocab`` the CTC tokens are returned as
        they are (their greedy path's log-prob as the score), without generation."""
        audio, audio_lens = collate_waveforms(waves)
        ids = [self.prompts.encode(m)[0] for m in messages]
        inputs = self.embed_audio_and_text(
            audio.to(self.device), audio_lens.to(self.device), right_pad(ids, self.pad_id).to(self.device),
            torch.tensor([len(i) for i in ids], device=self.device), left_pad=True,
        )
        replaced = nullcontext()
        if self.reading_span == "collapsed":  # one position per spoken token from layer K+1 on
            inputs, pooled = self.collapse_audio_span(inputs)
            replaced = self.replaced_span_states(inputs["audio_mask"], pooled)
        elif self.reading_span == "vocab":  # the CTC head's tokens in place of the audio, read as text
            if contexts is not None:
                inputs = {**inputs, "contexts": contexts}
            if transcripts:  # the tokens are the transcript: the instruct LLM need not copy them
                return [(ids.tolist(), score if with_scores else None) for ids, score in self.vocab_span_tokens(inputs)]
            inputs, _ = self.read_span_as_tokens(inputs)
        stops = self.stop_token_ids
        with replaced:
            if self.audio_span.needs_positions:
                options = {**options, "cache": self._prefill_audio_span(inputs)}
            with self.audio_span.positions(None):  # generated tokens are text
                out = self.llm.generate(
                    inputs_embeds=inputs["inputs_embeds"], attention_mask=inputs["attention_mask"],
                    eos_token_id=stops, pad_token_id=self.pad_id,
                    return_dict_in_generate=True, output_scores=with_scores, **options,
                )
        return self._generated_rows(out, out.sequences, stops, with_scores)

    def _generated_rows(self, out, new_ids: Tensor, stops: list[int], with_scores: bool) -> list[tuple[list[int], float | None]]:
        """``llm.generate``'s new ids per row, cut at the first stop token, with their log-prob sum if asked."""
        rows = [cut_at_stop(row, stops) for row in new_ids]
        if not with_scores:
            return [(r, None) for r in rows]
        beams = getattr(out, "beam_indices", None)  # beam search: scores are already log-probabilities
        logprobs = self.llm.compute_transition_scores(out.sequences, out.scores, beams, normalize_logits=beams is None)
        return [(r, float(logprobs[i, : len(r)].sum())) for i, r in enumerate(rows)]

    def _answer_spoken_with_reader(self, waves: list[Tensor], reader_messages: list[str], batch_size: int, options: dict,
                                   with_scores: bool = False, contexts: list[str | None] | None = None,
                                   ) -> list[tuple[list[int], float | None]]:
        """A vocab model with a reader: each item's transcript (the CTC read under the model's own ASR prompt, as
        ``transcribe`` writes it: what the reader was trained on) goes into its reader message's audio slot, and the
        reader answers those text prompts (``parts.reader``)."""
        asr = [self.prompts.user_message("asr")] * len(waves)
        read = self._generate_items(waves, asr, batch_size, options, transcripts=True, contexts=contexts)
        texts = [self.decode_ids(ids) for ids, _ in read]
        tag = self.cfg.audio_locator_tag
        messages = [m.replace(tag, t) for m, t in zip(reader_messages, texts)]
        out = []
        for b in range(0, len(messages), batch_size):
            out += self._answer_with_reader(messages[b : b + batch_size], options, with_scores)
        return out

    def _answer_with_reader(self, messages: list[str], options: dict, with_scores: bool) -> list[tuple[list[int], float | None]]:
        """Text prompts answered by the LLM with the reader adapter active (left-padded batch)."""
        ids = [text_generation_prompt(self.prompts.formatter, m) for m in messages]
        input_ids = left_pad(ids, self.pad_id).to(self.device)
        attention = left_pad([torch.ones_like(i) for i in ids], 0).to(self.device)
        stops = self.stop_token_ids
        with reader_active(self.llm), self.audio_span.positions(None):
            out = self.llm.generate(input_ids=input_ids, attention_mask=attention, eos_token_id=stops,
                                    pad_token_id=self.pad_id, return_dict_in_generate=True, output_scores=with_scores,
                                    **options)
            return self._generated_rows(out, out.sequences[:, input_ids.shape[1]:], stops, with_scores)

    @torch.no_grad()
    def text_log_likelihoods(self, texts: list[str]) -> list[float]:
        """Each text's log-probability as a user turn under the base LLM (adapters off), its end-of-turn token
        included (a cut-off hypothesis pays for it): the LLM's judgement of the CTC read's N-best
        (``ctc_decoding.beam.llm_rescoring_weight``). It knows words and names the read's character LM never saw."""
        fmt = self.prompts.formatter
        empty = text_generation_prompt(fmt, "").tolist()
        rows, spans = [], []
        for text in texts:
            full = text_generation_prompt(fmt, text).tolist()
            start = next((i for i, (a, b) in enumerate(zip(full, empty)) if a != b), min(len(full), len(empty)))
            end = len(full) - (len(empty) - start) + 1  # the text and the token that closes the turn
            rows.append(torch.tensor(full[:end]))
            spans.append((start, end))
        ids = right_pad(rows, self.pad_id).to(self.device)
        mask = (torch.arange(ids.shape[1])[None] < torch.tensor([len(r) for r in rows])[:, None]).long().to(self.device)
        base = self.llm.disable_adapter() if hasattr(self.llm, "disable_adapter") else nullcontext()
        with base, self.audio_span.positions(None):
            logits = self.llm(input_ids=ids, attention_mask=mask).logits
        # normalised at the scored positions only (the prompt's and the padding's are never read)
        return [float(logits[b, s - 1 : e - 1].float().log_softmax(-1).gather(-1, ids[b, s:e, None]).sum())
                for b, (s, e) in enumerate(spans)]

    def _reader_messages(self, n: int, prompts, task: str, contexts, questions) -> list[str] | None:
        """The reader's messages (the audio tag in its transcript slot) when it answers: a vocab model with a reader,
        the qa task on its own templates; None otherwise (custom prompts and text questions stay the model's own)."""
        if not self.has_reader or self.reading_span != "vocab" or task != "qa" \
                or prompts is not None or questions is not None:
            return None
        contexts = _per_item(contexts, n, "contexts") if contexts is not None else [None] * n
        return [self.reader_message(self.cfg.audio_locator_tag, c) for c in contexts]

    def _prefill_audio_span(self, inputs: dict) -> Any:
        """KV cache of all prompt positions but the last, computed with the ``audio_span`` settings (audio-only
        LoRA, bidirectional audio attention) that ``llm.generate`` cannot express; generate continues from it
        with the last prompt token (always text) and the usual causal mask."""
        attn, audio_mask = inputs["attention_mask"][:, :-1], inputs["audio_mask"][:, :-1]
        positions = (attn.cumsum(-1) - 1).masked_fill(attn == 0, 0)  # as generate derives them from the mask
        with self.audio_span.positions(audio_mask):
            out = self.llm(
                inputs_embeds=inputs["inputs_embeds"][:, :-1], position_ids=positions, use_cache=True,
                attention_mask=self.audio_span.attention_mask(attn, audio_mask, self.llm.config),
                logits_to_keep=1,  # only the cache is used: no (prompt length x vocabulary) logits
            )
        return out.past_key_values

    def decode_ids(self, ids: list[int]) -> str:
        """Text of generated token ids (special tokens dropped)."""
        return self.tokenizer.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def _messages(self, n: int, prompts, task: str, contexts, questions) -> list[str]:
        if prompts is not None:
            return _per_item(prompts, n, "prompts")
        if questions is not None:
            return [self.prompts.user_message("question", question=q) for q in _per_item(questions, n, "questions")]
        contexts = _per_item(contexts, n, "contexts") if contexts is not None else [None] * n
        return [self.prompts.user_message(task, c) for c in contexts]

    def _waveforms(self, audio, audio_lens, sample_rate: int | None) -> list[Tensor]:
        """A list of 1-D float waveforms at the model's rate (files resampled; arrays if ``sample_rate`` is given)."""
        if isinstance(audio, (Tensor, np.ndarray)) and audio.ndim == 2:  # a padded (B, T) batch
            items = batch_rows(audio, audio_lens)
        else:
            items = [audio] if isinstance(audio, (str, Path, Tensor)) or hasattr(audio, "shape") else list(audio)
        if not len(items):
            raise ValueError("no audio given")
        waves = [load_audio_item(a, self.sample_rate, f"audio[{i}]") for i, a in enumerate(items)]
        if sample_rate and sample_rate != self.sample_rate:  # files were resampled on reading
            waves = [w if isinstance(a, (str, Path)) else resample_waveform(w, sample_rate, self.sample_rate)
                     for a, w in zip(items, waves)]
        elif not sample_rate:
            for i, (a, w) in enumerate(zip(items, waves)):
                if not isinstance(a, (str, Path)):
                    warn_if_other_rate(w, self.sample_rate, f"audio[{i}]")
        return waves

    @property
    def max_audio_samples(self) -> int:
        return int(float(self.cfg.get("max_audio_seconds", DEFAULT_MAX_AUDIO_SECONDS)) * self.sample_rate)

    def _check_audio_lengths(self, waves: list[Tensor], task: str) -> None:
        """Audio over ``cfg.max_audio_seconds`` is an error unless ``long_audio: chunk`` and task asr
        (then ``_generate_items`` transcribes it in pieces)."""
        limit = self.max_audio_samples
        long_items = {i: round(w.numel() / self.sample_rate, 1) for i, w in enumerate(waves) if w.numel() > limit}
        if long_items and (self.cfg.get("long_audio", "error") != "chunk" or task != "asr"):
            raise ValueError(
                f"audio items {long_items} (seconds) are longer than max_audio_seconds={limit / self.sample_rate:g}; "
                "shorten them, raise max_audio_seconds, or set long_audio: chunk (transcription only)"
            )

    @property
    def stop_token_ids(self) -> list[int]:
        return stop_token_ids(self.llm, self.tokenizer, self.cfg.get("stop_tokens", []))

    # ------------------------------------------------------------------ NeMo transcribe()
    # NeMo's own TranscriptionMixin.transcribe drives these hooks, so paths, a manifest (.json/.jsonl, relative
    # paths resolved against its folder, as `infer` does), arrays/tensors, a DataLoader, `override_config`,
    # `verbose` behave as for NeMo ASR models; a 2-D array/tensor is a (B, T) batch, as in `generate`. Like them (NeMo 3.0) it returns a list of `Hypothesis`: `.text`, `.y_sequence` = the
    # generated token ids, `.length`; with `return_hypotheses=True` also `.score` = their summed log-prob.
    def transcribe(
        self,
        audio,
        batch_size: int = 4,
        return_hypotheses: bool = False,
        num_workers: int = 0,
        channel_selector=None,
        augmentor=None,
        verbose: bool = True,
        timestamps: bool | None = None,
        override_config: TranscribeConfig | None = None,
        **config_kwargs,
    ) -> list[Hypothesis]:
        """NeMo ASR ``transcribe``; extra ``config_kwargs``: ``max_new_tokens`` (default
        ``cfg.generation.max_new_tokens``, else 128), ``prompt`` (default:
        the ``asr`` template). ``timestamps`` are not supported (an LLM decoder has no frame alignment). A manifest
        line that is not a JSON object with a string ``audio_filepath`` is an error naming the line; an empty
        manifest gives ``[]``."""
        if timestamps:
            raise ValueError("AuRA models cannot return timestamps (the LLM decoder has no frame alignment)")
        if override_config is None:
            override_config = AuRATranscribeConfig(
                batch_size=batch_size, return_hypotheses=return_hypotheses, num_workers=num_workers,
                channel_selector=channel_selector, augmentor=augmentor, verbose=verbose, **config_kwargs,
            )
        results = super().transcribe(audio, override_config=override_config)
        return [] if results is None else results  # NeMo's is None when there was nothing to transcribe

    @classmethod
    def get_transcribe_config(cls) -> AuRATranscribeConfig:
        return AuRATranscribeConfig()

    def _transcribe_input_processing(self, audio, trcfg: TranscribeConfig):
        """NeMo's, except that a 2-D array/tensor is a (B, T) batch and a manifest is read by
        ``read_audio_manifest`` (a bad line is an error naming it; relative paths against its folder)."""
        _check_batch_size(get_value_from_transcription_config(trcfg, "batch_size", 4))
        if isinstance(audio, (Tensor, np.ndarray)) and audio.ndim == 2:
            audio = batch_rows(audio)
        manifest = audio[0] if isinstance(audio, (list, tuple)) and len(audio) == 1 else audio
        if isinstance(manifest, (str, Path)) and str(manifest).endswith((".json", ".jsonl")):
            trcfg._internal.manifest_filepath = str(manifest)
            lines = read_audio_manifest(manifest)
            config = self._transcribe_input_manifest_processing([e for _, e in lines], trcfg._internal.temp_dir, trcfg)
            config["names"] = [f"{manifest}:{n}" for n, _ in lines]
            return self._setup_transcribe_dataloader(config)
        return super()._transcribe_input_processing(audio, trcfg)

    def _setup_transcribe_dataloader(self, config: dict) -> DataLoader:
        entries = config.get("paths2audio_files", config.get("audio_tensors"))
        dataset = _AudioItems(list(entries), self.sample_rate, config.get("names"))
        return DataLoader(dataset, batch_size=config["batch_size"], shuffle=False,
                          num_workers=config.get("num_workers") or 0, collate_fn=collate_waveforms)

    def _setup_transcribe_tensor_dataloader(self, config: dict, trcfg: TranscribeConfig) -> DataLoader:
        return self._setup_transcribe_dataloader(config)

    def _transcribe_forward(self, batch, trcfg: TranscribeConfig) -> dict:
        audio, lens = batch[0], batch[1]
        waves = [audio[i, : int(n)].cpu() for i, n in enumerate(lens)]
        prompt = transcribe_prompt(get_value_from_transcription_config(trcfg, "prompt", None))  # NeMo's scripts: turns
        messages = [prompt or self.prompts.user_message("asr")] * len(waves)
        self._check_audio_lengths(waves, "asr")
        max_new = get_value_from_transcription_config(trcfg, "max_new_tokens", None) or plain_dict(
            self.cfg.get("generation")).get("max_new_tokens", DEFAULT_TRANSCRIBE_MAX_NEW_TOKENS)
        options = self._generation_options(max_new, {})
        return {"outputs": self._generate_items(waves, messages, len(waves), options, trcfg.return_hypotheses,
                                                transcripts=prompt is None)}

    def _transcribe_output_processing(self, outputs: dict, trcfg: TranscribeConfig) -> list[Hypothesis]:
        return [
            Hypothesis(score=score or 0.0, y_sequence=torch.tensor(ids, dtype=torch.long), text=self.decode_ids(ids),
                       length=len(ids))
            for ids, score in outputs["outputs"]
        ]

    def _transcribe_on_begin(self, audio, trcfg: TranscribeConfig):
        # ASRTranscriptionMixin's hook freezes `encoder`/`decoder` modules; AuRA has none (its preprocessor
        # lives in the patch embedding): eval mode, dither off, as NeMo's base hook does.
        return TranscriptionMixin._transcribe_on_begin(self, audio, trcfg)

    def _transcribe_on_end(self, trcfg: TranscribeConfig):
        return TranscriptionMixin._transcribe_on_end(self, trcfg)


def _check_batch_size(batch_size) -> None:
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def _per_item(values, n: int, name: str) -> list:
    values = [values] * n if isinstance(values, str) else list(values)
    if len(values) != n:
        raise ValueError(f"got {n} audio items but {len(values)} {name}")
    return values


