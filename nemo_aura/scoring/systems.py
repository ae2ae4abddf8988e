"""The systems compared in stage 6, all answering with the same LLM and the same prompt wording.

- ``topline``: the LLM reads the gold question text (and context);
- ``cascade``: an ASR model transcribes the question (Whisper from a local HF dir, or a NeMo ``.nemo``
  through its ``transcribe``), then the LLM answers the transcript; Whisper may encode a shorter window than its
  padded 30 s when the audio fits (``asr_window_seconds``, the option AuRA's Whisper teacher has);
- ``bridge`` / ``aura``: a saved speech model (``BridgeModel`` keeps its encoder; AuRA has none);
- ``aura_text``: the AuRA model's LLM with its LoRA loaded, reading the text question (text ability kept);
- ``topline_ft`` / ``cascade_ft`` / ``aura_ctc_ft`` / ``bridge_ctc_ft``: a fine-tuned text-QA reader (stage 5: the
  LLM with LoRA trained on the QA training items, merged) answering the gold question text, Whisper's transcript,
  or the transcript an AuRA (or bridge) model with ``reading.span: vocab`` writes with its CTC head (that model's
  LLM reads the same text, so this is the model with the reader as its text path); each speech row may have a reader
  trained on its own front end's transcripts of the training questions (``*_reader_dir``);
- ``oracle_repeat`` / ``oracle_collapsed``: the ceiling of the text-aligned interface at layer K. The base LLM gets
  the AuRA prompt, the spoken question's span filled with the transcript's tokens and, after layer K, the states the
  LLM itself has there for the transcript (the text-aligned target, ``modules.text_align``), either one per audio
  patch as the target aligns them (``repeat``, what a student at zero text-aligned loss gives) or one per token
  (``collapsed``). Layers K+1..L read them as they are.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from nemo_aura.parts.prompting import (DEFAULT_TEMPLATES, TEXT_QA_TEMPLATES, cut_at_stop, placeholder_position, splice,
                                       stop_token_ids, text_generation_prompt)
from nemo_aura.scoring.items import QAItem

# The text systems get AuRA's own templates with the question text where the audio would be.
TEXT_TEMPLATES = {name: text.replace("{audio}", "{question}") for name, text in TEXT_QA_TEMPLATES.items()}
# The transcription ceiling of a span the upper layers read as text: AuRA's own ASR prompt, the words in the audio's place.
TEXT_ASR_TEMPLATE = DEFAULT_TEMPLATES["asr"].replace("{audio}", "{question}")


def text_message(question: str, context: str | None) -> str:
    return TEXT_TEMPLATES["qa_context" if context else "qa"].format(question=question, context=context or "")


class TextAnswerer:
    """An HF causal LM answering text prompts in the model's chat format (NeMo ``PromptFormatter``)."""

    def __init__(self, llm, tokenizer, prompt_format: str, stop_ids: list[int], pad_id: int):
        from nemo.collections.common.prompts import PromptFormatter

        self.llm, self.tokenizer = llm.eval(), tokenizer
        self.formatter = PromptFormatter.resolve(prompt_format)(tokenizer)
        self.stop_ids, self.pad_id = stop_ids, pad_id

    @classmethod
    def from_dir(cls, llm_dir: str, prompt_format: str = "qwen", stop_tokens=("<|im_end|>",)) -> "TextAnswerer":
        from nemo.collections.common.tokenizers import AutoTokenizer
        from transformers import AutoModelForCausalLM

        from nemo_aura.parts.student import check_llm_dir

        path = check_llm_dir(llm_dir)
        tokenizer = AutoTokenizer(str(path), use_fast=True)
        llm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        stops = stop_token_ids(llm, tokenizer, stop_tokens)
        pad = tokenizer.pad_id if tokenizer.pad_id is not None and tokenizer.pad_id >= 0 else stops[0]
        return cls(llm, tokenizer, prompt_format, stops, int(pad))

    @torch.no_grad()
    def answer_ids(self, message: str, max_new_tokens: int) -> list[int]:
        """Greedy answer token ids, cut at the first stop token."""
        ids = text_generation_prompt(self.formatter, message)[None]
        out = self.llm.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
            eos_token_id=self.stop_ids, pad_token_id=self.pad_id,
        )[0, ids.shape[1]:]
        return cut_at_stop(out, self.stop_ids)

    def answer(self, message: str, max_new_tokens: int) -> str:
        return self.decode(self.answer_ids(message, max_new_tokens))

    def answer_with_length(self, message: str, max_new_tokens: int) -> dict:
        """{"answer": text, "answer_tokens": how many tokens were generated} (the latency depends on it)."""
        ids = self.answer_ids(message, max_new_tokens)
        return {"answer": self.decode(ids), "answer_tokens": len(ids)}

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.tokenizer.decode(ids, skip_special_tokens=True).strip()


