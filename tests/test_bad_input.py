"""Bad input at every user-facing entry point: a clear error naming the item, line or file, or the
correct result; nothing already written is lost."""
import gc
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from nemo_aura import AuRAModel
from nemo_aura.infer import main as infer_main
from nemo_aura.testing import synth_wave

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(tiny_llm_dir):
    cfg = OmegaConf.load(ROOT / "conf" / "model" / "aura_tiny.yaml")
    cfg.student.pretrained_path = str(tiny_llm_dir)
    torch.manual_seed(0)
    return AuRAModel(cfg).eval()


@pytest.fixture(scope="module")
def nemo_path(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "free.nemo"
    model.export_encoder_free(str(path))
    return path


@pytest.fixture
def nemo_warnings(monkeypatch):
    """What reaches NeMo's logger as warnings (NeMo's logger does not show Python UserWarnings)."""
    from nemo.utils import logging

    seen = []
    monkeypatch.setattr(logging, "warning", lambda message, *a, **k: seen.append(str(message)))
    return seen


# ---------------------------------------------------------------------------------------------- audio
def test_nan_or_inf_samples_are_an_error_naming_the_item(model):
    good, bad = synth_wave(0, 1.0), synth_wave(1, 1.0)
    bad[100] = np.nan
    with pytest.raises(ValueError, match=r"audio\[1\]: the array holds 1 NaN/inf sample"):
        model.generate([good, bad], max_new_tokens=2)
    batch = torch.from_numpy(np.stack([good, good]))
    batch[0, 5] = float("inf")
    with pytest.raises(ValueError, match=r"audio\[0\]: the tensor holds 1 NaN/inf"):
        model.generate(batch, max_new_tokens=2)
    with pytest.raises(ValueError, match=r"audio\[0\]: the (array|tensor) holds 1 NaN/inf"):  # NeMo makes it a tensor
        model.transcribe([bad], verbose=False, max_new_tokens=2)


def test_one_layout_rule_for_arrays_and_tensors(model, tmp_path):
    left, right = synth_wave(0, 1.0), synth_wave(1, 1.0)
    mono = torch.from_numpy((left + right) / 2)
    channels_last = np.stack([left, right], axis=1)  # (T, C): what soundfile returns
    for item in (channels_last, channels_last.T.copy(), torch.from_numpy(channels_last)):
        assert torch.allclose(model._waveforms([item], None, None)[0], mono, atol=1e-6)
    sf.write(tmp_path / "stereo.wav", channels_last, 16000)
    assert torch.allclose(model._waveforms([str(tmp_path / "stereo.wav")], None, None)[0], mono, atol=1e-4)
    with pytest.raises(ValueError, match=r"audio\[0\]: the array has shape \(10, 12\).*either axis could be the channels"):
        model._waveforms([np.zeros((10, 12), dtype=np.float32)], None, None)
    with pytest.raises(ValueError, match=r"either axis could be the channels"):
        model._waveforms([np.zeros((200, 16000), dtype=np.float32)], None, None)  # a batch inside a list
    # A 2-D array or tensor given as `audio` itself is a (B, T) batch, in generate and in transcribe alike.
    rows = np.stack([left, right])
    expected = model.generate_ids([left, right], task="asr", max_new_tokens=3)
    assert model.generate_ids(rows, task="asr", max_new_tokens=3) == expected
    assert model.generate_ids(torch.from_numpy(rows), task="asr", max_new_tokens=3) == expected
    hyps = model.transcribe(torch.from_numpy(rows), verbose=False, max_new_tokens=3)
    assert [h.y_sequence.tolist() for h in hyps] == expected
    for entry in (model.generate, lambda a, **k: model.transcribe(a, verbose=False, **k)):
        with pytest.raises(ValueError, match=r"looks like one \(samples, channels\) recording"):
            entry(channels_last, max_new_tokens=2)


def test_arrays_at_another_rate_warn_where_the_length_says_so(model, nemo_warnings):
    wave44 = np.resize(synth_wave(0, 1.0), 44100)  # 1 s at 44.1 kHz, given without sample_rate=
    model._waveforms([wave44], None, None)
    assert any("audio[0]" in w and "exactly 1 s at 44100 Hz" in w and "sample_rate=" in w for w in nemo_warnings)
    nemo_warnings.clear()
    model._waveforms([wave44], None, 44100)
    model._waveforms([synth_wave(0, 1.5)], None, None)  # 1.5 s at 16 kHz: plausible
    assert nemo_warnings == []
    model._waveforms([np.ones(400, dtype=np.float32)], None, None)
    assert any("under 0.1 s" in w for w in nemo_warnings)
    assert "sample_rate=" in AuRAModel.generate.__doc__ and "too fast or too slow" in AuRAModel.generate.__doc__


def test_stereo_downmix_warning_reaches_nemo_logging(model, tmp_path, nemo_warnings):
    sf.write(tmp_path / "stereo.wav", np.stack([synth_wave(0, 1.0), synth_wave(1, 1.0)], axis=1), 16000)
    model.generate([str(tmp_path / "stereo.wav")], max_new_tokens=2)
    assert any("has 2 channels; downmixing to mono" in w for w in nemo_warnings)


def test_batch_size_zero_is_an_error_in_generate_and_transcribe(model):
    wave = synth_wave(0, 1.0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        model.generate([wave], batch_size=0, max_new_tokens=2)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        model.transcribe([wave], batch_size=0, verbose=False)


def test_a_directory_passed_as_audio_is_called_a_directory(model, tmp_path):
    with pytest.raises(IsADirectoryError, match=r"audio\[0\]: audio path .* is a directory"):
        model.generate([str(tmp_path)], max_new_tokens=2)


# ---------------------------------------------------------------------------------- manifests, infer
def write_lines(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def infer(*args) -> int:
    return infer_main([str(a) for a in args])


def test_infer_reports_bad_lines_per_line_and_writes_lines_back_unchanged(nemo_path, tmp_path, capsys):
    sf.write(tmp_path / "a.wav", synth_wave(0, 1.0), 16000)
    lines = [{"audio_filepath": "a.wav", "id": 1, "meta": {"speaker": "x"}}, "null", "[1, 2]",
             {"audio_filepath": 5}, {"audio_filepath": None}, {"audio_filepath": str(tmp_path)}]
    manifest = write_lines(tmp_path / "in.json", lines)
    out = tmp_path / "out.json"
    assert infer(f"model_path={nemo_path}", f"manifest={manifest}", f"output={out}", "task=asr", "max_new_tokens=2") == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 6
    assert {k: v for k, v in rows[0].items() if k != "pred_text"} == lines[0]  # audio_filepath as written
    assert "in.json:2: a manifest line must be a JSON object, got null" in rows[1]["error"] and rows[1]["raw"] == "null"
    assert "in.json:3: a manifest line must be a JSON object, got an array" in rows[2]["error"]
    assert "in.json:4: audio_filepath must be a path" in rows[3]["error"] and rows[3]["audio_filepath"] == 5
    assert "in.json:5: audio_filepath must be a path" in rows[4]["error"]
    assert "in.json:6" in rows[5]["error"] and "is a directory" in rows[5]["error"]
    assert "6 items, 1 ok, 5 failed" in capsys.readouterr().out


def test_infer_checks_arguments_and_output_before_loading_the_model(nemo_path, tmp_path, monkeypatch, capsys):
    import nemo_aura.infer as infer_module

    def no_model(path):
        raise AssertionError("the model was loaded before the arguments were checked")

    sf.write(tmp_path / "a.wav", synth_wave(0, 1.0), 16000)
    manifest = write_lines(tmp_path / "in.json", [{"audio_filepath": "a.wav"}])
    before = manifest.read_text()
    monkeypatch.setattr(infer_module, "load_model", no_model)
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "empty.json").write_text("\n")
    cases = {
        f"output={manifest}": "is the manifest itself",
        f"output={tmp_path / '.' / 'in.json'}": "is the manifest itself",
        f"output={tmp_path}": "is a directory",
        f"output={tmp_path / 'a_file' / 'out.json'}": "is not a directory",
        "batch_size=0": "batch_size must be a positive integer, got 0",
        "max_new_tokens=0": "max_new_tokens must be a positive integer",
        "task=translate": "task must be one of",
        "no_such_key=1": "Key 'no_such_key' not in 'InferConfig'",
        "batch_size=many": "batch_size: Value 'many' of type 'str' could not be converted to Integer",
    }
    for arg, message in cases.items():
        args = [f"model_path={nemo_path}", f"manifest={manifest}", f"output={tmp_path / 'out.json'}", arg]
        assert infer(*args) == 2, arg
        assert message in capsys.readouterr().err, arg
    assert manifest.read_text() == before and not (tmp_path / "out.json").exists()
    assert infer(f"model_path={nemo_path}", f"manifest={tmp_path / 'empty.json'}", f"output={tmp_path / 'o.json'}") == 2
    assert "has no lines (an empty manifest)" in capsys.readouterr().err
    monkeypatch.undo()
    (tmp_path / "cut.nemo").write_bytes(Path(nemo_path).read_bytes()[:3000])  # a corrupt model: named
    assert infer(f"model_path={tmp_path / 'cut.nemo'}", f"manifest={manifest}", f"output={tmp_path / 'o.json'}") == 2
    assert "cut.nemo: not a" in capsys.readouterr().err


def test_transcribe_manifests_empty_bad_lines_and_relative_paths(model, tmp_path, monkeypatch):
    (tmp_path / "empty.json").write_text("")
    assert model.transcribe(str(tmp_path / "empty.json"), verbose=False) == []
    (tmp_path / "sub").mkdir()
    sf.write(tmp_path / "sub" / "a.wav", synth_wave(0, 1.0), 16000)
    bad = write_lines(tmp_path / "sub" / "bad.json", [{"audio_filepath": "a.wav"}, "[1]"])
    with pytest.raises(ValueError, match=r"bad.json:2: a manifest line must be a JSON object"):
        model.transcribe(str(bad), verbose=False)
    write_lines(bad, [{"audio_filepath": "a.wav"}, {"audio_filepath": 3}])
    with pytest.raises(ValueError, match=r"bad.json:2: audio_filepath must be a path"):
        model.transcribe(str(bad), verbose=False)
    write_lines(bad, [{"audio_filepath": "a.wav"}, {"audio_filepath": "gone.wav"}])
    with pytest.raises(FileNotFoundError, match=r"bad.json:2: audio file .*sub/gone.wav"):
        model.transcribe(str(bad), verbose=False, max_new_tokens=2)
    # relative to the manifest's folder, not the working directory, in transcribe and in infer alike
    manifest = write_lines(tmp_path / "sub" / "m.json", [{"audio_filepath": "a.wav"}])
    monkeypatch.chdir(tmp_path)
    expected = model.generate_ids([str(tmp_path / "sub" / "a.wav")], task="asr", max_new_tokens=3)
    assert [h.y_sequence.tolist() for h in model.transcribe(str(manifest), verbose=False, max_new_tokens=3)] == expected
    from nemo_aura.infer import InferConfig, predict, read_manifest

    items = read_manifest(manifest, "asr")
    predict(model, items, InferConfig(model_path="-", manifest=str(manifest), output="-", task="asr", max_new_tokens=3))
    assert items[0].added["pred_text"] == model.decode_ids(expected[0])


# ------------------------------------------------------------------------------------------ stage 6
def test_stage6_items_duplicate_ids_empty_gold_and_non_objects(tmp_path):
    from nemo_aura.scoring.items import load_items

    line = {"audio_filepath": "a.wav", "question": "q?", "answers": ["x"]}
    cases = {
        "dup.json": ([{**line, "id": "q1"}, {**line, "id": "q1"}], r"id 'q1' is used by items 1 and 2"),
        "empty_gold.json": ([{**line, "answers": []}], r"empty_gold.json:1: no gold answers"),
        "blank_gold.json": ([{**line, "answers": ["x", " "]}], r"blank_gold.json:1: gold answers must be non-empty"),
        "null.json": ([line, "null"], r"null.json:2: a manifest line must be a JSON object"),
        "path.json": ([{**line, "audio_filepath": ["a.wav"]}], r"path.json:1: audio_filepath must be a path"),
    }
    for name, (lines, message) in cases.items():
        with pytest.raises(ValueError, match=message):
            load_items(write_lines(tmp_path / name, lines))


class _Answerer:
    """A stage-6 system that answers "yes", except for audio it cannot take (longer than ``limit`` samples)."""

    uses_audio, sample_rate = True, 16000

    def __init__(self, limit: int):
        self.limit = limit

    def answer(self, item, audio, max_new_tokens):
        if len(audio) > self.limit:
            raise ValueError(f"audio longer than {self.limit} samples")
        return {"answer": "yes", "answer_tokens": min(max_new_tokens, 2)}


def test_stage6_worker_goes_on_past_a_bad_item(tmp_path):
    from types import SimpleNamespace

    from score_benchmark import score_set
    from nemo_aura.scoring.items import QAItem
    from benchmark_worker import answer_other_questions, answer_set, load_audios

    for i, secs in enumerate((1.0, 3.0, 1.0, 1.0)):
        sf.write(tmp_path / f"{i}.wav", synth_wave(i, secs), 16000)
    items = [QAItem(id=f"q{i}", question="q", answers=["yes"], audio_path=str(tmp_path / f"{i}.wav")) for i in range(4)]
    items.append(QAItem(id="q4", question="q", answers=["yes"], audio_path=str(tmp_path / "missing.wav")))
    system = _Answerer(limit=2 * 16000)
    audios, errors = load_audios(items, system.sample_rate)
    assert list(errors) == [4] and "missing.wav" in errors[4]
    rows, summary = answer_set(system, items, audios, SimpleNamespace(warmup=3, max_new_tokens=4), True, errors)
    assert [("error" in r) for r in rows] == [False, True, False, False, True]
    assert "longer than 32000 samples" in rows[1]["error"] and summary["answered"] == 3
    assert [f["id"] for f in summary["failed"]] == ["q1", "q4"] and summary["latency_median_s"] > 0
    answer_other_questions(system, items, audios, rows, 4)
    assert ["other_question_answer" in r for r in rows] == [False, False, True, False, False]  # partners that failed
    scores = score_set(rows)
    assert scores["answered"] == 3 and scores["failed_ids"] == ["q1", "q4"] and scores["f1"] == 1.0
    assert scores["f1_other_question"] == 1.0  # over the one item with a control


def test_hearing_scorer_goes_on_past_a_bad_item(tmp_path):
    """Stage 6b: a missing or over-long audio (own or as another item's control) is that item's error, listed in
    ``failed_ids`` and the Markdown; the other items are scored."""
    from score_hearing import score_system, summarize, to_markdown
    from nemo_aura.scoring.items import QAItem

    class Hearer(_Answerer):
        def transcribe(self, audio, context=None):
            return "q"

    for i, secs in enumerate((1.0, 3.0, 1.0, 1.0)):
        sf.write(tmp_path / f"{i}.wav", synth_wave(i, secs), 16000)
    items = [QAItem(id=f"q{i}", question="q", answers=["yes"], audio_path=str(tmp_path / f"{i}.wav")) for i in range(4)]
    items.append(QAItem(id="q4", question="q", answers=["yes"], audio_path=str(tmp_path / "missing.wav")))
    controls = ["q2", "q0", "q0", "q4", "q0"]  # q3's control is the missing audio
    rows = score_system(Hearer(limit=2 * 16000), items, controls, 4)["rows"]
    errors = {r["id"]: r["error"] for r in rows if "error" in r}
    assert list(errors) == ["q1", "q3", "q4"]
    assert "longer than 32000 samples" in errors["q1"] and "control q4" in errors["q3"] and "missing.wav" in errors["q4"]
    out = summarize(rows)
    assert out["items"] == 2 and out["failed_ids"] == ["q1", "q3", "q4"] and out["f1"] == 1.0 and out["wer"] == 0.0
    md = to_markdown({"sets": {"mf": {"aura": out}}, "paths": {}})
    assert "aura on mf: 3 (q1, q3, q4)" in md
    with pytest.raises(SystemExit, match="no item was answered"):
        summarize([r for r in rows if "error" in r])


# ------------------------------------------------------------------------------------- temp folders
def test_model_builds_leave_no_temporary_folders(tiny_cfg, tmp_path, monkeypatch):
    own_tmp = tmp_path / "tmp"
    own_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(own_tmp))
    count = lambda: len(list(own_tmp.glob("nemo_aura_*")))  # noqa: E731
    built = AuRAModel(tiny_cfg)
    assert count() == 1  # the LLM skeleton it saves into its .nemo
    built.save_to(str(tmp_path / "m.nemo"))
    restored = AuRAModel.restore_from(str(tmp_path / "m.nemo"))
    assert count() == 2
    del built, restored
    gc.collect()
    assert count() == 0


def test_a_cut_nemo_never_takes_the_name_a_rerun_skips_on(nemo_path, tmp_path):
    """Stages publish a .nemo (train's save_nemo, stage 4's export, merge_lora, the bridge) through
    write_nemo_atomic: a writer that leaves a cut archive is an error naming it, and the final name stays absent."""
    from nemo_aura.parts.files import write_nemo_atomic

    data = Path(nemo_path).read_bytes()
    out = tmp_path / "stage3" / "model.nemo"
    with pytest.raises(ValueError, match=r"not a (readable )?\.nemo model"):
        write_nemo_atomic(out, lambda p: Path(p).write_bytes(data[: len(data) // 2]))
    assert not out.exists() and list(out.parent.iterdir()) == []
    write_nemo_atomic(out, lambda p: Path(p).write_bytes(data))
    assert out.read_bytes() == data


def test_a_truncated_nemo_is_named_not_taken_for_a_model(nemo_path, tmp_path):
    """What a killed stage leaves (a .nemo cut in its weights): restore_from and infer name the file."""
    from nemo_aura.parts.restore import nemo_model_target

    data = Path(nemo_path).read_bytes()
    for fraction in (0.3, 0.6, 0.95):
        cut = tmp_path / f"cut{int(fraction * 100)}.nemo"
        cut.write_bytes(data[: int(len(data) * fraction)])
        with pytest.raises(ValueError, match=rf"{cut.name}: not a (readable )?\.nemo model"):
            AuRAModel.restore_from(str(cut))
    assert nemo_model_target(str(nemo_path)).endswith("AuRAModel")  # a whole one is read as before
