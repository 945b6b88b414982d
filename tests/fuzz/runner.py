"""Run every fuzz target for N inputs and print, per target, inputs tried and crashes.

    python tests/fuzz/runner.py [--inputs 100000] [--only NAME]

Exit status 1 when any target crashed. ``make fuzz`` runs this with 100,000 inputs per target;
``tests/fuzz/test_fuzz.py`` runs the same targets with 1,000 each inside ``make test``.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from targets import Target, all_targets  # noqa: E402


@dataclass
class Outcome:
    name: str
    tried: int = 0
    crashes: int = 0
    first: list[str] = field(default_factory=list)
    seconds: float = 0.0


def fuzz(target: Target, inputs: int) -> Outcome:
    """Feed ``inputs`` drawn inputs to ``target``; count (never stop at) crashes."""
    out = Outcome(target.name)
    started = time.monotonic()

    # Generation only: crashes are counted, not shrunk (a crash's input is printed as drawn).
    @settings(max_examples=inputs, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(target.inputs)
    def run(value: Any) -> None:
        out.tried += 1
        try:
            target.call(value)
        except target.allowed:
            pass
        except Exception as exc:  # a crash: remember a few, keep going
            out.crashes += 1
            if len(out.first) < 3:
                shown = repr(value)
                shown = shown if len(shown) <= 600 else shown[:300] + " ... " + shown[-300:]
                out.first.append(f"{type(exc).__name__}: {exc} <- {shown}\n"
                                 + "".join(traceback.format_exception(exc)[-3:]))

    run()
    out.seconds = time.monotonic() - started
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000, help="inputs per target")
    parser.add_argument("--only", default=None, help="run targets whose name contains this")
    args = parser.parse_args(argv)
    total = 0
    for target in all_targets():
        if args.only and args.only not in target.name:
            continue
        o = fuzz(target, args.inputs)
        total += o.crashes
        print(f"{o.name:34} inputs {o.tried:>8,}  crashes {o.crashes:>4}  ({o.seconds:.0f}s)", flush=True)
        for text in o.first:
            print("    " + text.replace("\n", "\n    "))
    print(f"total crashes: {total}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