class System:
    """``answer(item, audio)`` -> {"answer", "answer_tokens", optional "transcript"}; ``audio`` is 16 kHz mono."""

    name: str
    uses_audio = True
    sample_rate = 16000
    training_history: list[dict] = []  # runs recorded in a loaded .nemo (``nemo_aura.train.record_training``)
    decoding: dict | None = None  # how a speech model decodes its CTC read (``cfg.ctc_decoding``), None where it has none

    def answer(self, item: QAItem, audio: np.ndarray | None, max_new_tokens: int) -> dict:
        """{"answer": str, "answer_tokens": int (generated, stop token excluded), optional "transcript": str}."""
        raise NotImplementedError

    def transcribe(self, audio: np.ndarray, context: str | None = None) -> str | None:
        """A transcript of the audio, if this system can make one (for WER); ``context``: the text the utterance
        asks about, which a system that biases its read towards it uses as it does when answering."""
        return None


class Topline(System):
    name, uses_audio = "topline", False
    asr_ceiling = True  # the raw LLM's reply to the ASR prompt is a transcription ceiling; a QA-tuned reader's is not

    def __init__(self, llm_dir: str, prompt_format: str = "qwen"):
        self.llm = TextAnswerer.from_dir(llm_dir, prompt_format)

    def answer(self, item, audio, max_new_tokens):
        return self.llm.answer_with_length(text_message(item.question, item.context), max_new_tokens)

    def transcribe_text(self, text: str, max_new_tokens: int = 48) -> str:
        """What the LLM writes for AuRA's ASR prompt with ``text`` where the audio would be: the best transcript a
        speech model whose audio span reads exactly as text can get from this LLM (its WER is that ceiling)."""
        return self.llm.answer(TEXT_ASR_TEMPLATE.format(question=text), max_new_tokens)


class Cascade(System):
    name = "cascade"

    def __init__(self, asr_path: str, llm_dir: str, prompt_format: str = "qwen", asr_max_new_tokens: int = 96,
                 asr_window_seconds: list[float] | None = None, context_prompt: bool = False):
        """``context_prompt``: Whisper is prompted with the item's context (its previous-text prompt), the cascade's
        counterpart of a CTC read that boosts the context's words."""
        self.llm = TextAnswerer.from_dir(llm_dir, prompt_format)
        self.asr = load_asr(asr_path, asr_max_new_tokens, asr_window_seconds)
        if context_prompt and not getattr(self.asr, "takes_prompt", False):
            raise ValueError(f"cascade ASR '{asr_path}': only a Whisper directory takes the context as a prompt")
        self.context_prompt = context_prompt
        self._transcripts: dict[str, str] = {}
        self.reuse_transcripts = False  # untimed scorers (hearing) set it: answer() then reuses transcribe()'s memo

    def _asr_context(self, context):
        """What the front end hears of the item's context: Whisper's prompt where the cascade prompts it, a speech
        model's read whatever its decoding does with it (``uses_context``), else nothing."""
        return context if self.context_prompt or getattr(self.asr, "uses_context", False) else None

    def _asr(self, audio, context):
        context = self._asr_context(context)
        return self.asr(audio, context) if context else self.asr(audio)

    def transcribe(self, audio, context=None):
        """The front end's transcript (with what it hears of ``context``), memoised by the audio's content (and that
        context): a scorer that answers and transcribes the same utterance (or answers it again as another item's
        control) runs the ASR once."""
        import hashlib

        prompt = self._asr_context(context)
        key = hashlib.sha1(np.ascontiguousarray(audio).tobytes() + (prompt or "").encode()).hexdigest()
        if key not in self._transcripts:
            self._transcripts[key] = self._asr(audio, prompt)
        return self._transcripts[key]

    def answer(self, item, audio, max_new_tokens):
        # timed: the ASR runs
        transcript = self.transcribe(audio, item.context) if self.reuse_transcripts else self._asr(audio, item.context)
        return {**self.llm.answer_with_length(text_message(transcript, item.context), max_new_tokens), "transcript": transcript}


