"""Many networks at once: the batched ensemble (rankprune.models.batched) against the same networks trained one
after another, and `evolve --seeds` end to end.

    python benchmarks/bench_ensemble.py step [--device cpu|cuda] [--ks 1,4,16,64] [--widths 64,784] [--batch 64]
    python benchmarks/bench_ensemble.py e2e --data-dir ../shared/data/mnist10k [--seeds 0..7] [--width 256]
    python benchmarks/bench_ensemble.py study [--file wd_decay] [--trials 16] [--batch 8]

step: samples/s summed over members. One after another: each of min(K, 4) freshly built MLPs (784-w-w-10)
trains `--steps` steps with torch.optim.SGD (fused, momentum 0.9, weight decay), as train_to_saturation
does; the rate of one network does not depend on K. Batched: K members in one BatchedMLP with its per-member
SGD step. Random MNIST-shaped data held on the device, batches by index_select, as the trainer takes them.
Every case runs in its own subprocess, which also reports its peak resident memory (CPU) or
torch.cuda.max_memory_allocated (CUDA) against the model's own estimate: K x parameters x 3 (weights,
gradients, momentum) x 4 bytes plus K x batch x (784 + sum of widths + 10) x 4 bytes x 3 of activations.
`--lenet` uses 784-300-100-10 members (the GPU target's shape).

e2e: `rankprune evolve --layers 2 --width W --seeds S` in-process against the same seeds as single runs
(`--seed s --data-seed first`) one after another, wall time, each member's widths against its single run,
and the rank measurement's share of each (the weight spectra the probes take every epoch, and a batch's one
decomposition of all its members' weights, timed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks/results"


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _one_case(mode: str, k: int, widths: list[int], batch: int, steps: int, device: str) -> dict:
    """Runs inside the subprocess: samples/s of `mode` (alone | batched) for K members."""
    from rankprune.models import get_family

    dev = torch.device(device)
    torch.manual_seed(0)
    n = 8192
    x = torch.randn(n, 1, 28, 28, device=dev)
    y = torch.randint(0, 10, (n,), device=dev)
    fam = get_family("mlp")
    if mode == "alone":
        models = [fam.build((1, 28, 28), widths, 10, s, dev) for s in range(min(k, 4))]
        seconds, samples = 0.0, 0
        for model in models:
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-3, fused=True)
            g = torch.Generator().manual_seed(1)
            order = torch.randint(0, n, (steps + 5, batch), generator=g).to(dev)
            for i in range(steps + 5):  # 5 warm-up steps
                if i == 5:
                    _sync(dev)
                    start = time.perf_counter()
                idx = order[i]
                loss = torch.nn.functional.cross_entropy(model(torch.index_select(x, 0, idx)), torch.index_select(y, 0, idx))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            _sync(dev)
            seconds += time.perf_counter() - start
            samples += steps * batch
        rate = samples / seconds
    else:
        members = [fam.build((1, 28, 28), widths, 10, s, dev) for s in range(k)]
        net = fam.batched(members)
        lr, mom, wd = (torch.full((k,), v, device=dev) for v in (0.01, 0.9, 5e-3))
        g = torch.Generator().manual_seed(1)
        order = torch.randint(0, n, (steps + 5, k * batch), generator=g).to(dev)
        for i in range(steps + 5):
            if i == 5:
                _sync(dev)
                start = time.perf_counter()
            idx = order[i]
            xb = torch.index_select(x, 0, idx).view(k, batch, 1, 28, 28)
            yb = torch.index_select(y, 0, idx)
            logits = net(xb)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), yb, reduction="none").view(k, batch).mean(1).sum()
            net.zero_grad(set_to_none=True)
            loss.backward()
            net.sgd_step(lr, mom, wd)
        _sync(dev)
        rate = k * steps * batch / (time.perf_counter() - start)
    params = fam.parameter_count((1, 28, 28), widths, 10)
    members_held = k if mode == "batched" else 1
    estimate = members_held * (params * 3 * 4 + batch * (784 + sum(widths) + 10) * 4 * 3)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) - x.numel() * 4 - y.numel() * 8
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"rate": rate, "peak_bytes": peak, "estimate_bytes": estimate}


def _subprocess_case(*args) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import bench_ensemble as b; "
            f"print(json.dumps(b._one_case{args!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _baseline_rss() -> int:
    """Resident memory of a subprocess that imports torch and rankprune and holds the random data: what every
    case's peak includes besides the networks."""
    code = ("import resource, torch, json; import rankprune.models; x = torch.randn(8192, 1, 28, 28); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)")
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout.split()[-1])


