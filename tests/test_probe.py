"""The linear CTC probe: it learns what is linearly there, and runs on a model + cached cuts."""
import json

import pytest
import torch
from lhotse import CutSet

from nemo_aura import AuRAModel
from nemo_aura.data.teacher_cache import LAYERS_FIELD, build_teacher_cache
import probe_layers as probe
from nemo_aura.testing import write_tiny_cuts


def _one_hot_utterance(tokens: list[int], dim: int, noise: torch.Generator) -> torch.Tensor:
    """Frames that spell ``tokens`` (a one-hot frame per token, a silent frame between), plus a little noise."""
    frames = []
    for t in tokens:
        frames += [torch.nn.functional.one_hot(torch.tensor(t), dim).float(), torch.zeros(dim)]
    return torch.stack(frames) + 0.05 * torch.randn(len(frames), dim, generator=noise)


def test_probe_reads_tokens_that_are_linearly_there_and_not_noise():
    g = torch.Generator().manual_seed(0)
    utts = [torch.randint(0, 12, (5,), generator=g) + 100 for _ in range(60)]  # LLM token ids 100..111
    readable = [_one_hot_utterance((u - 100).tolist(), 16, g) for u in utts]
    noise = [torch.randn(len(f), 16, generator=g) for f in readable]
    for feats, expect_exact in ((readable, True), (noise, False)):
        trained, info = probe.train_probe(feats[:50], utts[:50], epochs=60, lr=2e-2, batch_utts=10)
        decoded = probe.greedy_decode(trained, feats[50:])
        exact = sum(d == u.tolist() for d, u in zip(decoded, utts[50:]))
        assert info["vocab"] == 12 and info["train_utts"] == 50
        assert (exact == 10) if expect_exact else (exact <= 1)
    assert all(t in range(100, 112) for d in decoded for t in d)  # probe classes map back to LLM token ids


def test_ctc_feasibility_counts_repeats():
    assert probe.ctc_feasible(3, torch.tensor([1, 2, 3]))
    assert not probe.ctc_feasible(3, torch.tensor([1, 1, 3]))  # a blank must separate the repeated token
    assert not probe.ctc_feasible(5, torch.tensor([], dtype=torch.long))


def test_probe_runs_on_a_model_and_cached_teacher_layers(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    model = AuRAModel(tiny_cfg).eval()
    cached = build_teacher_cache(model, CutSet.from_file(write_tiny_cuts(tmp_path / "data", n=6)), tmp_path / "cache",
                                 batch_size=2)
    nemo = tmp_path / "tiny.nemo"
    model.save_to(str(nemo))
    teacher_layer = max(next(iter(CutSet.from_file(cached))).custom[LAYERS_FIELD])
    out = tmp_path / "probe"
    probe.main(["--nemo", str(nemo), "--train-cuts", str(cached), "--dev-cuts", str(cached), "--layers", "0", "2",
                "--teacher-layers", str(teacher_layer), "--epochs", "2", "--out", str(out)])
    results = json.loads((out / "results.json").read_text())
    sources = [r["source"] for r in results["probes"]]
    assert sources == ["student_L0", "student_L2", f"teacher_L{teacher_layer}"]
    dims = {r["source"]: r["dim"] for r in results["probes"]}
    assert dims["student_L0"] == dims["student_L2"] == model.llm.config.hidden_size
    assert all(r["dev_wer"] >= 0 and len(r["train_loss_per_epoch"]) == 2 and r["dev_utts"] == 6 for r in results["probes"])
    assert "| student_L2 |" in (out / "results.md").read_text() and (out / "probe.png").stat().st_size > 0
    with pytest.raises(ValueError, match="no cached teacher targets"):
        probe.main(["--nemo", str(nemo), "--train-cuts", str(tmp_path / "data" / "cuts.jsonl.gz"),
                    "--dev-cuts", str(cached), "--teacher-layers", "1", "--out", str(tmp_path / "bad")])