class SpeechModel(System):
    """A saved AuRA or bridge ``.nemo`` answering the spoken question directly."""

    def __init__(self, nemo_path: str, name: str):
        from nemo_aura import AuRAModel

        if not Path(nemo_path).is_file():
            raise FileNotFoundError(f"{name}: model '{nemo_path}' does not exist")
        self.model = AuRAModel.restore_from(str(nemo_path), map_location="cpu").eval()
        self.name, self.sample_rate = name, self.model.sample_rate
        self.training_history = history_of(self.model)
        if getattr(self.model, "ctc_head", None) is not None:
            decoding = self.model.cfg.get("ctc_decoding")
            self.decoding = OmegaConf.to_container(decoding) if decoding else {"strategy": "greedy"}
            if (self.decoding.get("beam") or {}).get("ngram_lm_model"):  # the model's own copy: a temporary path
                self.decoding["beam"]["ngram_lm_model"] = Path(self.decoding["beam"]["ngram_lm_model"]).name

    def transcribe(self, audio, context=None):
        return self.model.generate([torch.from_numpy(audio)], task="asr", contexts=[context], max_new_tokens=96)[0]

    def answer(self, item, audio, max_new_tokens):
        ids = self.model.generate_ids([torch.from_numpy(audio)], task="qa", contexts=[item.context],
                                      max_new_tokens=max_new_tokens)[0]
        return {"answer": self.model.decode_ids(ids), "answer_tokens": len(ids)}


class TextStateOracle(System):
    """See the module docstring: an AuRA model's base LLM fed its own layer-K text states in place of the audio span."""

    def __init__(self, nemo_path: str, mode: str = "repeat", name: str | None = None):
        from nemo_aura import AuRAModel
        from nemo_aura.modules.text_align import TokenCharLengths

        if mode not in ("repeat", "collapsed"):
            raise ValueError(f"oracle mode {mode!r}: expected 'repeat' or 'collapsed'")
        if not Path(nemo_path).is_file():
            raise FileNotFoundError(f"oracle: AuRA model '{nemo_path}' does not exist (it gives the LLM, K and the patch rate)")
        self.model = AuRAModel.restore_from(str(nemo_path), map_location="cpu").eval()
        self.mode, self.name = mode, name or f"oracle_{mode}"
        self.layer = self.model.ctc_layer  # K, the last LoRA layer
        self.token_chars = TokenCharLengths(self.model.tokenizer)

    @torch.no_grad()
    def answer(self, item, audio, max_new_tokens):
        from nemo_aura.modules.text_align import uniform_char_alignment

        model = self.model
        words = model.tokenizer.text_to_ids(item.question)
        prompt = model.prompts.encode(model.prompts.user_message("qa", item.context))[0]
        p = placeholder_position(prompt, model.audio_locator_id)
        text_ids = splice(prompt, p, torch.tensor(words))[None]
        states = model.text_states(text_ids, torch.tensor([text_ids.shape[1]]), self.layer)[0, p : p + len(words)]
        if self.mode == "repeat":
            patches = int(model.patch_lengths(torch.tensor([len(audio)]))[0])
            index = uniform_char_alignment(self.token_chars(words), patches)
        else:
            index = torch.arange(len(words))
        span_ids = torch.tensor(words)[index]
        ids = splice(prompt, p, span_ids)[None]
        span = torch.zeros_like(ids, dtype=torch.bool)
        span[0, p : p + len(index)] = True
        # the same hook the collapsed generation uses: layer K's output at the span becomes the text states
        with model.replaced_span_states(span, {self.layer: states[index]}), model.llm.disable_adapter(), \
                model.audio_span.positions(None):
            out = model.llm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                     do_sample=False, eos_token_id=model.stop_token_ids, pad_token_id=model.pad_id)
        row = cut_at_stop(out[0, ids.shape[1]:], model.stop_token_ids)
        return {"answer": model.decode_ids(row), "answer_tokens": len(row)}


def history_of(model) -> list[dict]:
    """``model.cfg.training_history`` as plain data ([] for a model that records none)."""
    history = model.cfg.get("training_history")
    return OmegaConf.to_container(history) if history else []


