"""The benchmark's machinery works: one quick round, no timing assertions.

The benchmark itself (``sudo make bench``) takes minutes; here it runs its
quickest scenario once (``start``, one round, no warm-up) into a temporary
results directory, and the test checks that every peer got a row, that
minidocker and the kernel floor were really measured, that the report was
written, and that the run left nothing behind.
"""

import glob
import importlib.util
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "bench", "run.py")

_spec = importlib.util.spec_from_file_location("minidocker_bench", BENCH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def netavark_chains():
    return bench.netavark_chains()


@pytest.mark.ch1
def test_one_round_of_the_start_scenario_measures_every_peer(tmp_path):
    before_roots = set(glob.glob("/tmp/minidocker-bench-*"))
    before_chains = netavark_chains()
    result = subprocess.run([sys.executable, BENCH, "start", "--scale", "0.01",
                             "--results", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]

    with open(tmp_path / "results.json") as handle:
        report = json.load(handle)
    rows = {row["name"]: row for row in report["scenarios"]["start"]}
    assert set(rows) == {"minidocker", "runc", "crun", "podman", "kernel floor",
                         "python3.12 -c pass"}
    for name in ("minidocker", "kernel floor", "python3.12 -c pass"):
        assert len(rows[name]["seconds"]) == 1, rows[name]
        assert 0 < rows[name]["seconds"][0] < 30, rows[name]
    for name in ("runc", "crun", "podman"):
        # A peer is measured or says why not: never silently dropped.
        assert rows[name]["seconds"] or rows[name]["note"], rows[name]
    assert report["machine"]["kernel"] == os.uname().release

    markdown = (tmp_path / "results.md").read_text()
    assert "| minidocker |" in markdown and "## Targets (issue 9)" in markdown
    assert "≤ 2.0x runc" in markdown

    assert set(glob.glob("/tmp/minidocker-bench-*")) == before_roots
    assert netavark_chains() <= before_chains


@pytest.mark.ch1
def test_rounds_are_timed_after_the_warm_up_and_prepare_runs_off_the_clock():
    calls = []
    seconds = bench.time_rounds(lambda prepared: calls.append(("run", prepared)), rounds=3,
                                warmup=2, prepare=lambda index: index,
                                clean=lambda prepared: calls.append(("clean", prepared)))
    assert len(seconds) == 3
    assert calls == [(step, index) for index in range(5) for step in ("run", "clean")]


@pytest.mark.ch1
def test_a_missing_peer_becomes_a_row_that_says_so():
    row = bench.measure("nothing", lambda _: bench.installed("no-such-runtime-here"), 1, 0)
    assert row.seconds == [] and "not installed" in row.note
    failing = bench.measure("false", lambda _: bench.command(["false"]), 1, 0)
    assert failing.seconds == [] and failing.note.startswith("failed:")


@pytest.mark.ch1
def test_peers_measured_in_turns_alternate_round_by_round_in_reversing_order():
    calls = []

    def peer(name):
        return (name, lambda _: calls.append(name), f"note of {name}")

    absent = bench.Row("absent", note="not installed")
    rows = bench.measure_in_turns([peer("a"), absent, peer("b"),
                                   ("broken", lambda _: bench.command(["false"]), "")],
                                  rounds=3, warmup=1)
    # One warm-up and three timed rounds, in turns, the order reversed every round.
    assert calls == ["a", "b", "b", "a"] * 2
    by_name = {row.name: row for row in rows}
    assert [row.name for row in rows] == ["a", "absent", "b", "broken"]
    assert len(by_name["a"].seconds) == 3 and by_name["a"].note == "note of a"
    assert by_name["absent"] is absent
    assert by_name["broken"].seconds == [] and by_name["broken"].note.startswith("failed:")


@pytest.mark.ch1
def test_a_missing_engine_in_the_detached_scenario_gives_three_rows_that_say_why():
    absent = bench.DetachedPeer.missing("podman", "conmon", "not installed")
    bench.start_in_turns([absent], type("Bench", (), {"rounds": lambda self, _: (1, 0)})())
    rows = absent.rows()
    assert [(row.name, row.kind) for row in rows] == [
        ("podman run -d x50", "start"), ("podman conmon PSS", "memory"), ("podman ps", "ps")]
    assert all(row.note == "not installed" and not row.seconds for row in rows)
