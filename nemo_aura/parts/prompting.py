"""Prompts: task templates with one audio placeholder, encoded with NeMo's ``PromptFormatter``."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from nemo.collections.common.prompts import PromptFormatter

DEFAULT_TEMPLATES = {
    "asr": "Repeat exactly what is said in the audio.\n{audio}",
    "qa": "Answer the spoken question in a few words.\n{audio}",
    "qa_context": "Context: {context}\nAnswer the spoken question in a few words, using the context.\n{audio}",
    "question": "{audio}\n{question}",  # a text question about the audio
}
# The text systems' and readers' QA prompts: AuRA's own, with the question's text in the audio's place ({audio}).
TEXT_QA_TEMPLATES = {name: DEFAULT_TEMPLATES[name].replace("spoken question", "question") for name in ("qa", "qa_context")}


@dataclass
class PromptBuilder:
    """Builds token ids for ``[prompt text | audio placeholder | prompt text] -> answer`` dialogs.

    ``templates`` maps a task to a user message holding ``{audio}`` (and optionally ``{context}``).
    A ``qa`` item with a context uses ``qa_context``.
    """

    tokenizer: object
    prompt_format: str
    audio_locator_tag: str
    templates: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TEMPLATES))

    def __post_init__(self):
        self.templates = {**DEFAULT_TEMPLATES, **dict(self.templates or {})}
        for name, text in self.templates.items():
            if "{audio}" not in text:
                raise ValueError(f"prompts.{name} = {text!r} has no {{audio}} placeholder")
        self.formatter = PromptFormatter.resolve(self.prompt_format)(self.tokenizer)

    @property
    def audio_locator_id(self) -> int:
        return self.tokenizer.token_to_id(self.audio_locator_tag)

    def user_message(self, task: str, context: str | None = None, question: str | None = None) -> str:
        name = "qa_context" if task == "qa" and context else task
        if name not in self.templates:
            raise ValueError(f"no prompt template for task {task!r}; known: {sorted(self.templates)}")
        if "{question}" in self.templates[name] and not question:
            raise ValueError(f"prompt template {name!r} needs a text question")
        return self.templates[name].format(audio=self.audio_locator_tag, context=context or "", question=question or "")

    def encode(self, message: str, answer: str | None = None) -> tuple[Tensor, Tensor]:
        """Token ids and loss mask (True on answer tokens). Without ``answer``: a generation prompt."""
        count = message.count(self.audio_locator_tag)
        if count != 1:
            raise ValueError(
                f"a prompt must hold the audio placeholder {self.audio_locator_tag!r} exactly once; "
                f"found {count} in {message!r}"
            )
        turns = [{"role": "user", "slots": {"message": message}}]
        if answer is not None:
            turns.append({"role": self.formatter.OUTPUT_ROLE, "slots": {"message": answer}})
        encoded = self.formatter.encode_dialog(turns)
        ids = encoded["input_ids"]
        if answer is None:
            return ids, torch.zeros_like(ids, dtype=torch.bool)
        return ids, encoded["mask"].bool()


def text_generation_prompt(formatter, message: str) -> Tensor:
    """Token ids of a text-only user turn, opened for the answer (no audio placeholder: a transcript's reader)."""
    return formatter.encode_dialog([{"role": "user", "slots": {"message": message}}])["input_ids"]


def placeholder_position(ids: Tensor, placeholder_id: int, item: int | str = 0) -> int:
    """Where the one audio placeholder of a prompt's ids is; an error naming the batch item otherwise."""
    where = (ids == placeholder_id).nonzero().flatten()
    if len(where) != 1:
        raise ValueError(f"batch item {item}: the prompt must hold the audio placeholder exactly once, found {len(where)}")
    return int(where[0])


def splice(row: Tensor, at: int, insert: Tensor) -> Tensor:
    """``row`` with its element ``at`` (the audio placeholder) replaced by ``insert`` (audio tokens, a transcript's
    ids, ignore labels): the one way audio or its text stand-in enters a prompt."""
    return torch.cat([row[:at], insert.to(row.dtype), row[at + 1 :]])


def stop_token_ids(llm, tokenizer, stop_tokens=()) -> list[int]:
    """Where generation ends: the LLM's own end-of-sequence ids, the tokenizer's, and the chat format's end-of-turn
    tokens (``stop_tokens``, e.g. ChatML's ``<|im_end|>``)."""
    ids = set()
    eos = llm.generation_config.eos_token_id
    ids.update(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
    if tokenizer.eos_id is not None and tokenizer.eos_id >= 0:
        ids.add(int(tokenizer.eos_id))
    ids.update(int(tokenizer.token_to_id(t)) for t in stop_tokens or [])
    return sorted(ids)


def cut_at_stop(tokens, stops) -> list[int]:
    """Generated ids up to (not including) the first stop id."""
    tokens, stops = [int(t) for t in tokens], set(stops)
    return next((tokens[:i] for i, t in enumerate(tokens) if t in stops), tokens)


def right_pad(seqs: list[Tensor], value) -> Tensor:
    """Stack sequences (L_i, ...) into (B, max L, ...), padding at the end."""
    return torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=value)


def left_pad(seqs: list[Tensor], value) -> Tensor:
    """Stack sequences padding at the start, so every prompt ends where generation begins."""
    return torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=value, padding_side="left")