def step_bench(args) -> None:
    ks = [int(k) for k in args.ks.split(",")]
    shapes = [[300, 100]] if args.lenet else [[int(w)] * 2 for w in args.widths.split(",")]
    base = _baseline_rss() if args.device == "cpu" else 0
    lines = [f"# Batched ensemble against one network at a time ({args.device})", "",
             f"{dt.date.today()}, torch {torch.__version__}, {os.cpu_count()} CPUs, threads {torch.get_num_threads()}; "
             f"command: `python benchmarks/bench_ensemble.py step --device {args.device} --ks {args.ks} "
             + (f"--lenet" if args.lenet else f"--widths {args.widths}") + f" --batch {args.batch} --steps {args.steps}`", "",
             "samples/s summed over members; one-after-another is the rate of single networks (independent of K). "
             "Memory: the case's peak " + ("resident memory less a bare process's" if args.device == "cpu" else
                                            "CUDA allocation less the data") + ", against the estimate (module docstring).", "",
             "| members | widths | one after another (samples/s) | batched (samples/s) | ratio | memory measured (MB) | estimate (MB) |",
             "|---|---|---|---|---|---|---|"]
    for widths in shapes:
        alone = _subprocess_case("alone", 1, widths, args.batch, args.steps, args.device)
        for k in ks:
            batched = _subprocess_case("batched", k, widths, args.batch, args.steps, args.device)
            measured = (batched["peak_bytes"] - base) / 2**20
            line = (f"| {k} | {widths} | {alone['rate']:,.0f} | {batched['rate']:,.0f} | **{batched['rate'] / alone['rate']:.2f}x** | "
                    f"{measured:,.1f} | {batched['estimate_bytes'] / 2**20:,.1f} |")
            print(line, flush=True)
            lines.append(line)
    out = Path(args.out or RESULTS / f"ensemble_{args.device}{'_lenet' if args.lenet else ''}.md")
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