class SpeechModelTextOnly(System):
    """The speech model's LLM + LoRA reading the text question: does the adapter keep text ability?"""

    uses_audio = False

    def __init__(self, nemo_path: str, name: str = "aura_text"):
        from nemo_aura import AuRAModel

        model = AuRAModel.restore_from(str(nemo_path), map_location="cpu").eval()
        self.name = name
        self.llm = TextAnswerer(model.llm, model.tokenizer, model.cfg.prompt_format, model.stop_token_ids, model.pad_id)
        self.training_history = history_of(model)  # the adapter's training, though only its LLM + LoRA are kept

    def answer(self, item, audio, max_new_tokens):
        return self.llm.answer_with_length(text_message(item.question, item.context), max_new_tokens)


def parse_window_seconds(text: str) -> list[float] | None:
    """A script's ``--asr-window-seconds`` ("10,20") as ``load_asr``'s ``window_seconds``; "" -> None (30 s only)."""
    return [float(w) for w in text.split(",") if w.strip()] or None


def load_asr(path: str, max_new_tokens: int = 96, window_seconds: list[float] | None = None):
    """A callable 16 kHz waveform -> transcript: Whisper from a local HF dir (``window_seconds``: shorter windows
    to encode when the audio fits, see ``_whisper_asr``), or a NeMo ASR ``.nemo``."""
    p = Path(path)
    if p.is_dir():
        return _whisper_asr(p, max_new_tokens, window_seconds)
    if p.is_file() and p.suffix == ".nemo":
        return _nemo_asr(p)
    raise FileNotFoundError(f"cascade ASR: '{path}' is neither a local Whisper directory nor a .nemo file")


