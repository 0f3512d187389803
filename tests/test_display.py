"""Results that display themselves: run summaries, confirm reports and the per-label summary
as tables (HTML in a notebook, text in a terminal, pandas on request), the report inline,
and optuna-dashboard in the background on a free port."""

from __future__ import annotations

import html
import json
import urllib.request

import pytest

import mnist_search as ms

from helpers import write_study

STUDY = """
trials = 5
[sampler]
kind = "random"
[fixed]
dataset = DATA
epochs = 2
hidden = [16]
[search]
lr = { low = 0.01, high = 0.1, log = true }
momentum = { low = 0.0, high = 0.9 }
[[reference]]
label = "base"
lr = 0.05
momentum = 0.0
notebook_accuracy = 90.0
"""


@pytest.fixture(scope="module")
def shown(tmp_path_factory, synthetic_dir):
    tmp = tmp_path_factory.mktemp("display")
    spec = ms.load_spec(write_study(tmp / "d.toml", synthetic_dir, STUDY))
    url = f"sqlite:///{tmp / 'd.db'}"
    run = ms.run_study(spec, storage=url, replicates=2, progress=False)
    return url, run, tmp


def test_a_run_summary_is_a_table(shown):
    _, run, _ = shown
    html = run._repr_html_()
    assert html.startswith("<table>") and "<th>finished</th>" in html
    assert "<td>d</td>" in html and "<td>6/6</td>" in html  # the study, and its count
    frame = run.to_pandas()
    # trials = 5 with replicates = 2: the 3 sampled places become 2 whole configs of 2
    assert frame.loc[0, "finished"] == "6/6" and frame.loc[0, "complete"] == 6
    assert "RunSummary(" in repr(run)  # the dataclass's repr stays for the terminal


def test_the_per_label_summary_shows_itself_and_gives_pandas(shown):
    url, _, _ = shown
    table = ms.summary("d", url)
    frame = table.to_pandas()
    assert list(frame.columns) == ["label", "n", "mean", "std", "ci95", "notebook"]
    assert frame.loc[0, "label"] == "base" and frame.loc[0, "n"] == 2
    assert frame.loc[0, "notebook"] == 90.0
    html = table._repr_html_()
    # the label, then the two sampled configs under their values: a header and 3 rows
    assert html.count("<tr>") == 4 and "<th>ci95</th>" in html and "base" in html
    assert list(frame["n"]) == [2, 2, 2]
    text = repr(table).splitlines()
    assert text[1].split()[:4] == ["label", "n", "mean", "std"] and text[2].startswith("base")


def test_the_report_inline_and_written(shown):
    url, _, tmp = shown
    view = ms.report("d", storage=url)
    assert view.figures and all(f.png[:8] == b"\x89PNG\r\n\x1a\n" for f in view.figures)
    assert view.html.count("data:image/png;base64,") == len(view.figures)
    assert view._repr_html_() == view.html and view.written is None
    written = ms.report("d", tmp / "rep", storage=url)
    assert (tmp / "rep" / "report.html").is_file() and written.written == tmp / "rep"


def test_the_dashboard_runs_in_the_background_until_stopped(shown):
    url, _, _ = shown
    dash = ms.dashboard(url)
    try:
        assert dash.port > 0 and dash.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"http://127.0.0.1:{dash.port}/api/studies",
                                    timeout=10) as r:
            names = [s["study_name"] for s in json.loads(r.read())["study_summaries"]]
        assert "d" in names
        assert dash.url in dash._repr_html_()
    finally:
        dash.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{dash.port}/api/studies", timeout=2)


def test_a_confirm_report_is_a_table(shown):
    url, _, _ = shown
    from mnist_search.results.rows import load_study

    report = ms.confirm(load_study("d", url), top=2, seeds=2, device="cpu")
    frame = report.to_pandas()
    # the two configs differ in what the study searched: lr and momentum, shown beside them
    assert list(frame.columns) == ["trial", "lr", "momentum", "recorded", "mean", "low",
                                   "high", "n"]
    for c in report.configs:
        trial = load_study("d", url).trials[c.trial]
        assert c.params == {k: trial.user_attrs["config"][k] for k in ("lr", "momentum")}
    assert len(frame) == 2 and (frame["n"] == 2).all()
    assert html.escape(report.verdict) in report._repr_html_()


def test_confirm_shows_its_progress_as_a_run_does_and_nothing_when_told_not_to(shown,
                                                                              capsys):
    import re

    url, _, _ = shown
    from mnist_search.results.rows import load_study

    ms.confirm(load_study("d", url), top=1, seeds=3, device="cpu", progress=True)
    bar = capsys.readouterr().err
    # the confirm study's trials, replicates an earlier confirm stored counted as finished
    done = re.findall(r"d-confirm: 100%\|[^|]*\| (\d+)/(\d+)", bar)
    assert done and done[-1][0] == done[-1][1], bar[-400:]
    ms.confirm(load_study("d", url), top=1, seeds=3, device="cpu", progress=False)
    assert capsys.readouterr().err == ""
