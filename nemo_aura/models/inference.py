"""Inference API of AuRA models: ``generate`` (answers, transcripts, text questions about audio) and
NeMo's ``transcribe`` (through NeMo's own ``ASRTranscriptionMixin``, so ASR workflows call it unchanged).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from nemo.collections.asr.parts.mixins.transcription import ASRTranscriptionMixin, TranscribeConfig
from nemo.collections.asr.parts.utils.rnnt_utils import Hypothesis

from nemo_aura.parts.audio import collate_waveforms, load_audio_item, resample_waveform
from nemo_aura.parts.prompting import right_pad

DEFAULT_MAX_AUDIO_SECONDS = 30.0


class _AudioFiles(Dataset):
    """Audio files (or NeMo manifest entries) -> mono waveforms at the model's rate, for ``transcribe``."""

    def __init__(self, entries: list, sample_rate: int):
        self.entries, self.sample_rate = entries, sample_rate

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> Tensor:
        entry = self.entries[i]
        path = entry["audio_filepath"] if isinstance(entry, dict) else entry
        return load_audio_item(path, self.sample_rate, f"audio[{i}]")


def _collate(waves: list[Tensor]) -> tuple[Tensor, Tensor]:
    return collate_waveforms(waves)


class AuRAInferenceMixin(ASRTranscriptionMixin):
    """Mixed into ``AuRAModel``: everything a user of a trained model calls."""

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
        max_new_tokens: int = 64,
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
        return [self.tokenizer.tokenizer.decode(r, skip_special_tokens=True).strip() for r in rows]

    @torch.no_grad()
    def generate_ids(
        self, audio, audio_lens=None, prompts=None, task="qa", contexts=None, max_new_tokens=64, questions=None,
        batch_size=None, sample_rate=None, **generation_kwargs,
    ) -> list[list[int]]:
        """Like ``generate`` but returns the new token ids of each item, cut at the first stop token."""
        waves = self._waveforms(audio, audio_lens, sample_rate)
        messages = self._messages(len(waves), prompts, task, contexts, questions)
        chunked = self._long_audio_policy(waves, messages, task)
        if chunked is not None:
            return chunked
        seed = generation_kwargs.pop("seed", None)
        if seed is not None:
            torch.manual_seed(seed)
        step = batch_size or len(waves)
        out = []
        for i in range(0, len(waves), step):
            out += self._generate_batch(waves[i : i + step], messages[i : i + step], max_new_tokens, generation_kwargs)
        return out

    def _generate_batch(self, waves: list[Tensor], messages: list[str], max_new_tokens: int, kwargs: dict):
        audio, audio_lens = collate_waveforms(waves)
        ids = [self.prompts.encode(m)[0] for m in messages]
        inputs = self.embed_audio_and_text(
            audio.to(self.device), audio_lens.to(self.device), right_pad(ids, self.pad_id).to(self.device),
            torch.tensor([len(i) for i in ids], device=self.device), left_pad=True,
        )
        kwargs = {"do_sample": False, **kwargs}
        out = self.llm.generate(
            inputs_embeds=inputs["inputs_embeds"], attention_mask=inputs["attention_mask"],
            max_new_tokens=max_new_tokens, eos_token_id=self.stop_token_ids, pad_token_id=self.pad_id, **kwargs,
        )
        return [self._cut_at_stop(row) for row in out]

    def _messages(self, n: int, prompts, task: str, contexts, questions) -> list[str]:
        if prompts is not None:
            prompts = [prompts] * n if isinstance(prompts, str) else list(prompts)
            if len(prompts) != n:
                raise ValueError(f"got {n} audio items but {len(prompts)} prompts")
            return prompts
        if questions is not None:
            questions = [questions] * n if isinstance(questions, str) else list(questions)
            if len(questions) != n:
                raise ValueError(f"got {n} audio items but {len(questions)} questions")
            return [self.prompts.user_message("question", question=q) for q in questions]
        contexts = list(contexts) if contexts is not None else [None] * n
        if len(contexts) != n:
            raise ValueError(f"got {n} audio items but {len(contexts)} contexts")
        return [self.prompts.user_message(task, c) for c in contexts]

    def _waveforms(self, audio, audio_lens, sample_rate: int | None) -> list[Tensor]:
        """A list of 1-D float waveforms at the model's rate (files resampled; arrays if ``sample_rate`` is given)."""
        if isinstance(audio, Tensor) and audio.dim() == 2:
            lens = audio_lens if audio_lens is not None else torch.full((audio.shape[0],), audio.shape[1])
            if (lens <= 0).any():
                raise ValueError(f"empty audio in items {(lens <= 0).nonzero().flatten().tolist()}")
            waves = [audio[i, : int(n)].float().cpu() for i, n in enumerate(lens)]
        else:
            if isinstance(audio, (str, Path, Tensor)) or hasattr(audio, "shape"):
                audio = [audio]
            waves = [load_audio_item(a, self.sample_rate, f"audio[{i}]") for i, a in enumerate(audio)]
        if sample_rate and sample_rate != self.sample_rate:
            is_file = [isinstance(a, (str, Path)) for a in (audio if isinstance(audio, list) else [])]
            waves = [w if (is_file and is_file[i]) else resample_waveform(w, sample_rate, self.sample_rate)
                     for i, w in enumerate(waves)]
        if not waves:
            raise ValueError("no audio given")
        return waves

    @property
    def max_audio_samples(self) -> int:
        return int(float(self.cfg.get("max_audio_seconds", DEFAULT_MAX_AUDIO_SECONDS)) * self.sample_rate)

    def _long_audio_policy(self, waves: list[Tensor], messages: list[str], task: str) -> list[list[int]] | None:
        """Audio over ``cfg.max_audio_seconds``: a clear error, or (``long_audio: chunk``, task asr) chunked
        transcription whose pieces are joined. Returns None when every item fits."""
        limit = self.max_audio_samples
        long_items = [i for i, w in enumerate(waves) if w.numel() > limit]
        if not long_items:
            return None
        if self.cfg.get("long_audio", "error") != "chunk" or task != "asr":
            secs = {i: round(waves[i].numel() / self.sample_rate, 1) for i in long_items}
            raise ValueError(
                f"audio items {secs} (seconds) are longer than max_audio_seconds={limit / self.sample_rate:g}; "
                "shorten them, raise max_audio_seconds, or set long_audio: chunk (transcription only)"
            )
        out = []
        for wave, message in zip(waves, messages):
            pieces = [wave[s : s + limit] for s in range(0, wave.numel(), limit)]
            ids = []
            for piece in pieces:
                ids += self._generate_batch([piece], [message], max_new_tokens=128, kwargs={})
            out.append([t for row in ids for t in row])
        return out

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
    # ``transcribe(audio=[paths] | manifest.json | [arrays], batch_size=4, return_hypotheses=False, ...)`` is
    # NeMo's own (TranscriptionMixin); these hooks plug AuRA's generation into it. Like NeMo ASR models it
    # returns a list of ``Hypothesis`` (``.text``; ``.y_sequence`` holds the token ids).
    def _setup_transcribe_dataloader(self, config: dict) -> DataLoader:
        if "manifest_filepath" in config:
            entries = [json.loads(x) for x in Path(config["manifest_filepath"]).read_text().splitlines() if x.strip()]
        else:
            entries = list(config["paths2audio_files"])
        return DataLoader(_AudioFiles(entries, self.sample_rate), batch_size=config["batch_size"], shuffle=False,
                          num_workers=config.get("num_workers") or 0, collate_fn=_collate)

    def _transcribe_forward(self, batch, trcfg: TranscribeConfig) -> dict:
        audio, lens = batch[0], batch[1]
        waves = [audio[i, : int(n)] for i, n in enumerate(lens)]
        messages = [self.prompts.user_message("asr")] * len(waves)
        ids = self._long_audio_policy(waves, messages, "asr")
        if ids is None:
            ids = self._generate_batch(waves, messages, int(getattr(trcfg, "max_new_tokens", 128) or 128), {})
        return {"ids": ids}

    def _transcribe_output_processing(self, outputs: dict, trcfg: TranscribeConfig) -> list[Hypothesis]:
        decode = self.tokenizer.tokenizer.decode
        return [Hypothesis(score=0.0, y_sequence=torch.tensor(ids, dtype=torch.long),
                           text=decode(ids, skip_special_tokens=True).strip()) for ids in outputs["ids"]]

    def _transcribe_on_begin(self, audio, trcfg: TranscribeConfig):
        # NeMo's ASR begin hook freezes `encoder`/`decoder` modules; AuRA has none of those, and its
        # preprocessor lives in the patch embedding: just switch to eval mode like NeMo does.
        from nemo.collections.asr.parts.mixins.transcription import TranscriptionMixin

        return TranscriptionMixin._transcribe_on_begin(self, audio, trcfg)

    def _transcribe_on_end(self, trcfg: TranscribeConfig):
        from nemo.collections.asr.parts.mixins.transcription import TranscriptionMixin

        return TranscriptionMixin._transcribe_on_end(self, trcfg)

