"""How the audio span behaves inside the LLM (config group ``audio_span``), two reading levers:

- ``lora: audio`` — LoRA deltas only at the audio positions. Text tokens (the prompt, the answer, a text-only
  chat) go through the base LLM exactly, so the text ability is kept by construction; the audio tokens are
  still rewritten by the first K layers and the text reads them through attention.
- ``attention: bidirectional`` — audio tokens attend to each other in both directions, causal elsewhere
  (VoRA does this for image patches): an audio token may look ahead, like the teacher encoder does.

Both need the positions of the audio tokens at every LLM call: ``AudioSpan`` holds them while the
caller's forward runs (``with span.positions(audio_mask): ...``) and builds the 4D attention mask.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from nemo_aura.parts.reader import READER_ADAPTER

LORA_SCOPES = ("all", "audio")
ATTENTION_KINDS = ("causal", "bidirectional")


class AudioSpan:
    """Settings of ``cfg.audio_span`` plus the LoRA gate hooks (installed only for ``lora: audio``)."""

    def __init__(self, cfg: DictConfig | dict | None, llm: nn.Module):
        cfg = dict(cfg or {})
        unknown = set(cfg) - {"lora", "attention"}
        if unknown:
            raise ValueError(f"audio_span: unknown keys {sorted(unknown)} (expected 'lora', 'attention')")
        self.lora_scope = cfg.get("lora") or "all"
        self.attention = cfg.get("attention") or "causal"
        if self.lora_scope not in LORA_SCOPES:
            raise ValueError(f"audio_span.lora must be one of {LORA_SCOPES}, got {self.lora_scope!r}")
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"audio_span.attention must be one of {ATTENTION_KINDS}, got {self.attention!r}")
        self._mask: Tensor | None = None
        self._handles = []
        self._has_audio = False
        self._switched_off: set[nn.Module] = set()  # layers this object turned off for the current call
        if self.lora_scope == "audio":
            if _uses_checkpointing(llm):
                raise ValueError("audio_span.lora: audio does not support gradient checkpointing yet (recomputed "
                                 "layers would not see the audio positions); turn one of them off")
            # the audio adapter only: a text reader (``parts.reader``) on the same layers is not gated
            layers = [m for m in llm.modules() if hasattr(m, "lora_B") and any(k != READER_ADAPTER for k in m.lora_B)]
            gates = [lin for m in layers for k, lin in m.lora_B.items() if k != READER_ADAPTER]
            if not gates:
                raise ValueError("audio_span.lora: audio needs LoRA adapters on the LLM (cfg.lora is empty)")
            self._handles = [lin.register_forward_hook(self._gate) for lin in gates]
            self._handles += [m.register_forward_pre_hook(self._skip_lora_without_audio) for m in layers]
            self._handles += [m.register_forward_hook(self._restore_lora) for m in layers]

    @property
    def needs_positions(self) -> bool:
        """True when LLM calls must know where the audio is (else the plain causal LLM call is exact)."""
        return self.lora_scope == "audio" or self.attention == "bidirectional"

    @contextmanager
    def positions(self, audio_mask: Tensor | None):
        """Within the block, LLM calls cover exactly the positions of ``audio_mask`` (B, T); None = text only."""
        saved = self._mask, self._has_audio
        self._mask, self._has_audio = audio_mask, audio_mask is not None and bool(audio_mask.any())
        try:
            yield
        finally:
            self._mask, self._has_audio = saved

    def _skip_lora_without_audio(self, layer: nn.Module, args) -> None:
        """A call with no audio position gets no LoRA delta anyway: turn the layer's adapter off for this call
        instead of computing and zeroing it (every decode step is such a call). Only peft's switch is set;
        ``enable_adapters()`` would also flip ``requires_grad``. An adapter the caller disabled stays disabled."""
        ours = layer in self._switched_off  # still there if the last call raised before its post-hook
        if layer._disable_adapters and not ours:
            return
        if not any(a != READER_ADAPTER for a in layer.active_adapters):
            return  # the text reader answers (``parts.reader.reader_active``): not the audio adapter's call
        layer._disable_adapters = not self._has_audio
        if self._has_audio:
            self._switched_off.discard(layer)
        else:
            self._switched_off.add(layer)

    def _restore_lora(self, layer: nn.Module, args, output) -> None:
        if layer in self._switched_off:
            layer._disable_adapters = False
            self._switched_off.discard(layer)

    def _gate(self, module: nn.Module, inputs, output: Tensor) -> Tensor:
        # Runs only with audio in the call: without, ``_skip_lora_without_audio`` has turned the adapter off.
        if self._mask.shape != output.shape[:2]:
            raise RuntimeError(
                f"audio_span: the LLM call covers {tuple(output.shape[:2])} positions but the audio mask is "
                f"{tuple(self._mask.shape)}; wrap each LLM call in AudioSpan.positions(...)"
            )
        return output * self._mask.unsqueeze(-1).to(output.dtype)

    def attention_mask(self, attention_mask: Tensor, audio_mask: Tensor, llm_config) -> Tensor:
        """The LLM's attention mask: the 2D padding mask as is when causal, else a 4D (B, 1, T, T) mask where
        audio tokens of the same sequence see each other. Padded query rows see themselves (no empty rows)."""
        if self.attention == "causal":
            return attention_mask
        length = attention_mask.shape[1]
        allowed = torch.ones(length, length, dtype=torch.bool, device=audio_mask.device).tril()
        allowed = allowed.unsqueeze(0) | (audio_mask.unsqueeze(2) & audio_mask.unsqueeze(1))
        allowed = allowed & attention_mask.bool().unsqueeze(1)
        allowed = allowed | torch.eye(length, dtype=torch.bool, device=audio_mask.device)
        allowed = allowed.unsqueeze(1)
        if getattr(llm_config, "_attn_implementation", "sdpa") == "eager":  # eager attention adds the mask
            dtype = llm_config.get_text_config().dtype if hasattr(llm_config, "get_text_config") else torch.float32
            dtype = dtype if isinstance(dtype, torch.dtype) else torch.float32
            return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)
        return allowed

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def _uses_checkpointing(llm: nn.Module) -> bool:
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    flag = "is_activation_checkpointing" if hasattr(type(base), "is_activation_checkpointing") else "is_gradient_checkpointing"
    return bool(getattr(base, flag, False))
