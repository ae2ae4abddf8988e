"""Loading user audio for inference: paths, numpy arrays or tensors -> a padded mono batch."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def load_audio_item(item, sample_rate: int, name: str) -> Tensor:
    """One item as a 1-D float tensor at ``sample_rate``. Arrays/tensors are taken to be at ``sample_rate``.

    Files are read and resampled with Lhotse; multi-channel audio is downmixed with a warning.
    """
    if isinstance(item, (str, Path)):
        from lhotse import Recording

        path = Path(item)
        if not path.is_file():
            raise FileNotFoundError(f"{name}: audio file '{path}' does not exist")
        try:
            recording = Recording.from_file(str(path))
        except Exception as e:  # soundfile/audioread errors say little about which file failed
            raise ValueError(f"{name}: cannot read audio file '{path}': {e}") from e
        if recording.sampling_rate != sample_rate:
            recording = recording.resample(sample_rate)
        samples = torch.from_numpy(recording.load_audio())
        where = f"'{path}'"
    elif isinstance(item, np.ndarray):
        samples, where = torch.from_numpy(item), "the array"
    elif isinstance(item, Tensor):
        samples, where = item.detach().cpu(), "the tensor"
    else:
        raise TypeError(f"{name}: expected a path, a numpy array or a tensor, got {type(item).__name__}")
    samples = samples.float()
    if samples.dim() == 2:
        if samples.shape[0] > 1:
            warnings.warn(f"{name}: {where} has {samples.shape[0]} channels; downmixing to mono")
        samples = samples.mean(0)
    if samples.dim() != 1:
        raise ValueError(f"{name}: {where} must be 1-D (samples) or 2-D (channels, samples), got shape {tuple(samples.shape)}")
    if samples.numel() == 0:
        raise ValueError(f"{name}: {where} holds no samples (empty audio)")
    return samples


def collate_waveforms(waves: list[Tensor]) -> tuple[Tensor, Tensor]:
    lens = torch.tensor([w.numel() for w in waves])
    out = torch.zeros(len(waves), int(lens.max()))
    for i, w in enumerate(waves):
        out[i, : w.numel()] = w
    return out, lens


def resample_waveform(wave: Tensor, rate: int, target: int) -> Tensor:
    """A 1-D waveform from ``rate`` to ``target`` Hz (Lhotse's resampler, as for files)."""
    from lhotse.augmentation import Resample

    if rate == target:
        return wave
    return torch.from_numpy(Resample(source_sampling_rate=rate, target_sampling_rate=target)(wave.numpy()[None])[0]).float()