def e2e_bench(args) -> None:
    from rankprune import measure
    from rankprune.config import RunConfig
    from rankprune.data import load
    from rankprune.evolve import Replica, evolve, evolve_together
    from rankprune.probes import spectra
    from rankprune.replicates import parse_seeds
    from rankprune.runfolder import DEPTHS, ITERATIONS, RunFolder

    seeds = parse_seeds(args.seeds)
    spent = {"measure": 0.0}
    real = measure.measure_layers

    def timed(*a, **kw):
        start = time.perf_counter()
        try:
            return real(*a, **kw)
        finally:
            spent["measure"] += time.perf_counter() - start

    spectra.measure_layers = timed
    from rankprune.models import batched

    real_batched = batched.BatchedNetwork.singular_values

    def timed_batched(self):
        start = time.perf_counter()
        try:
            return real_batched(self)
        finally:
            spent["measure"] += time.perf_counter() - start

    batched.BatchedNetwork.singular_values = timed_batched  # a batch's one decomposition of all its members
    base = RunConfig().replace(data={"dataset": "mnist", "data_dir": str(args.data_dir), "download": False, "seed": seeds[0]},
                               model={"width": args.width}, evolve={"layers": (2,)}).validate().resolved()
    data = load(base.data, base.data_seed)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ensemble-"))

    def folder(name: str, seed: int) -> RunFolder:
        run = RunFolder(tmp / name / f"seed-{seed}", tags={"seed": seed})
        (run.path / "weights").mkdir(parents=True)
        return run

    start = time.perf_counter()
    replicas = [Replica(base.replace(seed=s), data, folder("batched", s)) for s in seeds]
    evolve_together(replicas, args.batch_members)
    batched_wall, batched_measure = time.perf_counter() - start, spent["measure"]
    spent["measure"] = 0.0
    start = time.perf_counter()
    singles = []
    for s in seeds:
        run = folder("single", s)
        evolve(base.replace(seed=s), data, run)
        singles.append(run)
    single_wall, single_measure = time.perf_counter() - start, spent["measure"]
    lines = [f"# evolve --seeds {args.seeds} against single runs in sequence", "",
             f"{dt.date.today()}, torch {torch.__version__}, {os.cpu_count()} CPUs, threads {torch.get_num_threads()}; command: "
             f"`python benchmarks/bench_ensemble.py e2e --data-dir {args.data_dir} --seeds {args.seeds} --width {args.width}`", "",
             f"MNIST subset, depth 2, width {args.width}, defaults otherwise (warm rebuild, saturate both), data seed {seeds[0]}.", "",
             "| | wall (s) | rank measurement (s) | its share |", "|---|---|---|---|",
             f"| {len(seeds)} replicates in batches (`--seeds`) | {batched_wall:.1f} | {batched_measure:.1f} | {batched_measure / batched_wall:.1%} |",
             f"| {len(seeds)} single runs in sequence | {single_wall:.1f} | {single_measure:.1f} | {single_measure / single_wall:.1%} |",
             f"| ratio | **{single_wall / batched_wall:.2f}x** | | |", "",
             "| seed | widths per iteration, batched | single run | chosen test acc batched / single | max abs val acc difference |",
             "|---|---|---|---|---|"]
    same = 0
    for s, r, single in zip(seeds, replicas, singles):
        a, b = r.run.rows(ITERATIONS), single.rows(ITERATIONS)
        wa, wb = [row["widths"] for row in a], [row["widths"] for row in b]
        same += wa == wb
        da, db = r.run.read(DEPTHS)["2"], single.read(DEPTHS)["2"]
        diff = max(abs(x["val_acc"] - y["val_acc"]) for x, y in zip(a, b))
        lines.append(f"| {s} | {wa} | {'same' if wa == wb else wb} | {da['test_acc']:.4f} / {db['test_acc']:.4f} | {diff:.4f} |")
    lines += ["", f"{same} of {len(seeds)} members went through the same widths at every iteration as their single runs."]
    out = Path(args.out or RESULTS / "ensemble_e2e.md")
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def study_bench(args) -> None:
    """A study file of studies/ with the random sampler (the same draws whatever the batch),
    run once with --batch 1 and once with --batch B, each in a fresh root: wall time, and each trial's ranks."""
    import optuna

    source = ROOT / "studies" / f"{args.file}.toml"
    spec = source.read_text().replace('sampler = "tpe"', 'sampler = "random"')
    tmp = Path(tempfile.mkdtemp(prefix="bench-study-"))
    (tmp / "study.toml").write_text(spec)
    walls, trials = {}, {}
    for batch in (1, args.batch):
        root = tmp / f"batch-{batch}"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "rankprune", "study", "run", str(tmp / "study.toml"), "--root", str(root),
                        "--n-trials", str(args.trials), "--batch", str(batch)], cwd=ROOT, check=True, capture_output=True)
        walls[batch] = time.perf_counter() - start
        study = optuna.load_study(study_name=args.file, storage=f"sqlite:///{root}/studies.sqlite3")
        trials[batch] = {t.number: t for t in study.get_trials(deepcopy=False)}
    one, many = trials[1], trials[args.batch]
    same_params = sum(one[n].params == many[n].params for n in one)
    both = [n for n in one if one[n].state.name == many[n].state.name == "COMPLETE"]
    same_ranks = sum(one[n].user_attrs["ranks"] == many[n].user_attrs["ranks"] for n in both)
    lines = [f"# Study {args.file}: one trial at a time against --batch {args.batch}", "",
             f"{dt.date.today()}, torch {torch.__version__}, {os.cpu_count()} CPUs; command: "
             f"`python benchmarks/bench_ensemble.py study --file {args.file} --trials {args.trials} --batch {args.batch}`", "",
             f"studies/{args.file}.toml with the random sampler, so both runs draw the same trials.", "",
             "| | wall (s) |", "|---|---|",
             f"| --batch 1 | {walls[1]:.1f} |", f"| --batch {args.batch} | {walls[args.batch]:.1f} |",
             f"| ratio | **{walls[1] / walls[args.batch]:.2f}x** |", "",
             f"{same_params} of {len(one)} trials drew the same parameters; of the {len(both)} complete in both, "
             f"{same_ranks} measured the same ranks in every layer."]
    out = Path(args.out or RESULTS / f"ensemble_study_{args.file}.md")
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("step")
    s.add_argument("--device", default="cpu")
    s.add_argument("--ks", default="1,4,16,64")
    s.add_argument("--widths", default="64,784")
    s.add_argument("--lenet", action="store_true")
    s.add_argument("--batch", type=int, default=64)
    s.add_argument("--steps", type=int, default=60)
    s.add_argument("--out")
    e = sub.add_parser("e2e")
    e.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared/data/mnist10k")
    e.add_argument("--seeds", default="0..7")
    e.add_argument("--width", type=int, default=256)
    e.add_argument("--batch-members", type=int)
    e.add_argument("--out")
    t = sub.add_parser("study")
    t.add_argument("--file", default="wd_decay", help="a study in studies/ (its name)")
    t.add_argument("--trials", type=int, default=16)
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--out")
    args = p.parse_args()
    {"step": step_bench, "e2e": e2e_bench, "study": study_bench}[args.what](args)


if __name__ == "__main__":
    main()
