"""Run the benchmarks and write bench-results/: report.json, report.md, plots; print the table.

    python benchmarks/run.py [--quick] [--only NAME ...] [--runs N] [--out DIR]

(``nox -s bench -- --quick`` passes the arguments through.) Each benchmark starts the
processes it needs on 127.0.0.1 (see ``benchmarks/suite.py``), warms up, repeats ``--runs``
times and reports the median with min and max, next to the target and the machine's load
average during the runs. ``--quick`` is a smoke run with tiny sizes and one run each: its
numbers mean nothing. Benchmarks: converter, handoff, ingest_cpu, recorder, publish, ingest,
spool, e2e, latency, memory, lifecycle (latency uses the end-to-end figure of the same run when
there is one), peer
(ours against Ray 2.60's own agent with three receivers) and workers (throughput against
``--workers``, and ``--max-in-flight`` when the agent has it); see ``benchmarks/peer.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import Figure, load_average, machine, table
from benchmarks.peer import plots as peer_plots
from benchmarks.suite import BENCHMARKS, Context


def plot(details: dict[str, Any], out: Path) -> list[str]:
    """Publish throughput against batch size (compiled and protobuf converters)."""
    sweep = details.get("publish", {}).get("sweep")
    if not sweep:
        return []
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (nox -s bench installs it)", file=sys.stderr)
        return []
    fig, ax = plt.subplots(figsize=(7, 4.2))
    labels = {"compiled": "compiled converter (ours)", "protobuf": "protobuf MessageToJson (Ray)"}
    for converter, runs in sweep.items():
        xs = [r["batch_size"] for r in runs]
        ys = [r["events_per_s"] for r in runs]
        ax.plot(xs, ys, marker="o", label=labels.get(converter, converter))
    ax.axhline(70_000, color="grey", linestyle="--", linewidth=1, label="target 70,000/s")
    ax.set_xscale("log")
    ax.set_xlabel("batch size (events per POST)")
    ax.set_ylabel("events/s delivered to the sink")
    ax.set_title("Publish path: buffer -> JSON -> HTTP POST (separate sink process)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    name = "publish_vs_batch_size.png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return [name]


def markdown(report: dict[str, Any], figures: list[Figure]) -> str:
    m = report["machine"]
    lines = [
        "# Benchmark report",
        "",
        f"- command: `{report['command']}`",
        f"- machine: {m['nproc']} CPUs, {m['cpu_model']}, Python {m['python']}",
        f"- load average (1, 5, 15 min): before {fmt_load(report['load_before'])}, "
        f"after {fmt_load(report['load_after'])}",
        f"- started {report['started']}, took {report['seconds']:.0f} s"
        + (" (quick mode: sizes are tiny, numbers are meaningless)" if report["quick"] else ""),
        "",
        table(figures),
        "",
    ]
    notes = [f"- **{f.label}**: {f.notes}" for f in figures if f.notes]
    if notes:
        lines += ["Notes:", "", *notes, ""]
    if report["errors"]:
        lines += ["Errors:", ""] + [f"- {name}: {err}" for name, err in report["errors"].items()]
    for name in report["plots"]:
        lines += ["", f"![{name}]({name})"]
    return "\n".join(lines) + "\n"


def fmt_load(load: list[float]) -> str:
    return ", ".join(f"{x:.2f}" for x in load)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one run: a smoke test")
    parser.add_argument(
        "--only", action="append", choices=sorted(BENCHMARKS), help="run only these (repeatable)"
    )
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (default 3)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args(argv)
    names = [n for n in BENCHMARKS if args.only is None or n in args.only]
    runs = args.runs or (1 if args.quick else 3)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(quick=args.quick, runs=runs, logs=out / "logs")
    command = " ".join(
        ["python", "benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]
    )
    started = time.time()
    report: dict[str, Any] = {
        "command": command,
        "quick": args.quick,
        "runs": runs,
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
        "machine": machine(),
        "load_before": list(load_average()),
        "figures": [],
        "details": {},
        "errors": {},
    }
    figures: list[Figure] = []
    for name in names:
        print(f"bench: {name} ...", flush=True)
        t0 = time.monotonic()
        try:
            got, details = BENCHMARKS[name](ctx)
        except Exception as exc:  # one broken benchmark must not lose the others' figures
            traceback.print_exc()
            report["errors"][name] = f"{type(exc).__name__}: {exc}"
            continue
        for figure in got:
            ctx.results[figure.name] = figure.median
        figures += got
        report["details"][name] = details
        print(table(got), f"\n({time.monotonic() - t0:.0f} s)\n", flush=True)
    report["figures"] = [f.as_dict() for f in figures]
    report["load_after"] = list(load_average())
    report["seconds"] = time.time() - started
    report["plots"] = plot(report["details"], out) + peer_plots(report["details"], out)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report, figures)
    (out / "report.md").write_text(text)
    print(text)
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
