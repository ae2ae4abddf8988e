"""Layer-wise distillation of teacher encoder states into the student LLM's hidden states."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOSSES = ("cosine", "mse", "both")
PROJECTIONS = ("student_to_teacher", "teacher_to_student", "none")


def resolve_layer_map(
    spec: str | Sequence[Sequence[int]],
    student_depth: int,
    teacher_depth: int,
    num_student_layers: int | None = None,
) -> list[tuple[int, int]]:
    """Turn ``uniform`` or explicit ``[[student, teacher], ...]`` pairs into checked 1-based pairs.

    ``uniform`` maps student layers ``1..K`` (K = ``num_student_layers``) onto teacher layers spread
    evenly over the teacher's depth, so student layer K always meets the teacher's last layer.
    """
    if isinstance(spec, str):
        if spec != "uniform":
            raise ValueError(f"distillation.layer_map must be 'uniform' or a list of [student, teacher] pairs, got {spec!r}")
        if not num_student_layers or num_student_layers < 1:
            raise ValueError("distillation.layer_map=uniform needs num_student_layers >= 1")
        k = num_student_layers
        pairs = [(s, max(1, round(s * teacher_depth / k))) for s in range(1, k + 1)]
    else:
        pairs = []
        for item in spec:
            if len(item) != 2:
                raise ValueError(f"distillation.layer_map entry {list(item)} is not a [student, teacher] pair")
            pairs.append((int(item[0]), int(item[1])))
    if not pairs:
        raise ValueError("distillation.layer_map is empty")
    for s, t in pairs:
        if not 1 <= s <= student_depth:
            raise ValueError(
                f"distillation.layer_map pair [{s}, {t}]: student layer {s} is outside the LLM's layers 1..{student_depth}"
            )
        if not 1 <= t <= teacher_depth:
            raise ValueError(
                f"distillation.layer_map pair [{s}, {t}]: teacher layer {t} is outside the teacher's layers 1..{teacher_depth}"
            )
    students = [s for s, _ in pairs]
    if len(set(students)) != len(students):
        raise ValueError(f"distillation.layer_map maps a student layer twice: {pairs}")
    return sorted(pairs)


def pool_to_length(states: Tensor, lengths: Tensor, target_lengths: Tensor, max_target: int) -> Tensor:
    """Average-pool each item's valid frames ``states[b, :lengths[b]]`` to ``target_lengths[b]`` steps.

    This aligns teacher frames (e.g. Whisper's 50 Hz) with the student's patch rate whatever the two
    rates are (it repeats frames when the teacher is slower). Padding steps are zero.
    """
    out = states.new_zeros(states.shape[0], max_target, states.shape[-1])
    for b, (n_in, n_out) in enumerate(zip(lengths.tolist(), target_lengths.tolist())):
        if n_in < 1 or n_out < 1:
            continue
        item = states[b, :n_in].transpose(0, 1).unsqueeze(0)  # (1, D, T)
        out[b, :n_out] = F.adaptive_avg_pool1d(item, n_out)[0].transpose(0, 1)
    return out


def lengths_to_mask(lengths: Tensor, max_len: int) -> Tensor:
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class LayerwiseDistillation(nn.Module):
    """Per mapped layer: a head, then ``1 - cos`` and/or MSE against the aligned teacher state.

    ``projection``: ``student_to_teacher`` (default, as VoRA: norm + bias-free linear from the LLM
    width to the teacher width; the teacher side stays fixed, so the loss cannot collapse),
    ``teacher_to_student`` (a linear map on the targets), or ``none`` (equal widths only).
    MSE compares against layer-normalised targets so layers of different scale weigh alike.
    The heads exist only for training; the encoder-free export drops them.
    """

    def __init__(
        self,
        layer_map: list[tuple[int, int]],
        student_dim: int,
        teacher_dim: int,
        loss: str = "cosine",
        projection: str = "student_to_teacher",
    ):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"distillation.loss must be one of {LOSSES}, got {loss!r}")
        if projection not in PROJECTIONS:
            raise ValueError(f"distillation.projection must be one of {PROJECTIONS}, got {projection!r}")
        if projection == "none" and student_dim != teacher_dim:
            raise ValueError(
                f"distillation.projection=none needs equal widths, but the LLM has {student_dim} and the teacher {teacher_dim}"
            )
        self.layer_map = list(layer_map)
        self.loss_type = loss
        self.projection = projection
        self.heads = nn.ModuleDict({str(s): self._make_head(student_dim, teacher_dim) for s, _ in self.layer_map})

    def _make_head(self, student_dim: int, teacher_dim: int) -> nn.Module:
        if self.projection == "student_to_teacher":
            return nn.Sequential(nn.LayerNorm(student_dim), nn.Linear(student_dim, teacher_dim, bias=False))
        if self.projection == "teacher_to_student":
            return nn.Linear(teacher_dim, student_dim, bias=False)
        return nn.Identity()

    @property
    def student_layers(self) -> list[int]:
        return [s for s, _ in self.layer_map]

    @property
    def teacher_layers(self) -> list[int]:
        return sorted({t for _, t in self.layer_map})

    def forward(self, student_states: dict[int, Tensor], targets: dict[int, Tensor], mask: Tensor,
                layers: list[int] | None = None) -> dict[str, Tensor]:
        """``student_states[s]`` and ``targets[t]`` are (B, N, D) on the patch grid; ``mask`` (B, N) marks real patches.

        Returns ``loss`` (mean over the mapped layers, or over ``layers`` of them when given) and per student layer
        ``loss_layer{s}`` and ``cos_layer{s}`` (every mapped layer is reported).
        """
        out: dict[str, Tensor] = {}
        losses = []
        weight = mask.to(torch.float32)
        denom = weight.sum().clamp_min(1.0)
        for s, t in self.layer_map:
            student, target = student_states[s].float(), targets[t].float()
            if self.projection == "teacher_to_student":
                target = self.heads[str(s)](target)
            else:
                student = self.heads[str(s)](student)
            cos = F.cosine_similarity(student, target, dim=-1, eps=1e-6)
            cos_mean = (cos * weight).sum() / denom
            layer_loss = student.new_zeros(())
            if self.loss_type in ("cosine", "both"):
                layer_loss = layer_loss + (1.0 - cos_mean)
            if self.loss_type in ("mse", "both"):
                normed = F.layer_norm(target, target.shape[-1:])
                mse = ((student - normed) ** 2).mean(-1)
                layer_loss = layer_loss + (mse * weight).sum() / denom
            out[f"loss_layer{s}"] = layer_loss
            out[f"cos_layer{s}"] = cos_mean.detach()
            if layers is None or s in layers:
                losses.append(layer_loss)
        if not losses:
            raise ValueError(f"distillation: none of the layers {layers} is mapped ({self.student_layers})")
        out["loss"] = torch.stack(losses).mean()
        return out
