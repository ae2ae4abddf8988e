"""recipes/aura/local/show_results.py: a run's reports and plots snapshotted beside the recipe."""
import importlib.util

import pytest

from conftest import ROOT


def load_show_results():
    spec = importlib.util.spec_from_file_location("show_results", ROOT / "recipes/aura/local/show_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_snapshot_copies_reports_and_points_plots_at_the_copies(tmp_path):
    show = load_show_results()
    stage6 = tmp_path / "exp" / "stage6"
    stage6.mkdir(parents=True)
    (stage6 / "results.md").write_text("# Scoring\n\n## Targets\n\n| a |\n\n![latency](latency.png)\n")
    (stage6 / "results.json").write_text("{}")
    for png in ("latency.png", "memory.png"):
        (stage6 / png).write_bytes(b"\x89PNG")
    show.main(["--exp", str(tmp_path / "exp"), "--out", str(tmp_path / "snap")])
    text = (tmp_path / "snap" / "RESULTS.md").read_text()
    assert "## Stage 6" in text and "Stage 7" not in text  # only the reports that exist
    assert "# Scoring" not in text and "### Targets" in text  # the report's headings nest under the section
    assert "](stage6/latency.png)" in text and "![memory](stage6/memory.png)" in text  # linked and unlinked plots
    assert sorted(p.name for p in (tmp_path / "snap" / "stage6").iterdir()) == [
        "latency.png", "memory.png", "results.json", "results.md"]
    probe = tmp_path / "exp" / "ablation" / "probe"  # stage 7's probe joins the snapshot when it exists
    probe.mkdir(parents=True)
    (probe / "results.md").write_text("# Linear CTC probe\n\n| source |\n\n![probe WER per source](probe.png)\n")
    (probe / "probe.png").write_bytes(b"\x89PNG")
    show.main(["--exp", str(tmp_path / "exp"), "--out", str(tmp_path / "snap")])
    text = (tmp_path / "snap" / "RESULTS.md").read_text()
    assert "## Stage 7: linear CTC probe" in text and "](ablation/probe/probe.png)" in text
    assert (tmp_path / "snap" / "ablation" / "probe" / "probe.png").is_file()
    # A later run with the probe only (e.g. a new machine without stage 6) refreshes the probe, keeps stage 6's tables.
    (probe / "results.md").write_text("# Linear CTC probe\n\n| source | rerun |\n")
    (stage6 / "results.md").unlink()
    show.main(["--exp", str(tmp_path / "exp"), "--out", str(tmp_path / "snap")])
    text = (tmp_path / "snap" / "RESULTS.md").read_text()
    assert "## Stage 6: AuRA vs bridge vs cascade vs text topline (kept from an earlier snapshot)" in text
    assert "### Targets" in text and "](stage6/latency.png)" in text  # its tables and plots still shown
    assert "| source | rerun |" in text and "Kept from an earlier snapshot (this run has no such report): stage6." in text
    assert "## Stage 7: linear CTC probe of the distilled layers\n" in text  # refreshed, not marked kept


def test_snapshot_of_a_run_without_reports_says_what_is_missing(tmp_path):
    with pytest.raises(SystemExit, match="no results.md under .*run stage 6 or 7 first"):
        load_show_results().main(["--exp", str(tmp_path), "--out", str(tmp_path / "snap")])


def test_reading_runs_are_compared_by_their_validation_rows(tmp_path):
    """compare_reading_runs: the validation rows of each run's CSV log, the end-of-fit repeat kept once, JSON +
    Markdown + plot; a directory without a log is a clear error."""
    import compare_reading_runs

    def log(name, rows):
        d = tmp_path / name / "csv"
        d.mkdir(parents=True)
        lines = ["epoch,loss,step,train_step_timing in s,val_loss"] + rows
        (d / "metrics.csv").write_text("\n".join(lines) + "\n")
        return tmp_path / name

    a = log("a", ["0,,0,,9.0", "0,5.0,4,1.0,", "0,,249,,5.0", "0,,499,,4.0", "0,,500,,4.0"])
    b = log("b", ["0,,249,,6.0"])
    runs = compare_reading_runs.main(["--run", f"first={a}", "--run", f"second={b}", "--out", str(tmp_path / "out")])
    assert runs["first"]["points"] == [(1, 9.0), (250, 5.0), (500, 4.0)] and runs["second"]["points"] == [(250, 6.0)]
    md = (tmp_path / "out" / "reading_runs.md").read_text()
    assert "| first | 9.000 | 5.000 | 4.000 |" in md and "| second |  | 6.000 |  |" in md
    assert (tmp_path / "out" / "reading_runs.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="no csv/metrics.csv"):
        compare_reading_runs.main(["--run", f"x={tmp_path / 'nothing'}", "--out", str(tmp_path / "o2")])
    more = compare_reading_runs.main(["--run", f"first={a}", "--run", f"more={b}", "--continues", "more=500",
                                      "--out", str(tmp_path / "o3")])
    assert more["more"]["points"] == [(750, 6.0)] and more["first"]["points"][-1] == (500, 4.0)
    with pytest.raises(SystemExit, match="expected NAME=STEPS"):
        compare_reading_runs.main(["--run", f"first={a}", "--continues", "other=5", "--out", str(tmp_path / "o4")])
