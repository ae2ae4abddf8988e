"""Inference API of AuRA models: ``generate`` (answers, transcripts, text questions about audio) and
NeMo's ``transcribe`` (through NeMo's own ``ASRTranscriptionMixin``, so ASR workflows call it unchanged).
"""
from __future__ import annotations

from contextlib import nullcontext

from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from nemo.collections.common.parts.preprocessing.manifest import get_full_path

from nemo_aura.parts.audio import collate_waveforms, load_audio_item, resample_waveform
from nemo_aura.parts.prompting import right_pad

DEFAULT_MAX_AUDIO_SECONDS = 30.0
DEFAULT_MAX_NEW_TOKENS = 64
DEFAULT_TRANSCRIBE_MAX_NEW_TOKENS = 128


@dataclass
class AuRATranscribeConfig(TranscribeConfig):
    """NeMo's ``TranscribeConfig`` plus what an LLM decoder needs (``transcribe(..., max_new_tokens=...)``)."""

    max_new_tokens: int | None = None  # default: cfg.generation.max_new_tokens, else 128
    prompt: str | None = None  # a user message with the audio placeholder; default: the `asr` template


class _AudioItems(Dataset):
    """Paths, manifest entries, arrays or tensors -> mono waveforms at the model's rate (``load_audio_item``).

    Used for every ``transcribe`` input so files and in-memory audio get the same handling (NeMo's tensor
    dataset pads short audio to 1 s, which would change an LLM's transcript).
    """

    def __init__(self, entries: list, sample_rate: int, manifest: str | None = None):
        self.entries, self.sample_rate, self.manifest = entries, sample_rate, manifest

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> Tensor:
        entry = self.entries[i]
        if isinstance(entry, dict):
            if "audio_filepath" not in entry:
                raise ValueError(f"audio[{i}]: manifest entry has no 'audio_filepath' field: {entry}")
            entry = get_full_path(entry["audio_filepath"], manifest_file=self.manifest) if self.manifest else entry["audio_filepath"]
        return load_audio_item(entry, self.sample_rate, f"audio[{i}]")


