"""Loading user audio for inference: paths, numpy arrays or tensors -> a padded mono batch.

The layout rule (``generate``, ``transcribe`` and the command line alike):

- an *item* is a path, a 1-D array/tensor of samples, or a 2-D array/tensor holding one multi-channel recording,
  ``(channels, samples)`` (torchaudio) or ``(samples, channels)`` (soundfile): the channel axis is the one with at
  most ``MAX_CHANNELS`` entries, the other must be longer; when both or neither are that short the layout is
  ambiguous and refused. Several channels are downmixed to mono, with a warning through NeMo's logger.
- a 2-D array/tensor passed as the whole ``audio`` argument is a padded batch ``(B, T)`` (NeMo's ``input_signal``),
  one item per row; one that looks like a single ``(samples, channels)`` recording is refused (wrap it in a list).
- arrays/tensors are taken to be at the model's rate unless ``sample_rate=`` says otherwise (files are resampled);
  an in-memory length that looks like another rate's is logged as a warning (``rate_hint``).
- NaN/inf samples, empty audio and directories are errors naming the item.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

MAX_CHANNELS = 16
COMMON_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)


def _log_warning(message: str) -> None:
    from nemo.utils import logging  # NeMo's logger: what users of NeMo models see (it hides UserWarnings)

    logging.warning(message)


def load_audio_item(item, sample_rate: int, name: str) -> Tensor:
    """One item as a 1-D float tensor at ``sample_rate``. Arrays/tensors are taken to be at ``sample_rate``.

    Files are read and resampled with Lhotse; multi-channel audio is downmixed with a warning (layout: module docstring).
    """
    if isinstance(item, (str, Path)):
        from lhotse import Recording

        path = Path(item)
        if path.is_dir():
            raise IsADirectoryError(f"{name}: audio path '{path}' is a directory, not an audio file")
        if not path.is_file():
            raise FileNotFoundError(f"{name}: audio file '{path}' does not exist")
        try:
            recording = Recording.from_file(str(path))
        except Exception as e:  # soundfile/audioread errors say little about which file failed
            raise ValueError(f"{name}: cannot read audio file '{path}': {e}") from e
        if recording.sampling_rate != sample_rate:
            recording = recording.resample(sample_rate)
        samples, where, channels_first = torch.from_numpy(recording.load_audio()), f"'{path}'", True
    elif isinstance(item, np.ndarray):
        samples, where, channels_first = torch.from_numpy(np.ascontiguousarray(item, dtype=np.float32)), "the array", None
    elif isinstance(item, Tensor):
        samples, where, channels_first = item.detach().cpu(), "the tensor", None
    else:
        raise TypeError(f"{name}: expected a path, a numpy array or a tensor, got {type(item).__name__}")
    samples = samples.float()
    if samples.dim() == 2:
        samples = _downmix(samples, name, where, channels_first)
    if samples.dim() != 1:
        raise ValueError(f"{name}: {where} must be 1-D (samples) or 2-D (one multi-channel recording), "
                         f"got shape {tuple(samples.shape)}")
    if samples.numel() == 0:
        raise ValueError(f"{name}: {where} holds no samples (empty audio)")
    bad = int((~torch.isfinite(samples)).sum())
    if bad:
        raise ValueError(f"{name}: {where} holds {bad} NaN/inf sample(s) of {samples.numel()}; "
                         "audio must be finite")
    return samples


def _downmix(samples: Tensor, name: str, where: str, channels_first: bool | None) -> Tensor:
    """A 2-D recording -> mono. ``channels_first`` None: the channel axis is the short one (module docstring)."""
    if channels_first is None:
        rows, cols = samples.shape
        if rows <= MAX_CHANNELS < cols:
            channels_first = True
        elif cols <= MAX_CHANNELS < rows:
            channels_first = False
        else:
            raise ValueError(
                f"{name}: {where} has shape {tuple(samples.shape)}: a 2-D item is one recording, (channels, samples) "
                f"or (samples, channels) with at most {MAX_CHANNELS} channels, and here either axis could be the "
                "channels; pass 1-D samples (several recordings: a list of 1-D items)")
    if not channels_first:
        samples = samples.T
    if samples.shape[0] > 1:
        _log_warning(f"{name}: {where} has {samples.shape[0]} channels; downmixing to mono")
    return samples.mean(0)


def batch_rows(audio, lens=None) -> list[Tensor]:
    """The items of a padded ``(B, T)`` batch given as the whole ``audio`` argument (cut at ``lens`` if given)."""
    audio = torch.from_numpy(np.asarray(audio)) if isinstance(audio, np.ndarray) else audio
    rows, cols = audio.shape
    if cols <= MAX_CHANNELS < rows:
        raise ValueError(
            f"audio: a 2-D array/tensor given as `audio` is a batch (B, T), one item per row, but shape "
            f"{tuple(audio.shape)} looks like one (samples, channels) recording (soundfile's layout); pass it as "
            "a one-item list, [audio], to have it downmixed")
    lens = torch.as_tensor(lens) if lens is not None else torch.full((rows,), cols)
    if len(lens) != rows:
        raise ValueError(f"audio: {rows} rows but {len(lens)} audio_lens")
    if (lens <= 0).any():
        raise ValueError(f"empty audio in items {(lens <= 0).nonzero().flatten().tolist()}")
    return [audio[i, : int(n)].float().cpu() for i, n in enumerate(lens)]


def rate_hint(num_samples: int, sample_rate: int) -> str | None:
    """Why ``num_samples`` in-memory samples look like audio at another rate than ``sample_rate``, or None:
    under 0.1 s, or a whole number of seconds at a common rate but not a whole tenth of a second at this one."""
    if num_samples < sample_rate // 10:
        return f"{num_samples} samples are under 0.1 s at {sample_rate} Hz"
    if num_samples % (sample_rate // 10) == 0:
        return None
    for rate in sorted(COMMON_RATES, reverse=True):  # the highest: 44100 samples are 1 s at 44.1 kHz
        if rate != sample_rate and num_samples % rate == 0:
            return (f"{num_samples} samples are exactly {num_samples // rate} s at {rate} Hz but "
                    f"{num_samples / sample_rate:.3f} s at {sample_rate} Hz")
    return None


def warn_if_other_rate(samples: Tensor, sample_rate: int, name: str) -> None:
    """Log a warning when an in-memory item's length looks like another sample rate's (``rate_hint``)."""
    hint = rate_hint(samples.numel(), sample_rate)
    if hint:
        _log_warning(f"{name}: {hint}; in-memory audio is taken to be at the model's {sample_rate} Hz "
                     "(pass sample_rate= to generate, or resample it)")


def collate_waveforms(waves: list[Tensor]) -> tuple[Tensor, Tensor]:
    """1-D waveforms -> (B, max T) zero-padded float32, (B,) lengths."""
    lens = torch.tensor([w.numel() for w in waves])
    return torch.nn.utils.rnn.pad_sequence([w.reshape(-1).float() for w in waves], batch_first=True), lens


def resample_waveform(wave: Tensor, rate: int, target: int) -> Tensor:
    """A 1-D waveform from ``rate`` to ``target`` Hz (Lhotse's resampler, as for files)."""
    from lhotse.augmentation import Resample

    if rate == target:
        return wave
    return torch.from_numpy(Resample(source_sampling_rate=rate, target_sampling_rate=target)(wave.numpy()[None])[0]).float()
