import pytest
import torch

from nemo_aura.modules.distill import LayerwiseDistillation, lengths_to_mask, pool_to_length, resolve_layer_map


def test_uniform_map_spreads_over_teacher_depth():
    assert resolve_layer_map("uniform", 30, 6, num_student_layers=6) == [(i, i) for i in range(1, 7)]
    assert resolve_layer_map("uniform", 30, 32, num_student_layers=4) == [(1, 8), (2, 16), (3, 24), (4, 32)]
    assert resolve_layer_map("uniform", 30, 4, num_student_layers=8)[-1] == (8, 4)


def test_explicit_map_is_checked():
    assert resolve_layer_map([[2, 3], [1, 1]], 4, 3) == [(1, 1), (2, 3)]
    with pytest.raises(ValueError, match="student layer 5 is outside the LLM's layers 1..4"):
        resolve_layer_map([[5, 1]], 4, 3)
    with pytest.raises(ValueError, match="teacher layer 0 is outside the teacher's layers 1..3"):
        resolve_layer_map([[1, 0]], 4, 3)
    with pytest.raises(ValueError, match="maps a student layer twice"):
        resolve_layer_map([[1, 1], [1, 2]], 4, 3)
    with pytest.raises(ValueError, match="not a \\[student, teacher\\] pair"):
        resolve_layer_map([[1, 1, 1]], 4, 3)
    with pytest.raises(ValueError, match="'uniform' or a list"):
        resolve_layer_map("spread", 4, 3, num_student_layers=2)


def test_pool_to_length_averages_only_valid_frames():
    states = torch.arange(8, dtype=torch.float32).view(1, 8, 1).repeat(2, 1, 1)
    states[1, 4:] = 1000.0  # padding of item 1 must not leak in
    out = pool_to_length(states, torch.tensor([8, 4]), torch.tensor([2, 2]), 3)
    assert out[0, :2, 0].tolist() == [1.5, 5.5]
    assert out[1, :2, 0].tolist() == [0.5, 2.5]
    assert out[:, 2].abs().sum() == 0
    # a slower teacher is repeated onto the faster patch grid
    up = pool_to_length(states[:1, :2], torch.tensor([2]), torch.tensor([4]), 4)
    assert up[0, :, 0].tolist() == [0.0, 0.0, 1.0, 1.0]


def test_losses_on_known_cases():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8)
    mask = lengths_to_mask(torch.tensor([5, 3]), 5)
    cosine = LayerwiseDistillation([(1, 1)], 8, 8, loss="cosine", projection="none")
    out = cosine({1: 3.0 * x}, {1: x}, mask)  # cosine ignores scale
    assert out["cos_layer1"] == pytest.approx(1.0, abs=1e-5) and out["loss"].item() == pytest.approx(0.0, abs=1e-5)
    mse = LayerwiseDistillation([(1, 1)], 8, 8, loss="mse", projection="none")
    assert mse({1: 3.0 * x}, {1: x}, mask)["loss"].item() > 0.1  # MSE does not
    normed = torch.nn.functional.layer_norm(x, (8,))  # MSE targets are layer-normalised
    assert mse({1: normed}, {1: 5.0 * x + 1.0}, mask)["loss"].item() == pytest.approx(0.0, abs=1e-4)
    both = LayerwiseDistillation([(1, 1)], 8, 8, loss="both", projection="none")
    assert both({1: 3.0 * x}, {1: x}, mask)["loss"].item() == pytest.approx(mse({1: 3.0 * x}, {1: x}, mask)["loss"].item(), abs=1e-5)
    d = LayerwiseDistillation([(1, 1)], 8, 8, loss="cosine", projection="none")
    y = -x.clone()
    y[1, 3:] = x[1, 3:]  # padded positions agree, but are masked out
    assert d({1: y}, {1: x}, mask)["loss"].item() == pytest.approx(2.0, abs=1e-5)
    with pytest.raises(ValueError, match="needs equal widths"):
        LayerwiseDistillation([(1, 1)], 8, 4, projection="none")
    with pytest.raises(ValueError, match="distillation.loss must be one of"):
        LayerwiseDistillation([(1, 1)], 8, 8, loss="l1")
