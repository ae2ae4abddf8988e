"""What NeMo's ASR tools (``examples/asr/transcribe_speech.py``, ``speech_to_text_eval.py``,
``transcribe_utils.setup_model``) expect of a model, on an LLM decoder.

They restore the model (``ASRModel.restore_from(path, return_config=True).target``, then that class's
``restore_from``), move it with ``set_trainer`` / ``eval`` / ``to(dtype)``, read ``model.decoding`` (an instance
check against ``MultiTaskDecoding``), call ``change_decoding_strategy(cfg.ctc_decoding)`` (the branch a model
that is neither AED nor RNNT takes), then ``transcribe(audio=paths, override_config=get_transcribe_config()
+ their fields, timestamps=...)`` and read ``Hypothesis.text``. Here ``decoding`` describes LLM generation
and ``change_decoding_strategy`` maps NeMo's decoding configs onto it (``cfg.generation``, the defaults of
``generate`` and ``transcribe``); what has no meaning for an LLM decoder is logged as ignored.

Restoring with NeMo's own classes in a fresh interpreter: NeMo 3.0 instantiates a ``.nemo``'s ``target``
only from the module-level allow-list ``nemo.core.classes.common.ALLOWED_TARGET_PREFIXES`` (no entry point,
environment variable or registration API). ``import nemo_aura.models`` adds ``nemo_aura.`` to it
(``parts/registration.py``); ``transcribe_utils.setup_model`` imports the target class itself, so NeMo's
scripts need nothing.
"""
from __future__ import annotations

from dataclasses import is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from nemo_aura.parts.config import plain_dict

GREEDY = ("greedy", "greedy_batch")
BEAM = ("beam", "beam_batch", "tsd", "alsd", "maes", "malsr", "modified_beam_search", "pyctcdecode", "flashlight",
        "wfst")
SAMPLE = ("sample", "sampling")
WITH_EXTERNAL_LM = ("pyctcdecode", "flashlight", "wfst")
SAMPLING_KEYS = ("temperature", "top_p", "top_k")
GENERATION_KEYS = ("max_new_tokens", "repetition_penalty", "seed")
RESTORE_HINT = "import nemo_aura.models"


class AuRADecoding:
    """``model.decoding`` of an AuRA model: autoregressive LLM generation (not CTC, RNNT or AED decoding)."""

    compute_langs = False
    preserve_alignments = False
    compute_timestamps = False

    def __init__(self, options: dict):
        self.options = dict(options)
        self.num_beams = int(self.options.get("num_beams", 1) or 1)
        self.do_sample = bool(self.options.get("do_sample", False))
        self.strategy = "sample" if self.do_sample else "beam" if self.num_beams > 1 else "greedy"
        self.max_new_tokens = self.options.get("max_new_tokens")

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.options.items() if k in ("num_beams", "do_sample", "max_new_tokens",
                                                                 "length_penalty", *SAMPLING_KEYS)}
        return f"AuRADecoding(strategy={self.strategy!r}, LLM generate options {shown})"


class NeMoToolsMixin:
    """``decoding`` and ``change_decoding_strategy`` for NeMo's ASR scripts (mixed into ``AuRAModel``)."""

    @property
    def decoding(self) -> AuRADecoding:
        from nemo_aura.models.inference import DEFAULT_MAX_NEW_TOKENS

        return AuRADecoding({"do_sample": False, "max_new_tokens": DEFAULT_MAX_NEW_TOKENS,
                             **plain_dict(self.cfg.get("generation"))})  # as _generation_options, never raising

    def change_decoding_strategy(self, decoding_cfg=None, verbose: bool = True, decoder_type: str | None = None,
                                 **kwargs) -> None:
        """Map a NeMo decoding config (CTC / RNNT / multitask, a dataclass, DictConfig or dict) onto LLM generation:
        ``greedy``/``greedy_batch`` -> greedy; a beam strategy -> ``num_beams = beam.beam_size`` (AED
        ``beam.len_pen`` -> ``length_penalty``); ``sample`` -> sampling with ``temperature``/``top_p``/``top_k``.
        ``max_new_tokens``, ``repetition_penalty`` and ``seed`` are taken as they are. The rest (alignments,
        timestamps, confidence, external LMs, ...) has no meaning for an LLM decoder and is logged as ignored.
        A model that transcribes with its character CTC read (``reading.span: vocab``, characters) decodes that read
        instead, as a NeMo CTC model would: greedy, or beam search with ``beam.ngram_lm_model`` (else its own LM)."""
        from nemo.utils import logging

        if decoding_cfg is None:
            logging.info(f"change_decoding_strategy(None): decoding stays {self.decoding}")
            return
        updates, ignored = generation_updates(decoding_cfg)
        if reads_characters(self):  # its transcript is the CTC read: the config decodes that, not the LLM
            self.set_ctc_decoding(ctc_read_decoding(decoding_cfg, self.cfg.get("ctc_decoding")))
            updates = {k: v for k, v in updates.items() if k in GENERATION_KEYS}
        check_generation_options(self, {**self.decoding.options, **updates})
        with open_dict(self.cfg):
            self.cfg.generation = {**plain_dict(self.cfg.get("generation")), **updates}
        if decoder_type is not None:
            ignored.append(f"decoder_type={decoder_type}")
        ignored += [f"{k}={v}" for k, v in kwargs.items()]
        if verbose:
            logging.info(f"change_decoding_strategy: {type(decoding_cfg).__name__} -> {self.decoding}"
                         + (f"; not applicable to an LLM decoder, ignored: {', '.join(ignored)}" if ignored else ""))


