"""``make bench``'s summary table reads what the benches left and puts each figure next to its
target; a bench that left nothing shows as not measured and fails the summary."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import summary  # noqa: E402
from bench_freshness import percentile  # noqa: E402


def write_results(out: Path, *, ratio: float, p99: float, per_key: int) -> None:
    (out / "e2e.json").write_text(json.dumps({
        "ratio": ratio, "target": 0.6, "events": 100_000,
        "pipeline": {"rate": 21_000.0}, "baseline": {"rate": 35_000.0}}))
    (out / "freshness.json").write_text(json.dumps({
        "p50_s": 0.6, "p99_s": p99, "max_s": p99 + 0.2, "achieved_rate": 5_000, "seconds": 300,
        "missing": 0, "met": p99 < 2, "full_size_run": True}))
    # bench_correlate.py --json prints its sections first, the JSON object last
    (out / "correlate.out").write_text("reducer alone\n  events/s 120000\n" + json.dumps({
        "events_per_s": 120_000, "target_events_per_s": 50_000, "state_bytes_per_key": per_key,
        "encoded_bytes_per_key": 200, "final_live_keys": 5_000}) + "\n")


def test_each_figure_gets_its_target_and_verdict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_results(tmp_path, ratio=0.63, p99=2.4, per_key=280)
    (tmp_path / "rules.out").write_text(json.dumps({"rules": 200, "events_per_s": 9_000,
                                                    "target_events_per_s": 13_000}))
    verdicts = {name: met for name, _, _, met in summary.rows(tmp_path)}
    assert verdicts["worker / raw baseline throughput"] is True
    assert verdicts["freshness p99 (produced -> queryable)"] is False
    assert verdicts["correlation state per live key"] is True
    assert verdicts["rules evaluation (step, 200 rules)"] is False  # below the worker's 21,000
    assert summary.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "0.63" in out and "2.40 s" in out and "280 B" in out and "NOT met" in out


def test_missing_results_are_not_measured_and_fail(tmp_path: Path) -> None:
    write_results(tmp_path, ratio=0.5, p99=1.0, per_key=800)
    (tmp_path / "freshness.json").unlink()
    verdicts = {name: met for name, _, _, met in summary.rows(tmp_path)}
    assert verdicts["freshness p99 (produced -> queryable)"] is None
    assert verdicts["worker / raw baseline throughput"] is False
    assert summary.main([str(tmp_path)]) == 1


def test_percentile_is_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([3.0], 0.99) == 3.0
