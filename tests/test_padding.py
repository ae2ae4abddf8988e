"""benchmarks/padding.py: the padded fraction of a training config's batches, with and without Lhotse bucketing."""
import importlib.util
import json
from pathlib import Path

import pytest
from lhotse import AudioSource, CutSet, MonoCut, Recording

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("padding", ROOT / "benchmarks/padding.py")
padding = importlib.util.module_from_spec(spec)
spec.loader.exec_module(padding)


def test_batch_padding_is_the_share_of_positions_past_each_item():
    assert padding.batch_padding([2.0, 2.0]) == 0.0
    assert padding.batch_padding([1.0, 3.0]) == pytest.approx(1 / 3)  # 2 of 6 positions are padding


def test_bucketing_pads_less_than_the_plain_sampler_on_mixed_lengths(tmp_path):
    """Short questions and long sentences shuffled together: the plain sampler pads short items to long ones,
    dynamic bucketing batches similar lengths (durations only; no audio is read)."""
    import random

    rng = random.Random(0)
    def cut(i: int) -> MonoCut:  # a recording that is never read: the sampler needs only its duration
        duration = round(rng.choice([2.0, 8.0]) + 0.3 * rng.random(), 2)
        rec = Recording(id=f"r{i}", sources=[AudioSource(type="file", channels=[0], source=f"/none/{i}.wav")],
                        sampling_rate=16000, num_samples=int(duration * 16000), duration=duration)
        return MonoCut(id=f"c{i}", start=0.0, duration=duration, channel=0, recording=rec)

    cuts = CutSet.from_cuts(cut(i) for i in range(400))
    cuts.to_file(tmp_path / "cuts.jsonl.gz")
    out = padding.main(["--config", "aura_qa", "--cuts", str(tmp_path / "cuts.jsonl.gz"), "--batches", "30",
                        "--num-buckets", "10", "--out", str(tmp_path / "out")])
    plain, bucketed = out["runs"]["no_bucketing"], out["runs"]["bucketing"]
    assert plain["batches"] == bucketed["batches"] == 30
    assert plain["padded_fraction"] > 0.2 and bucketed["padded_fraction"] < 0.5 * plain["padded_fraction"]
    assert json.loads((tmp_path / "out" / "padding.json").read_text())["padded_fraction_ratio"] < 0.5
    assert "| bucketing | 30 |" in (tmp_path / "out" / "padding.md").read_text()