def generation_updates(decoding_cfg: Any) -> tuple[dict, list[str]]:
    """(``generate`` options, ignored keys) for a NeMo decoding config."""
    cfg = plain_dict(decoding_cfg)
    strategy = str(cfg.get("strategy") or "greedy")
    beam, used = plain_dict(cfg.get("beam")), {"strategy"}
    if strategy in GREEDY:
        updates = {"num_beams": 1, "do_sample": False}
    elif strategy in BEAM:
        size = int(beam.get("beam_size") or cfg.get("beam_size") or 1)
        updates = {"num_beams": size, "do_sample": False}
        used |= {"beam", "beam_size"}
        if size > 1 and beam.get("len_pen") is not None:
            updates["length_penalty"] = float(beam["len_pen"])
    elif strategy in SAMPLE:
        updates = {"num_beams": 1, "do_sample": True}
        updates.update({k: cfg[k] for k in SAMPLING_KEYS if cfg.get(k) is not None})
        used |= set(SAMPLING_KEYS)
    else:
        raise ValueError(f"decoding strategy {strategy!r}: an AuRA model decodes with its LLM; use one of "
                         f"{GREEDY + BEAM + SAMPLE} (beam strategies use beam.beam_size beams)")
    updates.update({k: cfg[k] for k in GENERATION_KEYS if cfg.get(k) is not None})
    used |= set(GENERATION_KEYS)
    defaults = _defaults(decoding_cfg)
    ignored = [k if isinstance(v, (dict, list)) else f"{k}={v}" for k, v in cfg.items()
               if k not in used and (v != defaults[k] if k in defaults else _is_set(v))]
    if strategy in WITH_EXTERNAL_LM:
        ignored.append(f"strategy={strategy} (its external LM; plain beam search instead)")
    if beam.get("return_best_hypothesis") is False:
        ignored.append("beam.return_best_hypothesis=false (one hypothesis per item)")
    return updates, ignored


def reads_characters(model) -> bool:
    """True for a model whose transcript is its character CTC read (``reading.span: vocab`` with characters)."""
    return getattr(model, "reading_span", None) == "vocab" and hasattr(getattr(model, "ctc_head", None), "beam_decoder")