class AuRAInferenceMixin(ASRTranscriptionMixin):
    """Mixed into ``AuRAModel``: everything a user of a trained model calls.

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
        ``questions`` about each audio; one string per item.

        ``audio``: paths / numpy arrays / 1-D tensors (arrays at ``sample_rate`` if given, else at the model's
        rate), or a padded (B, T) tensor with ``audio_lens``. ``prompts``: user messages holding the audio
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
        waves = self._waveforms(audio, audio_lens, sample_rate)
        messages = self._messages(len(waves), prompts, task, contexts, questions)
        self._check_audio_lengths(waves, task)
        options = self._generation_options(max_new_tokens, generation_kwargs)
        seed = options.pop("seed", None)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # a seed makes sampling reproducible, the caller's RNG untouched
            if seed is not None:
                torch.manual_seed(int(seed))
            return [ids for ids, _ in self._generate_items(waves, messages, batch_size or len(waves), options)]

    def _generation_options(self, max_new_tokens: int | None, kwargs: dict) -> dict:
        """cfg.generation defaults < explicit arguments; greedy unless sampling is asked for."""
        options = {"do_sample": False, "max_new_tokens": DEFAULT_MAX_NEW_TOKENS, **_plain(self.cfg.get("generation"))}
        options.update(kwargs)
        if max_new_tokens is not None:
            options["max_new_tokens"] = int(max_new_tokens)
        return options

    def _generate_items(
        self, waves: list[Tensor], messages: list[str], batch_size: int, options: dict, with_scores: bool = False
    ) -> list[tuple[list[int], float | None]]:
        """Batches of ``batch_size`` items; audio over ``max_audio_samples`` (only reached with
        ``long_audio: chunk``) is cut into pieces whose outputs are joined."""
        limit = self.max_audio_samples
        pieces = [(i, w[s : s + limit], m) for i, (w, m) in enumerate(zip(waves, messages)) for s in range(0, w.numel(), limit)]
        outs = []
        for b in range(0, len(pieces), batch_size):
            chunk = pieces[b : b + batch_size]
            outs += self._generate_batch([w for _, w, _ in chunk], [m for _, _, m in chunk], options, with_scores)
        joined: list[tuple[list[int], float | None]] = [([], 0.0 if with_scores else None) for _ in waves]
        for (i, _, _), (ids, score) in zip(pieces, outs):
            joined[i] = (joined[i][0] + ids, None if score is None else joined[i][1] + score)
        return joined

    def _generate_batch(
        self, waves: list[Tensor], messages: list[str], options: dict, with_scores: bool = False
    ) -> list[tuple[list[int], float | None]]:
        """One left-padded batch through ``llm.generate``: (new ids cut at the first stop token, log-prob sum)."""
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
        with replaced:
            if self.audio_span.needs_positions:
                options = {**options, "cache": self._prefill_audio_span(inputs)}
            with self.audio_span.positions(None):  # generated tokens are text
                out = self.llm.generate(
                    inputs_embeds=inputs["inputs_embeds"], attention_mask=inputs["attention_mask"],
                    eos_token_id=self.stop_token_ids, pad_token_id=self.pad_id,
                    return_dict_in_generate=True, output_scores=with_scores, **options,
                )
        rows = [self._cut_at_stop(row) for row in out.sequences]
        if not with_scores:
            return [(r, None) for r in rows]
        logprobs = self.llm.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
        return [(r, float(logprobs[i, : len(r)].sum())) for i, r in enumerate(rows)]

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
        if isinstance(audio, Tensor) and audio.dim() == 2:
            lens = audio_lens if audio_lens is not None else torch.full((audio.shape[0],), audio.shape[1])
            if (lens <= 0).any():
                raise ValueError(f"empty audio in items {(lens <= 0).nonzero().flatten().tolist()}")
            items = [audio[i, : int(n)].float().cpu() for i, n in enumerate(lens)]
        else:
            items = [audio] if isinstance(audio, (str, Path, Tensor)) or hasattr(audio, "shape") else list(audio)
        if not len(items):
            raise ValueError("no audio given")
        waves = [load_audio_item(a, self.sample_rate, f"audio[{i}]") for i, a in enumerate(items)]
        if sample_rate and sample_rate != self.sample_rate:  # files were resampled on reading
            waves = [w if isinstance(a, (str, Path)) else resample_waveform(w, sample_rate, self.sample_rate)
                     for a, w in zip(items, waves)]
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
        ids = set()
        eos = self.llm.generation_config.eos_token_id
        ids.update(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
        if self.tokenizer.eos_id is not None and self.tokenizer.eos_id >= 0:
            ids.add(int(self.tokenizer.eos_id))
        for token in self.cfg.get("stop_tokens", []) or []:
            ids.add(int(self.tokenizer.token_to_id(token)))
        return sorted(ids)

    def _cut_at_stop(self, row: Tensor) -> list[int]:
        tokens = row.tolist()
        stops = set(self.stop_token_ids)
        for i, t in enumerate(tokens):
            if t in stops:
                return tokens[:i]
        return tokens

    # ------------------------------------------------------------------ NeMo transcribe()
    # NeMo's own TranscriptionMixin.transcribe drives these hooks, so paths, a manifest (.json/.jsonl, relative
    # paths resolved against it), arrays/tensors, a DataLoader, `override_config`, `verbose` behave as for
    # NeMo ASR models. Like them (NeMo 3.0) it returns a list of `Hypothesis`: `.text`, `.y_sequence` = the
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
        the ``asr`` template). ``timestamps`` are not supported (an LLM decoder has no frame alignment)."""
        if timestamps:
            raise ValueError("AuRA models cannot return timestamps (the LLM decoder has no frame alignment)")
        if override_config is None:
            override_config = AuRATranscribeConfig(
                batch_size=batch_size, return_hypotheses=return_hypotheses, num_workers=num_workers,
                channel_selector=channel_selector, augmentor=augmentor, verbose=verbose, **config_kwargs,
            )
        return super().transcribe(audio, override_config=override_config)

    @classmethod
    def get_transcribe_config(cls) -> AuRATranscribeConfig:
        return AuRATranscribeConfig()

    def _transcribe_input_manifest_processing(self, audio_files, temp_dir, trcfg) -> dict:
        config = super()._transcribe_input_manifest_processing(audio_files, temp_dir, trcfg)
        config["source_manifest"] = trcfg._internal.manifest_filepath  # to resolve relative audio paths
        return config

    def _setup_transcribe_dataloader(self, config: dict) -> DataLoader:
        entries = config.get("paths2audio_files", config.get("audio_tensors"))
        dataset = _AudioItems(list(entries), self.sample_rate, config.get("source_manifest"))
        return DataLoader(dataset, batch_size=config["batch_size"], shuffle=False,
                          num_workers=config.get("num_workers") or 0, collate_fn=collate_waveforms)

    def _setup_transcribe_tensor_dataloader(self, config: dict, trcfg: TranscribeConfig) -> DataLoader:
        return self._setup_transcribe_dataloader(config)

    def _transcribe_forward(self, batch, trcfg: TranscribeConfig) -> dict:
        audio, lens = batch[0], batch[1]
        waves = [audio[i, : int(n)].cpu() for i, n in enumerate(lens)]
        prompt = get_value_from_transcription_config(trcfg, "prompt", None)
        messages = [prompt or self.prompts.user_message("asr")] * len(waves)
        self._check_audio_lengths(waves, "asr")
        max_new = get_value_from_transcription_config(trcfg, "max_new_tokens", None) or _plain(
            self.cfg.get("generation")).get("max_new_tokens", DEFAULT_TRANSCRIBE_MAX_NEW_TOKENS)
        options = self._generation_options(max_new, {})
        return {"outputs": self._generate_items(waves, messages, len(waves), options, trcfg.return_hypotheses)}

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


def _per_item(values, n: int, name: str) -> list:
    values = [values] * n if isinstance(values, str) else list(values)
    if len(values) != n:
        raise ValueError(f"got {n} audio items but {len(values)} {name}")
    return values


def _plain(node) -> dict:
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})