def _whisper_asr(path: Path, max_new_tokens: int, window_seconds: list[float] | None = None):
    """Whisper's transcribe; with ``window_seconds`` the encoder runs on the shortest of those windows that holds the
    audio (else the padded 30 s), as AuRA's Whisper teacher does (``WhisperTeacher(window_seconds=...)``)."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from nemo_aura.modules.teachers import pick_window, whisper_window

    processor = WhisperProcessor.from_pretrained(path)
    model = WhisperForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
    multilingual = bool(getattr(model.generation_config, "is_multilingual", False))
    options = {"language": "en", "task": "transcribe"} if multilingual else {}
    hop = processor.feature_extractor.hop_length
    full = model.config.max_source_positions * 2 * hop  # samples in the padded window
    windows = sorted({min(full, int(w * 16000)) for w in window_seconds or ()} | {full})

    @torch.no_grad()
    def transcribe_batch(audios: list[np.ndarray], prompt: str | None = None) -> list[str]:
        # one window for the batch, the shortest that holds its longest audio: sort by length before batching
        window = pick_window(windows, max(len(a) for a in audios)) or full  # longer audio: cut at 30 s, as before
        feats = processor(list(audios), sampling_rate=16000, return_tensors="pt", padding="max_length",
                          max_length=window).input_features
        extra = {"prompt_ids": prompt_ids(prompt)} if prompt else {}
        with whisper_window(model.model.encoder, window // hop // 2):
            ids = model.generate(feats, max_new_tokens=max_new_tokens, **options, **extra)
        return [text.strip() for text in processor.batch_decode(ids, skip_special_tokens=True)]

    def prompt_ids(text: str) -> torch.Tensor:
        # Whisper's previous-text prompt: the start-of-previous token, then at most half its context of the text's end
        ids = processor.get_prompt_ids(" ".join(text.split()), return_tensors="pt")
        room = model.config.max_target_positions // 2 - 1
        return ids if len(ids) <= room else torch.cat([ids[:1], ids[-(room - 1):]])

    def transcribe(audio: np.ndarray, prompt: str | None = None) -> str:
        """``prompt``: text Whisper reads as what was said before (its spelling of names is taken up)."""
        return transcribe_batch([audio], prompt)[0]

    # what it encodes (for tests and reports), and the batched path for transcribing many (``transcribe_all``)
    transcribe.windows, transcribe.model, transcribe.batch = windows, model, transcribe_batch
    transcribe.takes_prompt = True  # a Cascade with context_prompt passes the item's context
    return transcribe


def transcribe_all(asr, audios: list[np.ndarray], batch_size: int = 16, progress=None) -> list[str]:
    """``asr``'s transcripts of ``audios`` in their order; an ASR with a batched path (``load_asr``'s Whisper) gets
    batches of similar lengths (each is encoded at the window its longest audio needs), any other one item at a time.
    ``progress(done, total)`` is called after each batch."""
    batch = getattr(asr, "batch", None)
    if batch is None:
        batch, batch_size = (lambda chunk: [asr(a) for a in chunk]), 1
    order = sorted(range(len(audios)), key=lambda i: len(audios[i]))
    texts: list[str | None] = [None] * len(audios)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        for i, text in zip(chunk, batch([audios[i] for i in chunk])):
            texts[i] = text
        if progress is not None:
            progress(min(start + batch_size, len(order)), len(order))
    return texts


def _nemo_asr(path: Path):
    from nemo.collections.asr.models import ASRModel

    from nemo_aura.parts.registration import register_plugin_namespace

    register_plugin_namespace()  # an AuRA .nemo (aura_ctc_ft) is a NeMo ASR model NeMo must be allowed to build
    model = ASRModel.restore_from(str(path), map_location="cpu").eval()
    if not hasattr(model, "sample_rate"):  # transcribe() of in-memory audio needs it
        model.sample_rate = int(model.cfg.preprocessor.sample_rate)

    from nemo_aura.models.inference import AuRAInferenceMixin

    reads_context = isinstance(model, AuRAInferenceMixin)  # AuRA or a bridge: its read may boost the context's words

    @torch.no_grad()
    def transcribe(audio: np.ndarray, context: str | None = None) -> str:
        if reads_context:  # the read the model answers from (generate passes the context to it, as transcribe does not)
            return model.generate([torch.from_numpy(audio.astype(np.float32))], task="asr", contexts=[context])[0]
        out = model.transcribe([audio.astype(np.float32)], batch_size=1, verbose=False)[0]
        return (out.text if hasattr(out, "text") else str(out)).strip()

    transcribe.model = model  # e.g. to change its decoding (finetune_text_qa.py --lm-folds)
    transcribe.uses_context = reads_context
    return transcribe


def build_system(name: str, paths: dict) -> System:
    """``paths`` holds ``llm_dir``, ``asr``, ``aura``, ``bridge``, ``reader_dir`` as needed by ``name`` (and
    optionally ``asr_window_seconds`` for the cascade's Whisper, ``asr_context_prompt`` (Whisper prompted with
    the item's context), ``cascade_reader_dir`` / ``aura_reader_dir`` /
    ``bridge_reader_dir`` for the fine-tuned rows' own readers)."""
    def need(key):
        if not paths.get(key):
            raise ValueError(f"system {name!r} needs --{key.replace('_', '-')}")
        return paths[key]

    if name == "topline":
        return Topline(need("llm_dir"))
    if name == "cascade":
        return Cascade(need("asr"), need("llm_dir"), asr_window_seconds=paths.get("asr_window_seconds"),
                       context_prompt=bool(paths.get("asr_context_prompt")))
    if name in ("aura", "bridge"):
        return SpeechModel(need(name), name)
    if name == "aura_text":
        return SpeechModelTextOnly(need("aura"))
    if name in ("oracle_repeat", "oracle_collapsed"):
        return TextStateOracle(need("aura"), name.split("_", 1)[1])
    if name in FINE_TUNED_READER_SYSTEMS:
        front_end, own_reader = READER_ROWS[name]
        # a row's own reader (trained on its front end's transcripts) if given, else the shared text reader
        reader = paths.get(own_reader) if own_reader and paths.get(own_reader) else need("reader_dir")
        if front_end is None:
            system = Topline(reader)
            system.asr_ceiling = False
        else:  # the reader answers a transcript: Whisper's (windows apply to it only), or a CTC model's text
            prompted = bool(paths.get("asr_context_prompt")) and front_end == "asr"
            system = Cascade(need(front_end), reader, asr_window_seconds=paths.get("asr_window_seconds"),
                             context_prompt=prompted)
        system.name = name
        return system
    raise ValueError(f"unknown system {name!r}; known: topline, cascade, bridge, aura, aura_text, oracle_repeat, "
                     f"oracle_collapsed, {', '.join(FINE_TUNED_READER_SYSTEMS)}")


#: Systems answering with the fine-tuned text-QA reader (``recipes/aura/local/finetune_text_qa.py``, ``reader_dir``).
#: row -> (the path key of its speech front end, None for the text; the path key of its own reader).
READER_ROWS = {"topline_ft": (None, None), "cascade_ft": ("asr", "cascade_reader_dir"),
               "aura_ctc_ft": ("aura", "aura_reader_dir"), "bridge_ctc_ft": ("bridge", "bridge_reader_dir")}
FINE_TUNED_READER_SYSTEMS = tuple(READER_ROWS)