def ctc_read_decoding(decoding_cfg: Any, current: Any = None) -> dict:
    """A NeMo CTC decoding config as ``AuRAModel.set_ctc_decoding``'s: greedy strategies -> greedy; beam strategies
    -> ``beam_batch`` with ``beam.beam_size`` and NeMo's ``beam_batch`` fields (``ngram_lm_model``,
    ``ngram_lm_alpha``, ``beam_beta``, ``beam_threshold``, ``boosting_tree_alpha``, ``boosting_tree``); a field
    left unset keeps ``current``'s (the model's own LM, tuning and context biasing)."""
    cfg = plain_dict(decoding_cfg)
    strategy = str(cfg.get("strategy") or "greedy")
    own = plain_dict(plain_dict(current).get("beam"))
    if strategy in GREEDY:
        return {"strategy": "greedy", **({"beam": own} if own else {})}  # its beam settings kept for later
    if strategy not in BEAM:
        raise ValueError(f"decoding strategy {strategy!r}: this model transcribes with its character CTC read, "
                         f"decoded greedy ({GREEDY}) or by beam search ({BEAM})")
    beam = plain_dict(cfg.get("beam"))
    out = {}
    for key in ("beam_size", "ngram_lm_model", "ngram_lm_alpha", "beam_beta", "beam_threshold", "blank_collapse",
                "boosting_tree_alpha", "llm_rescoring_weight"):
        value = beam.get(key) if beam.get(key) is not None else own.get(key)
        if value is not None:
            out[key] = value
    tree = boosting_tree_settings(beam.get("boosting_tree"))
    if tree or own.get("boosting_tree"):
        out["boosting_tree"] = {**plain_dict(own.get("boosting_tree")), **tree}
    return {"strategy": "beam_batch", "beam": out}


def boosting_tree_settings(cfg: Any) -> dict:
    """NeMo's ``beam.boosting_tree`` (``BoostingTreeModelConfig``) as the character read's: the phrase list
    (``key_phrases_list``, ``key_phrases_file`` one per line, ``key_phrase_items_list``) and the tree's scores;
    fields left at None are dropped, with them NeMo's defaults that only concern sub-word tokenizers and GPUs."""
    from nemo_aura.modules.ctc_beam import BOOSTING_TREE_KEYS

    given = {k: v for k, v in plain_dict(cfg).items() if v is not None}
    if given.get("model_path"):
        raise ValueError(f"beam.boosting_tree.model_path '{given['model_path']}': a prebuilt boosting tree spells its "
                         "phrases in another model's tokens; give the phrases (key_phrases_list or key_phrases_file)")
    phrases = list(given.get("key_phrases_list") or [])
    if given.get("key_phrases_file"):
        path = Path(given["key_phrases_file"])
        if not path.is_file():
            raise FileNotFoundError(f"beam.boosting_tree.key_phrases_file: '{path}' does not exist")
        phrases += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    phrases += [plain_dict(item).get("phrase") for item in given.get("key_phrase_items_list") or []]
    out = {k: v for k, v in given.items() if k in BOOSTING_TREE_KEYS and k != "key_phrases_list"}
    if phrases:
        out["key_phrases_list"] = [str(p) for p in phrases if p]
    return out


def check_generation_options(model, options: dict) -> None:
    """Beam search runs only where the prompt needs no per-item hooks (a clear error instead of a shape error)."""
    beams = int(options.get("num_beams", 1) or 1)
    if beams > 1 and (model.reading_span == "collapsed" or model.audio_span.needs_positions):
        raise ValueError(f"num_beams={beams}: beam search is not supported for a model with reading.span="
                         f"{model.reading_span!r} and audio_span {model.cfg.get('audio_span')} (the prompt is encoded "
                         "with per-item hooks); use greedy decoding or sampling")


def transcribe_prompt(prompt: Any) -> str | None:
    """``trcfg.prompt`` as a user message: NeMo's scripts set it to ``parse_multitask_prompt(...)`` (a list of
    turns, empty by default); a turn may carry the message as ``slots.message`` (``+prompt.message=...``)."""
    if prompt is None or isinstance(prompt, str):
        return prompt or None
    turns = [t for t in _plain_list(prompt) if t.get("role", "user") == "user"]
    if not turns:
        return None
    slots = plain_dict(turns[-1].get("slots"))
    if isinstance(slots.get("message"), str):
        return slots["message"]
    raise ValueError(f"transcribe prompt {prompt}: Canary-style prompt slots ({sorted(slots)}) do not apply to an "
                     "AuRA model; give the user message with the audio placeholder as prompt=... (transcribe) or "
                     "+prompt.message=... (transcribe_speech.py)")


def _is_set(value) -> bool:
    return value is not None and value is not False and value != {} and value != []


def _defaults(node) -> dict:
    """The defaults of a NeMo decoding dataclass (or of the one a structured DictConfig was made from)."""
    kind = type(node) if is_dataclass(node) else OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
    try:
        return plain_dict(kind()) if kind is not None and is_dataclass(kind) else {}
    except TypeError:  # a dataclass with required fields
        return {}


def _plain_list(node) -> list[dict]:
    items = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else list(node)
    return [plain_dict(t) for t in items]
