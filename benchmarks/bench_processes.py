"""Several rankprune processes on one machine: what OpenMP's settings do to them.

    python benchmarks/bench_processes.py [--runs 2] [--out benchmarks/results/processes.md] [-- EVOLVE FLAGS]

Runs the same `rankprune evolve` command (default: the README's digits quick start, depth 1 only, so a
contended run stays short) alone and then `--runs` copies at once, under each OpenMP setting:

- the defaults (as many threads as cores, OpenMP's default wait policy),
- OMP_WAIT_POLICY=PASSIVE (idle threads sleep instead of spinning),
- OMP_NUM_THREADS=1 (one thread per process),
- the defaults again with RANKPRUNE_NO_OMP_DEFAULTS=1, which turns off what the CLI itself sets, so
  that the figure shows what the CLI's own setting is worth.

Each figure is the wall time of one process (the slowest of the concurrent ones), the median of
`--rounds` interleaved rounds, as a ratio to the same command alone under the CLI's defaults, all
measured in this one run. Writes a Markdown table with the
command line, torch version, CPU count, date and load average.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ["--dataset", "digits", "--width", "128", "--layers", "1"]
SETTINGS = {
    "CLI defaults": {},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "OMP_NUM_THREADS=1": {"OMP_NUM_THREADS": "1"},
    "no CLI setting (RANKPRUNE_NO_OMP_DEFAULTS=1)": {"RANKPRUNE_NO_OMP_DEFAULTS": "1"},
}


def timed(flags: list[str], env_extra: dict[str, str], copies: int) -> float:
    """Seconds until the slowest of `copies` concurrent `rankprune evolve` processes finishes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    env.update(env_extra)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-m", "rankprune.cli", "evolve", *flags, "--out", f"{tmp}/run{i}"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for i in range(copies)]
        for p in procs:
            _out, err = p.communicate()
            if p.returncode != 0:
                raise SystemExit(f"rankprune failed: {err.strip().splitlines()[-1] if err.strip() else p.returncode}")
        return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=2, help="processes at once (2)")
    p.add_argument("--rounds", type=int, default=3, help="repetitions of every measurement; medians are reported (3)")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/processes.md"))
    p.add_argument("flags", nargs="*", help="`rankprune evolve` flags, after --")
    args = p.parse_args()
    flags = args.flags or DEFAULT
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1) / 2:
        print(f"warning: load average {load:.2f}; the machine is not idle", file=sys.stderr)

    # Rounds interleave the settings, so a burst of host noise hits all of them; figures are medians.
    times: dict[str, dict[str, list[float]]] = {name: {"alone": [], "together": []} for name in SETTINGS}
    for r in range(args.rounds):
        for name, env in SETTINGS.items():
            times[name]["alone"].append(timed(flags, env, 1))
            times[name]["together"].append(timed(flags, env, args.runs))
            print(f"round {r + 1}: {name:45s} alone {times[name]['alone'][-1]:6.1f} s   {args.runs} at once "
                  f"{times[name]['together'][-1]:6.1f} s", flush=True)
    baseline = statistics.median(times["CLI defaults"]["alone"])
    rows = [(name, statistics.median(t["alone"]), statistics.median(t["together"]),
             f"{min(t['together']):.1f}-{max(t['together']):.1f}") for name, t in times.items()]

    import torch

    lines = [
        "# Several rankprune processes on one machine", "",
        f"Command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`; each process runs "
        f"`rankprune evolve {' '.join(flags)}`. torch {torch.__version__}, {os.cpu_count()} CPUs, "
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, load average at start {load:.2f}.", "",
        f"Wall time of one process alone and of {args.runs} at once (the slowest), medians of {args.rounds} "
        "interleaved rounds, as a ratio to one process alone under the CLI's defaults, all measured in this one run.", "",
        f"| setting | alone (s) | alone (ratio) | {args.runs} at once (s) | {args.runs} at once (ratio) | {args.runs} at once, range (s) |",
        "|---|---|---|---|---|---|",
        *(f"| {n} | {a:.1f} | {a / baseline:.2f}x | {t:.1f} | {t / baseline:.2f}x | {rng} |" for n, a, t, rng in rows),
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
