"""AuRAModel: a NeMo ModelPT that distils a frozen ASR encoder into an LLM's first K layers (LoRA).

Training: audio -> student patch embedding -> tokens spliced into the prompt -> LLM (LoRA on layers
1..K); the hidden states at the audio positions are pulled towards the teacher encoder's layers.
Inference: the same path without the teacher (``export_encoder_free``).
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from lhotse import CutSet
from lightning.pytorch import Trainer
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from torch import Tensor, nn

from nemo.collections.common.data.lhotse import get_lhotse_dataloader_from_config
from nemo.collections.speechlm2.parts.optim_setup import freeze_and_subset
from nemo.core.classes import ModelPT
from nemo.utils import logging

from nemo_aura.data.dataset import AuRADataset, cut_transcript
from nemo_aura.models.inference import AuRAInferenceMixin
from nemo_aura.modules.distill import LayerwiseDistillation, lengths_to_mask, pool_to_length, resolve_layer_map
from nemo_aura.modules.patch_embedding import AudioPatchEmbedding
from nemo_aura.modules.teachers import build_teacher
from nemo_aura.modules.text_align import (
    BoundaryHead, TokenCharLengths, frames_target, pool_segments, segment_starts, text_aligned_loss,
    uniform_char_alignment,
)
from nemo_aura.modules.vocab_ctc import CharacterCTCHead, VocabCTCHead
from nemo_aura.parts.audio_span import AudioSpan
from nemo_aura.parts.config import plain_dict
from nemo_aura.parts.layers import capture_layer_outputs, truncated_layers
from nemo_aura.parts.nemo_tools import NeMoToolsMixin
from nemo_aura.parts.prompting import PromptBuilder, left_pad as _left_pad, placeholder_position, right_pad, splice
from nemo_aura.parts import lifecycle
from nemo_aura.parts import student as student_parts
from nemo_aura.parts.lifecycle import FROZEN_OMITTED
from nemo_aura.parts import pretrained as pretrained_models
from nemo_aura.parts import reader as reader_parts
from nemo_aura.parts.registration import register_plugin_namespace
from nemo_aura.parts.restore import MmapSaveRestoreConnector, check_aura_target, nemo_model_target
from nemo_aura.scoring.metrics import normalize_transcript, wer

register_plugin_namespace()
IGNORE_INDEX = -100


class AuRAModel(ModelPT, AuRAInferenceMixin, NeMoToolsMixin):
    """See the module docstring. Built entirely from ``cfg`` (see ``conf/*.yaml``)."""

    def __init__(self, cfg: DictConfig, trainer: Trainer | None = None):
        self._work_dir = student_parts.new_work_dir(owner=self)  # removed with the model
        super().__init__(cfg=cfg, trainer=trainer)
        self._setup_student()
        self.patch_embedding = self._build_audio_front_end()
        self.teacher = build_teacher(self.cfg.teacher) if self.cfg.get("teacher") else None
        if self.teacher is not None and self.cfg.patch_embedding.get("init_from_teacher", False):
            if not self._is_model_being_restored():  # lever 5: the stem starts as the teacher's conv stem
                self.patch_embedding.init_from_teacher(self.teacher)
        self.distillation = self._build_distillation()
        self.setup_reading_levers()
        if self.cfg.get("ctc_decoding"):
            self.set_ctc_decoding(self.cfg.ctc_decoding)
        self._check_losses()
        freeze = list(self.cfg.get("freeze_params", [r"^llm\..+$"]))  # teachers freeze themselves
        keep = list(self.cfg.get("prevent_freeze_params", [r"^llm\..+\.lora_.+$"]))
        for _ in freeze_and_subset(self.named_parameters(), exclude_patterns=freeze, keep_patterns=keep):
            pass
        self._log_parameter_counts()
        if not self._is_model_being_restored():
            # ModelPT tried this before the tokenizer existed; do it now that it does.
            for key, setup in (("train_ds", self.setup_training_data), ("validation_ds", self.setup_validation_data)):
                if self.cfg.get(key) is not None:
                    setup(self.cfg[key])

    # ------------------------------------------------------------------ construction
    def _setup_student(self) -> None:
        scfg = self.cfg.student
        skeleton = scfg.get("skeleton")
        if skeleton and (str(skeleton).startswith("nemo:") or Path(skeleton).is_file()):
            # Restoring our own artefact: architecture + tokenizer from the skeleton, weights from the state dict.
            tar = self.register_artifact("student.skeleton", skeleton)
            llm_dir = student_parts.unpack_llm_skeleton(tar, self._work_dir / "llm")
            pretrained = False
        else:
            llm_dir = student_parts.check_llm_dir(scfg.pretrained_path)
            pretrained = bool(scfg.get("pretrained_weights", True))
            tar = student_parts.pack_llm_skeleton(llm_dir, self._work_dir)
            self.register_artifact("student.skeleton", str(tar))
        self.tokenizer = student_parts.load_tokenizer(llm_dir, self.cfg.audio_locator_tag)
        # Restoring: the state dict holds every LLM weight, so the skeleton is left uninitialised (parts/restore.py).
        skip_init = not pretrained and self._is_model_being_restored()
        llm = student_parts.load_llm(llm_dir, pretrained, scfg.get("dtype", "float32"), skip_init=skip_init)
        if scfg.get("gradient_checkpointing", False):  # large LLMs: recompute activations in backward
            llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            llm.config.use_cache = False
        self.llm = student_parts.install_lora(llm, self.cfg.get("lora"))
        # K, the distilled depth: fixed at construction (reading LoRA added later and a merge keep it)
        self.lora_depth = student_parts.lora_depth(self.cfg.get("lora") or self.cfg.get("merged_lora"),
                                                   self.num_llm_layers)
        if self.cfg.get("reader"):  # restoring a model with its reader: the state dict brings the weights
            self._install_reader(plain_dict(self.cfg.reader.lora))
        self.prompts = PromptBuilder(
            tokenizer=self.tokenizer,
            prompt_format=self.cfg.prompt_format,
            audio_locator_tag=self.cfg.audio_locator_tag,
            templates=plain_dict(self.cfg.get("prompts")),
        )

    def _build_audio_front_end(self) -> AudioPatchEmbedding:
        """The audio path into the LLM: AuRA's light patch embedding (the bridge baseline overrides this)."""
        return AudioPatchEmbedding(output_dim=self.llm.config.hidden_size, **plain_dict(self.cfg.patch_embedding))

    def _build_distillation(self) -> LayerwiseDistillation | None:
        dcfg = self.cfg.get("distillation")
        if not dcfg:
            return None
        if self.teacher is None:
            raise ValueError("distillation is configured but there is no teacher (cfg.teacher is empty)")
        if self.teacher.sample_rate != self.patch_embedding.sample_rate:
            raise ValueError(
                f"teacher sample rate {self.teacher.sample_rate} Hz differs from the patch embedding's "
                f"{self.patch_embedding.sample_rate} Hz (patch_embedding.preprocessor.sample_rate)"
            )
        llm_depth = self.num_llm_layers
        layer_map = resolve_layer_map(
            OmegaConf.to_container(dcfg.layer_map) if isinstance(dcfg.layer_map, ListConfig) else dcfg.layer_map,
            student_depth=llm_depth,
            teacher_depth=self.teacher.num_layers,
            num_student_layers=dcfg.get("num_student_layers") or self.lora_depth,
        )
        k = self.lora_depth
        beyond = [s for s, _ in layer_map if s > k]
        if beyond:
            logging.warning(f"distillation targets student layers {beyond} above the LoRA depth K={k}")
        return LayerwiseDistillation(
            layer_map,
            student_dim=self.llm.config.hidden_size,
            teacher_dim=self.teacher.hidden_size,
            loss=dcfg.get("loss", "cosine"),
            projection=dcfg.get("projection", "student_to_teacher"),
        )

    def setup_reading_levers(self) -> None:
        """(Re)build what ``cfg.audio_span`` and ``loss.ctc_weight`` ask for; called again when a restored model
        is fine-tuned with other settings (``nemo_aura.train.build_model``)."""
        spec_augment = plain_dict(self.cfg.get("spec_augment"))
        if hasattr(self.patch_embedding, "set_spec_augment"):
            self.patch_embedding.set_spec_augment(spec_augment)
        elif spec_augment:
            raise ValueError(f"spec_augment: {type(self.patch_embedding).__name__} (this model's audio front end) "
                             "does not mask its features; remove model.spec_augment")
        if getattr(self, "audio_span", None) is not None:
            self.audio_span.remove()
        self.audio_span = AudioSpan(plain_dict(self.cfg.get("audio_span")), self.llm)
        span = self.reading_span
        if span not in ("frames", "collapsed", "vocab"):
            raise ValueError(f"reading.span must be 'frames', 'collapsed' or 'vocab', got {span!r}")
        needs_ctc = self.ctc_weight > 0 or span == "vocab"  # the vocab span reads the CTC head's tokens
        head = getattr(self, "ctc_head", None)
        if needs_ctc and (head is None or isinstance(head, CharacterCTCHead) != (self.ctc_vocabulary == "characters")):
            if self.lora_depth < 1:
                raise ValueError("loss.ctc_weight > 0 / reading.span vocab score the last LoRA layer, but the model "
                                 "has no LoRA layers")
            self.ctc_head = self.build_ctc_head()
        elif not needs_ctc:
            self.ctc_head = None
        if self.reading_context == "audio" and span != "vocab":
            raise ValueError(f"reading.context audio reads the audio span alone, which only reading.span vocab does at "
                             f"inference (its upper layers read the CTC tokens); with span {span!r} use context prompt")
        if span == "collapsed" and getattr(self, "boundary_head", None) is None:
            self.boundary_head = BoundaryHead(self.llm.config.hidden_size)
        elif span != "collapsed":
            self.boundary_head = None

    def _check_losses(self) -> None:
        if self.distill_weight > 0 and self.distillation is None:
            raise ValueError("loss.distill_weight > 0 needs a teacher and a distillation config")
        weights = (self.distill_weight, self.lm_weight, self.text_teacher_weight, self.ctc_weight, self.text_align_weight)
        if all(w <= 0 for w in weights):
            raise ValueError("loss.distill_weight, lm_weight, text_teacher_weight, ctc_weight and text_align_weight are "
                             "all 0: nothing to train")
        if self.reading_span == "vocab" and (self.lm_weight > 0 or self.text_teacher_weight > 0):
            raise ValueError("reading.span vocab: the LLM reads the CTC head's tokens as text, so no next-token "
                             "loss (lm_weight, text_teacher_weight) reaches the audio; train it with loss.ctc_weight")
        if self.text_align_weight > 0 and self.ctc_layer < 1:
            raise ValueError("loss.text_align_weight > 0 aligns layer K, the last LoRA layer, but the model has no LoRA")
        layers = self.distill_layers
        if layers is not None and self.distillation is not None:
            unknown = sorted(set(layers) - set(self.distillation.student_layers))
            if unknown:
                raise ValueError(f"loss.distill_layers {unknown} are not distilled layers "
                                 f"(distillation.layer_map has {self.distillation.student_layers})")

    def _log_parameter_counts(self) -> None:
        counts = self.parameter_counts()
        logging.info(
            "AuRAModel parameters: "
            + ", ".join(f"{k}={v:,}" for k, v in counts.items())
            + f" (trainable {100.0 * counts['trainable'] / max(counts['total'], 1):.2f}%)"
        )

    # ------------------------------------------------------------------ properties
    @property
    def distill_weight(self) -> float:
        return float(self.cfg.get("loss", {}).get("distill_weight", 1.0)) if self.distillation is not None else 0.0

    @property
    def lm_weight(self) -> float:
        """The transcript/answer next-token weight; ``loss.lm_warmup_steps`` ramps it up from step 0 (joint training)."""
        loss_cfg = self.cfg.get("loss", {})
        weight = float(loss_cfg.get("lm_weight", 0.0))
        warmup = int(loss_cfg.get("lm_warmup_steps", 0) or 0)
        if weight > 0 and warmup > 0 and self._trainer is not None and self.training:
            weight *= min(1.0, (self.trainer.global_step + 1) / warmup)
        return weight

    @property
    def text_teacher_weight(self) -> float:
        """Weight of the textual-teacher KL: the same LLM without adapters reading the transcript is the teacher."""
        return float(self.cfg.get("loss", {}).get("text_teacher_weight", 0.0))

    @property
    def reading_span(self) -> str:
        """``reading.span``: ``frames`` (one position per patch), ``collapsed`` (one per spoken token, before layer
        K+1; a boundary head finds the tokens at inference; ``modules.text_align``) or ``vocab`` (the greedy tokens
        of the CTC head over the vocabulary at layer K, read as text; ``modules.vocab_ctc``)."""
        return str((self.cfg.get("reading") or {}).get("span", "frames"))

    @property
    def reading_context(self) -> str:
        """``reading.context``: what layers 1..K see around the audio span that the CTC head reads at layer K.
        ``prompt``: the span inside its prompt (as distillation trained it). ``audio``: the span alone (vocab span
        only): its tokens do not depend on the prompt or task, and training and the transcription pass skip the
        prompt's text (QA contexts are often longer than the question's audio)."""
        value = str((self.cfg.get("reading") or {}).get("context", "prompt"))
        if value not in ("prompt", "audio"):
            raise ValueError(f"reading.context must be 'prompt' or 'audio', got {value!r}")
        return value

    @property
    def train_segments(self) -> str:
        """``reading.train_segments`` (collapsed span, next-token losses): where the training forward splits the span
        into token segments. ``alignment``: the transcript's character alignment (one segment per spoken token);
        ``head``: the boundary head's starts, as generation finds them (trains the upper layers' input as it will be
        at inference, segmentation errors included)."""
        value = str((self.cfg.get("reading") or {}).get("train_segments", "alignment"))
        if value not in ("alignment", "head"):
            raise ValueError(f"reading.train_segments must be 'alignment' or 'head', got {value!r}")
        return value

    @property
    def boundary_weight(self) -> float:
        return float(self.cfg.get("loss", {}).get("boundary_weight", 1.0))

    @property
    def text_align_weight(self) -> float:
        """Weight of the text-aligned target at layer K (``modules.text_align``): the audio span's layer-K states
        pulled to the frozen LLM's layer-K states of the transcript tokens, aligned uniformly by characters."""
        return float(self.cfg.get("loss", {}).get("text_align_weight", 0.0))

    @property
    def distill_layers(self) -> list[int] | None:
        """Student layers the Whisper loss covers (``loss.distill_layers``; None: every mapped layer). With the
        text-aligned target at K, ``below_k`` leaves layer K to the textual teacher alone."""
        layers = self.cfg.get("loss", {}).get("distill_layers")
        if layers is None:
            return None
        if layers == "below_k":  # every mapped layer under K: the text-aligned target alone teaches layer K
            return [s for s in (self.distillation.student_layers if self.distillation else []) if s < self.ctc_layer]
        if isinstance(layers, str):
            raise ValueError(f"loss.distill_layers={layers!r}: expected null, 'below_k' or a list of student layers")
        return [int(x) for x in layers]

    @property
    def ctc_weight(self) -> float:
        """Weight of the CTC loss at the last LoRA layer (``modules.vocab_ctc``; its classes: ``ctc_vocabulary``)."""
        return float(self.cfg.get("loss", {}).get("ctc_weight", 0.0))

    @property
    def ctc_vocabulary(self) -> str:
        """The CTC head's classes: ``full`` (the LLM's vocabulary), ``corpus`` (the training transcripts' tokens) or
        ``characters`` (printable ASCII, ``loss.ctc_upsample`` frames per audio token)."""
        vocabulary = str(self.cfg.get("loss", {}).get("ctc_vocabulary", "full"))
        if vocabulary not in ("full", "corpus", "characters"):
            raise ValueError(f"loss.ctc_vocabulary must be 'full', 'corpus' or 'characters', got {vocabulary!r}")
        return vocabulary

    def build_ctc_head(self) -> nn.Module:
        hidden = self.llm.config.hidden_size
        if self.ctc_vocabulary == "characters":
            return CharacterCTCHead(hidden, upsample=int(self.cfg.get("loss", {}).get("ctc_upsample", 4)))
        return VocabCTCHead(hidden)

    @property
    def ctc_layer(self) -> int:
        """The decoder layer (1-based) whose audio states the CTC head scores: K, the last LoRA layer."""
        return self.lora_depth

    @property
    def num_llm_layers(self) -> int:
        return student_parts.num_decoder_layers(self.llm)

    @property
    def sample_rate(self) -> int:
        return self.patch_embedding.sample_rate

    @property
    def pad_id(self) -> int:
        for candidate in (self.tokenizer.pad_id, self.tokenizer.eos_id, self.tokenizer.unk_id):
            if candidate is not None and candidate >= 0:
                return int(candidate)
        return 0

    @property
    def audio_locator_id(self) -> int:
        return self.prompts.audio_locator_id

    def parameter_counts(self) -> dict[str, int]:
        """Parameter counts per component; ``deployable`` is what the encoder-free model keeps."""

        def count(module, trainable_only=False):
            if module is None:
                return 0
            return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)

        lora = sum(p.numel() for n, p in self.llm.named_parameters() if "lora_" in n)
        counts = {
            "llm_base": count(self.llm) - lora,
            "lora": lora,
            "patch_embedding": count(self.patch_embedding),
            "distillation_heads": count(self.distillation),
            "ctc_head": count(getattr(self, "ctc_head", None)),
            "boundary_head": count(getattr(self, "boundary_head", None)),
            "teacher": count(self.teacher),
            "trainable": sum(p.numel() for p in self.parameters() if p.requires_grad),
            "total": sum(p.numel() for p in self.parameters()),
        }
        counts["deployable"] = counts["llm_base"] + counts["lora"] + counts["patch_embedding"] + counts["boundary_head"] + (
            counts["ctc_head"] if self.reading_span == "vocab" else 0)  # the vocab span reads through its CTC head
        return counts

    # ------------------------------------------------------------------ forward pieces
    def embed_audio_and_text(
        self, audio: Tensor, audio_lens: Tensor, input_ids: Tensor, input_lens: Tensor,
        loss_mask: Tensor | None = None, left_pad: bool = False, audio_tokens: tuple[Tensor, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Patch-embed the audio and splice its tokens in place of each prompt's audio placeholder.

        Returns ``inputs_embeds``, ``attention_mask``, ``audio_mask`` (positions holding audio tokens),
        ``patch_lens``, and ``labels`` (answer tokens, else -100) when ``loss_mask`` is given.
        ``audio_tokens`` (tokens, counts) replaces the front-end pass when the caller already has them.
        """
        if (audio_lens <= 0).any():
            bad = (audio_lens <= 0).nonzero().flatten().tolist()
            raise ValueError(f"empty audio (0 samples) in batch items {bad}")
        patches, patch_lens = audio_tokens if audio_tokens is not None else self.patch_embedding(audio, audio_lens)
        embed = self.llm.get_input_embeddings()
        text = embed(input_ids.masked_fill(input_ids == self.audio_locator_id, 0))
        seqs, audio_masks, labels = [], [], []
        for b in range(input_ids.shape[0]):
            ids = input_ids[b, : input_lens[b]]
            p, n, length = placeholder_position(ids, self.audio_locator_id, b), int(patch_lens[b]), int(input_lens[b])
            seqs.append(splice(text[b, :length], p, patches[b, :n]))
            audio_masks.append(splice(torch.zeros(length, dtype=torch.bool, device=ids.device), p,
                                      torch.ones(n, dtype=torch.bool, device=ids.device)))
            if loss_mask is not None:
                lab = ids.masked_fill(~loss_mask[b, :length], IGNORE_INDEX)
                labels.append(splice(lab, p, lab.new_full((n,), IGNORE_INDEX)))
        pad = _left_pad if left_pad else right_pad
        lengths = torch.tensor([len(s) for s in seqs], device=input_ids.device)
        out = {
            "inputs_embeds": pad(seqs, 0.0),
            "audio_mask": pad(audio_masks, False),
            "patch_lens": patch_lens,
            "attention_mask": pad([torch.ones(n, dtype=torch.long, device=input_ids.device) for n in lengths.tolist()], 0),
        }
        if loss_mask is not None:
            out["labels"] = pad(labels, IGNORE_INDEX)
        return out

    def run_llm(
        self, inputs_embeds: Tensor, attention_mask: Tensor, capture: list[int], need_logits: bool,
        audio_mask: Tensor | None = None,
    ) -> tuple[dict[int, Tensor], Tensor | None]:
        """LLM forward recording decoder layers ``capture`` (1-based).

        Without ``need_logits`` the forward stops after the deepest captured layer (no upper layers,
        no LM head): the distillation-only step. ``audio_mask`` (B, T) marks the audio tokens, for the
        ``audio_span`` settings (LoRA on audio only, bidirectional audio attention).
        """
        decoder = student_parts.decoder_of(self.llm)
        if audio_mask is None and self.audio_span.needs_positions:
            raise ValueError("run_llm: this model's audio_span settings need the audio positions (audio_mask)")
        if audio_mask is not None:
            attention_mask = self.audio_span.attention_mask(attention_mask, audio_mask, self.llm.config)
        with capture_layer_outputs(decoder.layers, capture) as states, self.audio_span.positions(audio_mask):
            if need_logits:
                logits = self.llm(inputs_embeds=inputs_embeds, attention_mask=attention_mask).logits
            else:
                if not capture:
                    raise ValueError("run_llm: nothing to compute (no layers to capture and no logits)")
                with truncated_layers(decoder, max(capture)):
                    decoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask)
                logits = None
        return dict(states), logits

    def teacher_targets(self, batch: dict, patch_lens: Tensor, num_patches: int) -> dict[int, Tensor]:
        """Teacher states of the mapped layers on the student's patch grid (from the batch if cached)."""
        if "teacher_targets" not in batch:
            return self.compute_teacher_targets(batch["audio"], batch["audio_lens"], patch_lens)
        cached = batch["teacher_targets"]
        missing = sorted(set(self.distillation.teacher_layers) - set(cached))
        if missing:
            raise ValueError(f"cached teacher targets lack teacher layers {missing}; rebuild the cache (stage 2)")
        lens = batch["teacher_target_lens"].to(patch_lens.device)
        if not torch.equal(lens, patch_lens):
            raise ValueError(
                f"cached teacher targets have {lens.tolist()} patches but the patch embedding gives "
                f"{patch_lens.tolist()} for items {batch.get('cut_ids')}: the cache was built for another "
                "patch rate or audio; rebuild it (stage 2)"
            )
        return {t: cached[t][:, :num_patches].to(patch_lens.device, torch.float32) for t in self.distillation.teacher_layers}

    @torch.no_grad()
    def compute_teacher_targets(
        self, audio: Tensor, audio_lens: Tensor, patch_lens: Tensor | None = None
    ) -> dict[int, Tensor]:
        """Run the frozen teacher and pool its mapped layers to the patch grid: ``{layer: (B, N, D)}``."""
        if self.teacher is None or self.distillation is None:
            raise ValueError("this model has no teacher/distillation config (is it an encoder-free export?)")
        if patch_lens is None:
            patch_lens = self.patch_lengths(audio_lens)
        out = self.teacher(audio, audio_lens, self.distillation.teacher_layers)
        num_patches = int(patch_lens.max())
        return {t: pool_to_length(h, out.lengths, patch_lens, num_patches) for t, h in out.hidden_states.items()}

    def patch_lengths(self, audio_lens: Tensor) -> Tensor:
        """Number of audio tokens the patch embedding makes for each waveform length."""
        return self.patch_embedding.num_patches(self.patch_embedding.num_frames(audio_lens))

    def audio_tokens(self, batch: dict) -> tuple[Tensor, Tensor] | None:
        """Precomputed audio tokens for ``batch``, if any (AuRA: none; the bridge reads cached encoder states)."""
        return None

    def compute_losses(self, batch: dict) -> dict[str, Tensor]:
        inputs = self.embed_audio_and_text(
            batch["audio"], batch["audio_lens"], batch["input_ids"], batch["input_lens"], batch["loss_mask"],
            audio_tokens=self.audio_tokens(batch),
        )
        use_distill, use_lm, use_kd = self.distill_weight > 0, self.lm_weight > 0, self.text_teacher_weight > 0
        use_ctc, use_align = self.ctc_weight > 0, self.text_align_weight > 0
        capture = sorted(set(self.distillation.student_layers if use_distill else [])
                         | ({self.ctc_layer} if use_ctc or use_align else set()))
        alignment = self.text_teacher_tokens(batch, inputs["patch_lens"]) if use_align or (
            (use_lm or use_kd) and self.reading_span == "collapsed") else None
        if (use_lm or use_kd) and self.reading_span == "collapsed":
            # the upper layers train on the token-rate span they read at inference
            states, logits, labels = self.collapsed_forward(inputs, alignment[1])
        else:
            if self.reading_context == "audio":  # vocab span: no next-token loss, only layers 1..K on the span
                inputs = _audio_span_alone(inputs)
            states, logits = self.run_llm(
                inputs["inputs_embeds"], inputs["attention_mask"], capture, need_logits=use_lm or use_kd,
                audio_mask=inputs["audio_mask"],
            )
            labels = inputs.get("labels")
        out: dict[str, Tensor] = {}
        total = inputs["inputs_embeds"].new_zeros(())
        patch_lens = inputs["patch_lens"]
        num_patches = int(patch_lens.max())
        patch_mask = lengths_to_mask(patch_lens, num_patches)
        if use_distill:
            student = {s: _gather_audio_states(states[s], inputs["audio_mask"], patch_mask) for s in self.distillation.student_layers}
            dist = self.distillation(student, self.teacher_targets(batch, patch_lens, num_patches), patch_mask,
                                     layers=self.distill_layers)
            out.update({f"distill_{k}": v for k, v in dist.items()})
            total = total + self.distill_weight * dist["loss"]
        if use_ctc:
            if "transcript_ids" not in batch:
                raise ValueError("loss.ctc_weight > 0 needs transcripts in the batch (cuts with supervision text)")
            audio_states = _gather_audio_states(states[self.ctc_layer], inputs["audio_mask"], patch_mask)
            ctc = self.ctc_head(audio_states, patch_lens, self.llm.get_input_embeddings().weight, batch)
            out["ctc_loss"] = ctc
            total = total + self.ctc_weight * ctc
            if not self.training:  # judged by what it writes, not by a loss that differs between vocabularies
                hypotheses = [self.ctc_text(audio_states[b, :n]) for b, n in enumerate(patch_lens.tolist())]
                out["ctc_wer"] = torch.tensor(wer(hypotheses, batch["transcripts"]))
                out["ctc_wer_words"] = sum(len(normalize_transcript(t).split()) for t in batch["transcripts"])
        if use_align:
            audio_states = _gather_audio_states(states[self.ctc_layer], inputs["audio_mask"], patch_mask)
            tokens, index = alignment
            if self.reading_span == "collapsed":
                align = self.collapsed_align_loss(audio_states, patch_lens, tokens, index)
            else:
                target = frames_target(tokens, index, num_patches)
                align = text_aligned_loss(audio_states, target, patch_mask, self.text_align_mse_weight,
                                          self.text_align_centered)
            out.update({f"text_align_{k}": v for k, v in align.items()})
            total = total + self.text_align_weight * align["loss"] + self.boundary_weight * align.get("boundary_loss", 0.0)
        if use_lm:
            lm = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX
            )
            out["lm_loss"] = lm
            total = total + self.lm_weight * lm
        if use_kd:
            kd = self.text_teacher_loss(batch, logits, labels)
            out["text_teacher_kl"] = kd
            total = total + self.text_teacher_weight * kd
        out["loss"] = total
        return out

    @property
    def text_align_centered(self) -> bool:
        return bool(self.cfg.get("loss", {}).get("text_align_centered", True))

    @property
    def text_align_mse_weight(self) -> float:
        return float(self.cfg.get("loss", {}).get("text_align_mse_weight", 0.1))

    @torch.no_grad()
    def text_states(self, text_ids: Tensor, text_lens: Tensor, layer: int) -> Tensor:
        """The textual teacher: decoder layer ``layer``'s states of right-padded token ids, adapters off,
        stopping after that layer (B, T, D)."""
        decoder = student_parts.decoder_of(self.llm)
        attention = lengths_to_mask(text_lens.to(text_ids.device), text_ids.shape[1]).long()
        embeds = self.llm.get_input_embeddings()(text_ids)
        with self.llm.disable_adapter(), self.audio_span.positions(None), \
                capture_layer_outputs(decoder.layers, [layer]) as states, truncated_layers(decoder, layer):
            decoder(inputs_embeds=embeds, attention_mask=attention)
        return states[layer]

    def text_teacher_tokens(self, batch: dict, patch_lens: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Per item: the textual teacher's layer-K states at the transcript tokens (n_tokens, D) (the same prompt, the
        transcript in place of the audio), and the token each patch speaks (``uniform_char_alignment``, (n_patches,))."""
        if "transcript_ids" not in batch:
            raise ValueError("loss.text_align_weight > 0 needs transcripts in the batch (cuts with supervision text)")
        text_ids, _ = self._text_version(batch)
        text_lens = batch["input_lens"].cpu() - 1 + batch["transcript_lens"].cpu()
        states = self.text_states(text_ids.to(patch_lens.device), text_lens, self.ctc_layer).float()
        if getattr(self, "_token_chars", None) is None:
            self._token_chars = TokenCharLengths(self.tokenizer)
        tokens, index = [], []
        for b, n_words in enumerate(batch["transcript_lens"].tolist()):
            if n_words < 1:
                raise ValueError(f"batch item {b} ({batch.get('cut_ids', ['?'] * (b + 1))[b]}): empty transcript")
            p = placeholder_position(batch["input_ids"][b], self.audio_locator_id, b)
            ids = batch["transcript_ids"][b, :n_words].tolist()
            tokens.append(states[b, p : p + n_words])
            index.append(uniform_char_alignment(self._token_chars(ids), int(patch_lens[b])).to(states.device))
        return tokens, index

    def text_aligned_targets(self, batch: dict, patch_lens: Tensor, num_patches: int) -> Tensor:
        """The frames target: each patch's token state (``text_teacher_tokens``) on the (B, N, D) patch grid."""
        return frames_target(*self.text_teacher_tokens(batch, patch_lens), num_patches)

    def collapsed_align_loss(self, audio_states: Tensor, patch_lens: Tensor, tokens: list[Tensor],
                             index: list[Tensor]) -> dict[str, Tensor]:
        """The collapsed target: each token's patches pooled (``pool_segments`` over the alignment's segments) against
        that token's state, plus the boundary head's BCE on the segment starts (what splits the span at inference)."""
        pooled, targets, logits, starts = [], [], [], []
        for b, (t, i) in enumerate(zip(tokens, index)):
            n = int(patch_lens[b])
            start = segment_starts(i)
            pooled.append(pool_segments(audio_states[b, :n], start))
            targets.append(t[torch.unique_consecutive(i)])  # tokens with no patch of their own are left out
            logits.append(self.boundary_head(audio_states[b, :n]))
            starts.append(start.float())
        lens = torch.tensor([len(x) for x in pooled], device=audio_states.device)
        out = text_aligned_loss(right_pad(pooled, 0.0), right_pad(targets, 0.0), lengths_to_mask(lens, int(lens.max())),
                                self.text_align_mse_weight, self.text_align_centered)
        out["boundary_loss"] = F.binary_cross_entropy_with_logits(torch.cat(logits), torch.cat(starts))
        out["boundary_accuracy"] = ((torch.cat(logits) > 0).float() == torch.cat(starts)).float().mean().detach()
        return out

    def collapsed_forward(self, inputs: dict, index: list[Tensor]) -> tuple[dict[int, Tensor], Tensor, Tensor]:
        """The training forward of ``reading.span: collapsed``, as generation runs it: layers 1..K over the patch-rate
        span, then the whole LLM over the prompt with one position per token segment of the alignment ``index``
        (the boundary head's job at inference), its layers 1..K given the pooled states (``replaced_span_states``).
        Returns the patch-rate states of layers 1..K (for the layer-K losses), the short run's logits and labels.
        With ``reading.train_segments: head`` the boundary head splits the span instead of ``index``."""
        k = self.ctc_layer
        states, _ = self.run_llm(inputs["inputs_embeds"], inputs["attention_mask"], list(range(1, k + 1)),
                                 need_logits=False, audio_mask=inputs["audio_mask"])
        by_head = self.train_segments == "head"
        seqs, masks, labels, pooled = [], [], [], {layer: [] for layer in range(1, k + 1)}
        for b, token_of_patch in enumerate(index):
            where = inputs["audio_mask"][b].nonzero().flatten()
            first, last = int(where[0]), int(where[-1]) + 1
            length = int(inputs["attention_mask"][b].sum())
            starts = (self.boundary_head.starts(states[k][b, first:last].detach()) if by_head
                      else segment_starts(token_of_patch))
            span = pool_segments(inputs["inputs_embeds"][b, first:last], starts)
            seqs.append(torch.cat([inputs["inputs_embeds"][b, :first], span, inputs["inputs_embeds"][b, last:length]]))
            lab = inputs["labels"][b]
            labels.append(torch.cat([lab[:first], lab.new_full((len(span),), IGNORE_INDEX), lab[last:length]]))
            mask = torch.zeros(len(seqs[-1]), dtype=torch.bool, device=span.device)
            mask[first : first + len(span)] = True
            masks.append(mask)
            for layer in pooled:
                pooled[layer].append(pool_segments(states[layer][b, first:last], starts))
        audio_mask = right_pad(masks, False)
        attention = right_pad([torch.ones(len(x), dtype=torch.long, device=x.device) for x in seqs], 0)
        with self.replaced_span_states(audio_mask, {layer: torch.cat(v) for layer, v in pooled.items()}):
            _, logits = self.run_llm(right_pad(seqs, 0.0), attention, [], need_logits=True, audio_mask=audio_mask)
        return states, logits, right_pad(labels, IGNORE_INDEX)

    def collapse_audio_span(self, inputs: dict) -> tuple[dict, dict[int, Tensor]]:
        """``reading.span: collapsed`` at inference: the span's patches run through layers 1..K, the boundary head
        splits them into token segments, and every layer's states up to K are pooled per segment. Returns the prompt
        with one position per segment (left-padded like ``inputs``) and, per layer 1..K, the pooled states that
        ``replaced_span_states`` puts in place of what those layers compute at the short span."""
        k = self.ctc_layer
        states, _ = self.run_llm(inputs["inputs_embeds"], inputs["attention_mask"], list(range(1, k + 1)),
                                 need_logits=False, audio_mask=inputs["audio_mask"])
        spans, pooled = [], {layer: [] for layer in range(1, k + 1)}
        for b in range(inputs["inputs_embeds"].shape[0]):
            where = inputs["audio_mask"][b].nonzero().flatten()
            first, last = int(where[0]), int(where[-1]) + 1
            starts = self.boundary_head.starts(states[k][b, first:last])
            spans.append(pool_segments(inputs["inputs_embeds"][b, first:last], starts))
            for layer in pooled:
                pooled[layer].append(pool_segments(states[layer][b, first:last].float(), starts))
        return _replace_audio_spans(inputs, spans, audio=True), {layer: torch.cat(v) for layer, v in pooled.items()}

    def vocab_span_tokens(self, inputs: dict) -> list[tuple[Tensor, float]]:
        """``reading.span: vocab``: each item's audio span runs through layers 1..K (in its prompt, as in training)
        and the CTC head over the vocabulary reads off its tokens (greedy, or the character head's beam search):
        (ids, score) per item. ``inputs["contexts"]`` (optional, one per item): the text each utterance is about,
        whose words the beam search boosts where ``ctc_decoding`` biases."""
        k = self.ctc_layer
        if self.reading_context == "audio":
            inputs = _audio_span_alone(inputs)
        states, _ = self.run_llm(inputs["inputs_embeds"], inputs["attention_mask"], [k], need_logits=False,
                                 audio_mask=inputs["audio_mask"])
        table = self.llm.get_input_embeddings().weight
        contexts = inputs.get("contexts") or [None] * inputs["inputs_embeds"].shape[0]
        reads = [self.ctc_head.read(states[k][b][inputs["audio_mask"][b]], table, self.tokenizer, contexts[b],
                                    self.text_log_likelihoods)
                 for b in range(inputs["inputs_embeds"].shape[0])]
        return [(ids, score) for ids, _, score in reads]

    def ctc_text(self, span_states: Tensor) -> str:
        """The greedy CTC transcript of one audio span's layer-K states."""
        return self.ctc_head.read(span_states, self.llm.get_input_embeddings().weight, self.tokenizer)[1]

    def read_span_as_tokens(self, inputs: dict) -> tuple[dict, list[Tensor]]:
        """``reading.span: vocab`` at inference: the audio span replaced by the embeddings of its CTC tokens. The
        prompt is then plain text (``audio_mask`` all false: no adapter acts), left-padded like ``inputs``."""
        tokens = [ids for ids, _ in self.vocab_span_tokens(inputs)]
        embeds = inputs["inputs_embeds"]
        spans = [self.llm.get_input_embeddings()(ids.to(embeds.device)).to(embeds.dtype) for ids in tokens]
        return _replace_audio_spans(inputs, spans, audio=False), tokens

    @contextmanager
    def replaced_span_states(self, audio_mask: Tensor, pooled: dict[int, Tensor]):
        """While the prompt is encoded (any call of more than one position), decoder layer ``l``'s output at the
        positions of ``audio_mask`` (B, T) is ``pooled[l]`` (in mask order); decode steps are left alone."""
        layers = student_parts.decoder_of(self.llm).layers

        def hook(layer, _module, _inputs, output):
            hidden = output[0] if isinstance(output, (tuple, list)) else output
            length = hidden.shape[1]
            if length < 2:
                return output
            mask = audio_mask[:, :length]
            hidden = hidden.clone()
            hidden[mask] = pooled[layer][: int(mask.sum())].to(hidden.dtype)
            return (hidden, *output[1:]) if isinstance(output, (tuple, list)) else hidden

        handles = [layers[layer - 1].register_forward_hook(lambda m, i, o, layer=layer: hook(layer, m, i, o))
                   for layer in pooled]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def text_teacher_loss(self, batch: dict, logits: Tensor, labels: Tensor) -> Tensor:
        """KL(teacher || student) over the answer tokens. Teacher: the frozen LLM, adapters off, reading the
        prompt with the transcript text where the audio was (source-wise distillation, as SALAD)."""
        if "transcript_ids" not in batch:
            raise ValueError("loss.text_teacher_weight > 0 needs transcripts in the batch (cuts with supervision text)")
        text_ids, text_labels = self._text_version(batch)
        with torch.no_grad(), self.llm.disable_adapter():
            t_logits = self.llm(input_ids=text_ids, attention_mask=(text_ids != self.pad_id).long()).logits
        s_sel = logits[:, :-1][labels[:, 1:] != IGNORE_INDEX].float()
        t_sel = t_logits[:, :-1][text_labels[:, 1:] != IGNORE_INDEX].float()
        if s_sel.shape != t_sel.shape:
            raise RuntimeError(f"answer tokens differ between the audio and text runs: {s_sel.shape} vs {t_sel.shape}")
        return F.kl_div(F.log_softmax(s_sel, -1), F.log_softmax(t_sel, -1), log_target=True, reduction="batchmean")

    def _text_version(self, batch: dict) -> tuple[Tensor, Tensor]:
        """Prompt ids with the audio placeholder replaced by the transcript tokens, and matching labels."""
        seqs, labs = [], []
        for b in range(batch["input_ids"].shape[0]):
            ids = batch["input_ids"][b, : batch["input_lens"][b]]
            mask = batch["loss_mask"][b, : batch["input_lens"][b]]
            p = placeholder_position(ids, self.audio_locator_id, b)
            words = batch["transcript_ids"][b, : batch["transcript_lens"][b]].to(ids.device)
            seqs.append(splice(ids, p, words))
            lab = ids.masked_fill(~mask, IGNORE_INDEX)
            labs.append(splice(lab, p, lab.new_full((len(words),), IGNORE_INDEX)))
        return right_pad(seqs, self.pad_id), right_pad(labs, IGNORE_INDEX)

    # ------------------------------------------------------------------ Lightning
    def training_step(self, batch: dict, batch_idx: int):
        out = self.compute_losses(batch)
        bs = batch["audio"].shape[0]
        self.log("loss", out["loss"], prog_bar=True, batch_size=bs, sync_dist=True)  # the global mean under DDP
        self.log_dict({f"train_{k}": v for k, v in out.items() if k != "loss"}, batch_size=bs)
        if self._optimizer is not None:
            self.log("lr", self._optimizer.param_groups[0]["lr"], batch_size=bs)
        return out["loss"]

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0):
        out = self.compute_losses(batch)
        bs = batch["audio"].shape[0]
        self.log("val_loss", out["loss"], prog_bar=True, batch_size=bs, sync_dist=True)
        words = out.pop("ctc_wer_words", None)
        if words is not None:  # weighted by reference words: the epoch's value is the corpus WER
            self.log("val_ctc_wer", out.pop("ctc_wer"), batch_size=max(words, 1), sync_dist=True)
        self.log_dict({f"val_{k}": v for k, v in out.items() if k != "loss"}, batch_size=bs, sync_dist=True)
        return out["loss"]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Training checkpoints hold what trains (+ buffers, optimizer and loop state), not the frozen LLM and teacher
        (~620 MB a save for the default models): at resume those come from the config or the init ``.nemo`` again,
        exactly as at the start of the run. The omitted keys are listed, so a resume can check it got all of them."""
        frozen = {n for n, p in self.named_parameters(remove_duplicate=False) if not p.requires_grad}  # tied: both names
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k not in frozen}
        checkpoint[FROZEN_OMITTED] = sorted(frozen)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Put this model's own frozen weights (built from the same config / init) where the checkpoint omitted them."""
        omitted = checkpoint.get(FROZEN_OMITTED)
        if not omitted:
            return
        own = self.state_dict()
        missing = [k for k in omitted if k not in own]
        if missing:
            raise ValueError(f"checkpoint omits frozen weights this model does not have ({missing[:3]}...): it was "
                             "saved by a model of another configuration")
        checkpoint["state_dict"].update({k: own[k] for k in omitted})

    def setup_optimizer_param_groups(self):
        # The optimizer sees only what trains: patch embedding, LoRA, distillation heads.
        self._optimizer_param_groups = [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def _build_dataloader(self, cfg: DictConfig):
        dataset = AuRADataset(
            prompts=self.prompts, sample_rate=self.sample_rate, pad_id=self.pad_id,
            default_task=cfg.get("default_task", "asr"),
        )
        return get_lhotse_dataloader_from_config(
            cfg, global_rank=self.global_rank, world_size=self.world_size, dataset=dataset
        )

    def setup_training_data(self, train_data_config: DictConfig | dict):
        if "llm" not in self._modules:  # called by ModelPT.__init__ before the student exists
            return
        self._train_dl = self._build_dataloader(OmegaConf.create(train_data_config))
        self.set_ctc_vocabulary(train_data_config)

    def set_ctc_vocabulary(self, train_data_config: DictConfig | dict) -> None:
        """``loss.ctc_vocabulary: corpus``: the CTC head scores only the tokens of the training transcripts
        (``VocabCTCHead.set_vocabulary``), once: a restored head keeps the vocabulary it was trained with."""
        head = getattr(self, "ctc_head", None)
        if head is None or self.ctc_vocabulary != "corpus" or head.has_vocabulary:
            return
        path = (train_data_config or {}).get("cuts_path")
        if not path:
            raise ValueError("loss.ctc_vocabulary corpus reads the training transcripts from train_ds.cuts_path, "
                             "which is not set")
        ids = {t for cut in CutSet.from_file(path) for t in self.tokenizer.text_to_ids(cut_transcript(cut) or " ")}
        head.set_vocabulary(torch.tensor(sorted(ids)), self.llm.get_input_embeddings().weight)
        logging.info(f"CTC head: {len(ids)} tokens of the training transcripts ({path}) as its classes")

    def setup_validation_data(self, val_data_config: DictConfig | dict):
        if "llm" not in self._modules:
            return
        self._validation_dl = self._build_dataloader(OmegaConf.create(val_data_config))

    @classmethod
    def list_available_models(cls):
        """The pretrained models shipped with the package (``parts/pretrained.py``); none comes from a hub."""
        return pretrained_models.available_models(cls) or None

    @classmethod
    def from_pretrained(cls, model_name: str, refresh_cache: bool = False, override_config_path=None,
                        map_location=None, strict: bool = True, return_config: bool = False, trainer=None,
                        save_restore_connector=None, return_model_file: bool = False, models_dir=None,
                        pretrained_dir=None):
        """A shipped pretrained model (``list_available_models``) on the base LLM that stage 0 builds, offline:
        ``models_dir`` (default ``$NEMO_AURA_MODELS_DIR``, else ``exp/models``) holds the base LLM,
        ``pretrained_dir`` (default ``$NEMO_AURA_PRETRAINED_DIR``, else the package's) the shipped weights.
        NGC and the Hugging Face hub are never asked (``refresh_cache``, ``save_restore_connector`` are unused)."""
        return pretrained_models.from_pretrained(
            cls, model_name, override_config_path=override_config_path, map_location=map_location, strict=strict,
            return_config=return_config, trainer=trainer, return_model_file=return_model_file,
            models_dir=models_dir, pretrained_dir=pretrained_dir)

    # ------------------------------------------------------------------ export
    def export_encoder_free(self, path: str) -> str:
        """A ``.nemo`` with patch embedding + LLM + LoRA only (``parts.lifecycle.export_encoder_free``)."""
        return lifecycle.export_encoder_free(self, path)

    def merge_lora(self) -> "AuRAModel":
        """Fold LoRA into the base LLM weights (``parts.lifecycle.merge_lora``): same outputs, no adapter layers."""
        return lifecycle.merge_lora(self)

    def save_hf(self, out_dir: str) -> Path:
        """The (merged) LLM as a plain HF directory + the patch embedding (``parts.lifecycle.save_hf``)."""
        return lifecycle.save_hf(self, out_dir)

    # ------------------------------------------------------------------ decoding the character CTC read (modules/ctc_beam.py)
    def set_ctc_decoding(self, ctc_decoding: DictConfig | dict | None) -> None:
        """How the character CTC read is decoded (``cfg.ctc_decoding``; NeMo's ``change_decoding_strategy`` sets it
        from a CTC decoding config): ``strategy: greedy`` (argmax path) or ``beam_batch`` (NeMo's batched CTC beam
        search; ``beam``: ``beam_size``, ``ngram_lm_model`` (an ARPA file over the head's characters,
        ``parts.char_lm``; kept inside the ``.nemo``), ``ngram_lm_alpha``, ``beam_beta`` (bonus per character),
        ``beam_threshold``, ``blank_collapse``; context biasing: ``boosting_tree_alpha`` > 0 boosts the words of the
        context each spoken question comes with, by NeMo's phrase-boosting tree with ``boosting_tree`` settings,
        ``modules.ctc_beam.CTCBeamDecoder``; ``llm_rescoring_weight`` > 0: the beam's N-best rescored by the base
        LLM, ``text_log_likelihoods``)."""
        from nemo_aura.modules.ctc_beam import CTCBeamDecoder
        from nemo_aura.modules.vocab_ctc import ALPHABET, text_to_labels

        dcfg = OmegaConf.create(plain_dict(ctc_decoding) if ctc_decoding is not None else {})
        strategy = str(dcfg.get("strategy", "greedy"))
        if strategy not in ("greedy", "beam_batch"):
            raise ValueError(f"ctc_decoding.strategy must be 'greedy' or 'beam_batch', got {strategy!r}")
        head = getattr(self, "ctc_head", None)
        if strategy == "beam_batch" and not isinstance(head, CharacterCTCHead):
            raise ValueError("ctc_decoding.strategy beam_batch decodes the character CTC head (loss.ctc_vocabulary: "
                             f"characters); this model's CTC head is {type(head).__name__ if head else 'absent'}")
        # the beam settings and LM stay with a greedy model too, for a later switch back to beam search
        beam = dcfg.get("beam") or {}
        src = beam.get("ngram_lm_model")
        lm_path = self._own_decoding_lm(str(src)) if src else None
        if beam:
            with open_dict(dcfg):
                dcfg.beam = {**plain_dict(beam), "ngram_lm_model": lm_path}
        if lm_path is None:
            (getattr(self, "artifacts", None) or {}).pop("ctc_decoding.beam.ngram_lm_model", None)  # not saved any more
        decoder = None
        if strategy == "beam_batch":
            decoder = CTCBeamDecoder(
                num_labels=len(ALPHABET), beam_size=int(beam.get("beam_size", 8)), lm_path=lm_path,
                lm_alpha=float(beam.get("ngram_lm_alpha", 1.0)), beam_beta=float(beam.get("beam_beta", 0.0)),
                beam_threshold=float(beam.get("beam_threshold", 20.0)),
                blank_collapse=float(beam.get("blank_collapse", 0.99)),
                boosting_tree_alpha=float(beam.get("boosting_tree_alpha") or 0.0),
                boosting_tree=plain_dict(beam.get("boosting_tree")), text_to_labels=text_to_labels,
                llm_rescoring_weight=float(beam.get("llm_rescoring_weight") or 0.0),
            )
        if head is not None and hasattr(head, "beam_decoder"):
            head.beam_decoder = decoder
        with open_dict(self._cfg):
            self._cfg.ctc_decoding = dcfg

    def _own_decoding_lm(self, src: str) -> str:
        """The decoding LM copied into the model's work dir and registered from there: a file restored from a
        ``.nemo`` ("nemo:...") is extracted only while the model is built, and ``save_to`` and the pretrained export
        must still find it later."""
        import shutil

        key = "ctc_decoding.beam.ngram_lm_model"
        found = self.register_artifact(key, src)
        own = self._work_dir / "decoding" / "char_lm.arpa"
        if Path(found).resolve() != own.resolve():
            own.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(found, own)
        self.artifacts.pop(key, None)
        return self.register_artifact(key, str(own))

    # ------------------------------------------------------------------ the reader (parts/reader.py)
    @property
    def has_reader(self) -> bool:
        """True when spoken questions are answered by an attached text reader (``reading.span: vocab`` only)."""
        return bool(self.cfg.get("reader"))

    def attach_reader(self, reader_dir: str) -> "AuRAModel":
        """Answer spoken questions with the text-QA reader in ``reader_dir`` (``finetune_text_qa.py`` output, trained
        on this model's transcripts): added as a second, frozen LoRA adapter on the same LLM, active only while a
        transcript is answered. Replaces a reader attached before. The config records it, so ``save_to`` keeps it."""
        if self.reading_span != "vocab":
            raise ValueError(f"a reader answers the CTC transcript of reading.span vocab; this model reads with "
                             f"span {self.reading_span!r}, whose upper layers read the audio span itself")
        lora, weights, info = reader_parts.load_reader_dir(reader_dir)
        if self.has_reader:
            self.llm.delete_adapter(reader_parts.READER_ADAPTER)
        self._install_reader(lora, weights, where=f"reader '{reader_dir}'")
        trained_on = {k: info[k] for k in ("questions_from", "train", "steps", "batch_size", "dev_after") if k in info}
        # the reader's training is part of what the model cost (stage 6's budget table reads training_history)
        run = {"name": "reader", "steps": info.get("steps"), "batch_items": info.get("batch_size"),
               "train_cuts": ", ".join(Path(t).name for t in info.get("train") or []),
               "init_from": "the base LLM", "fit_seconds": info.get("train_seconds")}
        with open_dict(self._cfg):
            self._cfg.reader = {"lora": lora, "templates": info["templates"], "trained": trained_on}
            self._cfg.training_history = [*(self._cfg.get("training_history") or []),
                                          {k: v for k, v in run.items() if v is not None}]
        return self

    def _install_reader(self, lora: dict, weights: dict | None = None, where: str = "model.reader") -> None:
        from peft import PeftModel

        if not isinstance(self.llm, PeftModel):
            raise ValueError(f"{where}: the reader is a second LoRA adapter beside the reading LoRA, but this model's "
                             "LLM has no adapters (merged, or trained without LoRA)")
        reader_parts.add_reader_adapter(self.llm, lora, weights)

    def reader_message(self, transcript: str, context: str | None) -> str:
        """The reader's user message for a transcript (its own templates: what it was trained to answer)."""
        templates = self.cfg.reader.templates
        template = templates["qa_context"] if context else templates["qa"]
        return template.format(audio=transcript, context=context or "")

    def add_reading_lora(self, reading_layers: str | list[int]) -> list[int]:
        """LoRA on more decoder layers than the distilled K (``lora.reading_layers``), added to a
        trained model before it learns to read; its trained LoRA is kept, the new layers start as identity.
        Returns the layers added (none when they already carry LoRA)."""
        from peft import PeftModel

        if not isinstance(self.llm, PeftModel):
            raise ValueError("lora.reading_layers: this model has no LoRA adapters to extend (merged, or no LoRA)")
        if isinstance(reading_layers, ListConfig):
            reading_layers = OmegaConf.to_container(reading_layers)
        layers = student_parts.resolve_reading_layers(reading_layers, self.num_llm_layers)
        added = student_parts.add_lora_layers(self.llm, layers)
        if added:
            student_parts.update_lora_config(self._cfg, reading_layers=reading_layers)
            logging.info(f"LoRA added on decoder layers {added} for reading (the distilled K stays {self.ctc_layer})")
            if getattr(self, "audio_span", None) is not None:
                self.setup_reading_levers()  # its gate hooks cover the new LoRA layers too
        return added

    @classmethod
    def restore_from(
        cls,
        restore_path: str,
        override_config_path=None,
        map_location=None,
        strict: bool = True,
        return_config: bool = False,
        save_restore_connector=None,
        trainer: Trainer | None = None,
        validate_access_integrity: bool = True,
    ):
        """``ModelPT.restore_from`` with one copy of the weights in memory (``MmapSaveRestoreConnector``); a ``.nemo`` of
        another model class (e.g. a NeMo CTC model) is refused up front, naming the class it holds."""
        target = nemo_model_target(restore_path)
        if not return_config:
            check_aura_target(restore_path, target, cls)
        return super().restore_from(
            restore_path, override_config_path=override_config_path, map_location=map_location, strict=strict,
            return_config=return_config, save_restore_connector=save_restore_connector or MmapSaveRestoreConnector(),
            trainer=trainer, validate_access_integrity=validate_access_integrity,
        )

    @classmethod
    def load_checkpoint(cls, path: str, map_location: str = "cpu") -> "AuRAModel":
        """A model from a Lightning/exp_manager ``.ckpt``, read without unpickling (``parts.lifecycle``)."""
        return lifecycle.load_checkpoint(cls, path, map_location)


def _replace_audio_spans(inputs: dict, spans: list[Tensor], audio: bool) -> dict:
    """The left-padded prompts of ``inputs`` with each item's audio span replaced by ``spans[b]`` (any length):
    ``inputs_embeds``, ``attention_mask``, ``audio_mask`` (the new span's positions if ``audio``, else none: plain
    text) and ``patch_lens`` (the new span lengths)."""
    seqs, masks = [], []
    for b, span in enumerate(spans):
        real, embeds = inputs["attention_mask"][b].bool(), inputs["inputs_embeds"][b]
        where = inputs["audio_mask"][b].nonzero().flatten()
        first, last = int(where[0]), int(where[-1]) + 1
        before = embeds[:first][real[:first]]
        seqs.append(torch.cat([before, span, embeds[last:]]))
        mask = torch.zeros(len(seqs[-1]), dtype=torch.bool, device=embeds.device)
        mask[len(before) : len(before) + len(span)] = audio
        masks.append(mask)
    device = seqs[0].device
    return {
        "inputs_embeds": _left_pad(seqs, 0.0),
        "audio_mask": _left_pad(masks, False),
        "attention_mask": _left_pad([torch.ones(len(x), dtype=torch.long, device=device) for x in seqs], 0),
        "patch_lens": torch.tensor([len(span) for span in spans]),
    }


def _audio_span_alone(inputs: dict) -> dict:
    """The audio tokens of ``embed_audio_and_text``'s prompts, without their prompts: right-padded (B, N, D), every
    valid position an audio position (``reading.context: audio``)."""
    embeds, audio_mask = inputs["inputs_embeds"], inputs["audio_mask"]
    spans = [embeds[b][audio_mask[b]] for b in range(embeds.shape[0])]
    patch_lens = inputs["patch_lens"].to(embeds.device)
    patch_mask = lengths_to_mask(patch_lens, int(patch_lens.max()))
    return {"inputs_embeds": right_pad(spans, 0.0), "attention_mask": patch_mask.long(), "audio_mask": patch_mask,
            "patch_lens": inputs["patch_lens"]}


def _gather_audio_states(states: Tensor, audio_mask: Tensor, patch_mask: Tensor) -> Tensor:
    """Hidden states at the audio positions of each sequence, laid out on the (B, N) patch grid."""
    out = states.new_zeros(patch_mask.shape[0], patch_mask.shape[1], states.shape[-1])
    return out.masked_scatter(patch_mask.unsqueeze(-1), states[audio_mask])


