"""Lhotse dataset: a CutSet of speech (+ transcript or spoken question) -> an AuRA mini-batch."""
from __future__ import annotations

import torch
from lhotse import CutSet
from lhotse.dataset.collation import collate_audio
from torch import Tensor

from nemo_aura.data.teacher_cache import TARGETS_FIELD, collate_teacher_targets
from nemo_aura.parts.prompting import PromptBuilder, right_pad


def cut_task(cut, default_task: str) -> str:
    return (cut.custom or {}).get("task", default_task)


def cut_transcript(cut) -> str:
    return " ".join(s.text for s in cut.supervisions if s.text).strip()


def cut_target(cut, task: str) -> str:
    """The text the model learns to produce: the transcript (asr) or the first gold answer (qa)."""
    if task == "asr":
        text = cut_transcript(cut)
        if not text:
            raise ValueError(f"cut {cut.id}: task 'asr' needs a supervision with non-empty text")
        return text
    answers = (cut.custom or {}).get("answers")
    if not answers:
        raise ValueError(f"cut {cut.id}: task {task!r} needs custom field 'answers' (a non-empty list)")
    return answers[0]


class AuRADataset(torch.utils.data.Dataset):
    """Maps a CutSet to: ``audio``, ``audio_lens``, ``input_ids`` (right-padded, one audio placeholder
    each), ``input_lens``, ``loss_mask`` (answer tokens), ``cut_ids``, ``tasks``, and each cut's transcript as
    text (``transcripts``) and token ids (``transcript_ids``, ``transcript_lens``) for the CTC heads.

    Audio at another sample rate is resampled to the model's; multi-channel audio is an error
    (downmix it in the manifest). Each cut's ``custom`` may set ``task`` (asr | qa), ``context``, ``answers``.
    Cuts carrying cached teacher targets (stage 2, see ``teacher_cache``) add ``teacher_targets``
    (``{layer: (B, N, D)}``) and ``teacher_target_lens`` to the batch, so training needs no teacher pass.
    """

    def __init__(self, prompts: PromptBuilder, sample_rate: int, pad_id: int, default_task: str = "asr"):
        self.prompts = prompts
        self.sample_rate = sample_rate
        self.pad_id = pad_id
        self.default_task = default_task

    def __getitem__(self, cuts: CutSet) -> dict[str, Tensor | list]:
        cuts = cuts.map(self._prepare_cut)
        audio, audio_lens = collate_audio(cuts)
        batch = self._encode_prompts(cuts)
        batch.update(audio=audio, audio_lens=audio_lens)
        if all(c.has_custom(TARGETS_FIELD) for c in cuts):
            batch.update(collate_teacher_targets(cuts))
        return batch

    def _encode_prompts(self, cuts: CutSet) -> dict[str, Tensor | list]:
        ids, masks, tasks = [], [], []
        for cut in cuts:
            task = cut_task(cut, self.default_task)
            message = self.prompts.user_message(task, (cut.custom or {}).get("context"))
            seq, mask = self.prompts.encode(message, cut_target(cut, task))
            ids.append(seq)
            masks.append(mask)
            tasks.append(task)
        words = [torch.as_tensor(self.prompts.tokenizer.text_to_ids(cut_transcript(c) or " "), dtype=torch.long) for c in cuts]
        return {
            "transcript_ids": right_pad(words, self.pad_id),
            "transcript_lens": torch.tensor([len(w) for w in words]),
            "transcripts": [cut_transcript(c) for c in cuts],
            "input_ids": right_pad(ids, self.pad_id),
            "input_lens": torch.tensor([len(s) for s in ids]),
            "loss_mask": right_pad(masks, False),
            "cut_ids": [c.id for c in cuts],
            "tasks": tasks,
        }

    def _prepare_cut(self, cut):
        if cut.duration <= 0:
            raise ValueError(f"cut {cut.id}: empty audio (duration {cut.duration})")
        if cut.num_channels is not None and cut.num_channels != 1:
            raise ValueError(f"cut {cut.id}: {cut.num_channels} channels; AuRA expects mono audio")
        if cut.sampling_rate != self.sample_rate:
            cut = cut.resample(self.sample_rate)
        return cut
