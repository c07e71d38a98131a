"""The instruction budget: calls and REGISTERs may not get more than 10 %
dearer than bench/instructions-baseline.json says, counted by callgrind.

A count, not a time: it repeats to within 0.01 % on a loaded machine. When a
change makes the proxy legitimately dearer (or cheaper), re-measure with
``python bench/instructions.py --write-baseline`` and commit the new file
with a line in docs/benchmarks.md saying why.
"""

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_instructions",
                                                  ROOT / "bench" / "instructions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


instructions = _load_bench()


def test_the_replay_completes_calls_and_registers_through_the_shipped_route():
    """Every step of 40 replayed calls and REGISTERs gets the message a working
    proxy sends (the replay raises otherwise), timers firing between them."""
    calls = instructions.CallReplay()
    for n in range(1, 41):
        calls.one(n)
    assert calls.core.stats["rcv_request", "BYE"] == 40
    assert calls.core.stats["fwd_replies"] == 40 * 3
    registers = instructions.RegisterReplay()
    for n in range(1, 41):
        registers.one(n)
    assert registers.core.stats["snd_reply", 200] == 40


def test_a_broken_reply_stops_the_replay():
    """A proxy that sends something else than the call needs is an error,
    not a count."""
    with pytest.raises(instructions.BenchError):
        instructions._expect([], [(5070, b"SIP/2.0 100")])


def test_over_budget_names_the_scenarios_more_than_ten_percent_dearer():
    """Ten percent over the baseline is allowed, more is reported."""
    base = {"call": 1000, "register": 100}
    assert instructions.over_budget({"call": 1100, "register": 100}, base) == []
    assert instructions.over_budget({"call": 1101, "register": 100}, base) == [("call", 1101, 1100)]


def test_instructions_per_call_and_register_within_ten_percent_of_the_baseline():
    """The shipped route's marginal instructions per call and per REGISTER,
    counted by callgrind, stay within 10 % of the committed baseline."""
    if shutil.which("valgrind") is None:
        if os.environ.get("CI"):
            pytest.fail(".ci/run installs valgrind: the instruction budget cannot be checked")
        pytest.skip("VALGRIND IS NOT INSTALLED: the instruction budget (bench/instructions.py) "
                    "was NOT checked; apt-get install valgrind")
    baseline = json.loads((ROOT / "bench" / "instructions-baseline.json").read_text())
    measured = instructions.measure(sorted(baseline))
    print(f"instructions per replay: {measured}, baseline {baseline}")
    assert instructions.over_budget(measured, baseline) == [], \
        f"more than 10 % over bench/instructions-baseline.json: measured {measured}, " \
        f"baseline {baseline}"
