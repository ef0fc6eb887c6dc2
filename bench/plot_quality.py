#!/usr/bin/python3
"""Plots accuracy against model size for the quality benchmark's search strategies.

    /usr/bin/python3 bench/plot_quality.py results.csv out.png [--x bytes|bits] [--title T]

The CSV has the header `budget_bits,strategy,avg_bits,size_bytes,accuracy`: accuracy in
percent; strategy one of progressive, knapsack, hawq, uniform, random_best, fp32 (the fp32
row has avg_bits 32 and is drawn as a horizontal dashed line, not as a point). Each other
strategy gets its own colour and marker; its points are joined in order of x. Needs
matplotlib (Debian: python3-matplotlib); renders with the Agg backend, no display needed.
"""

import argparse
import csv
import os
import sys

try:
    import matplotlib
except ImportError:  # e.g. a pyenv python3 first on PATH: retry with Debian's interpreter
    if os.path.exists("/usr/bin/python3") and os.path.realpath(sys.executable) != \
            os.path.realpath("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    raise
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLUMNS = ["budget_bits", "strategy", "avg_bits", "size_bytes", "accuracy"]
STYLES = {  # strategy -> (colour, marker, label)
    "progressive": ("tab:blue", "o", "progressive"),
    "knapsack": ("tab:orange", "s", "knapsack"),
    "hawq": ("tab:green", "^", "HAWQ"),
    "uniform": ("tab:red", "D", "uniform"),
    "random_best": ("tab:purple", "v", "random (best)"),
}
FALLBACK_MARKERS = ["P", "X", "*", "h", "<", ">"]


def read_rows(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if header != COLUMNS:
            raise SystemExit(f"{path}: header {header}, expected {COLUMNS}")
        rows = []
        for line, raw in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in raw.items()}
            try:
                rows.append({
                    "budget_bits": row["budget_bits"],  # not plotted; may be empty for fp32
                    "strategy": row["strategy"],
                    "avg_bits": float(row["avg_bits"]),
                    "size_bytes": float(row["size_bytes"]),
                    "accuracy": float(row["accuracy"]),
                })
            except (TypeError, ValueError) as e:
                raise SystemExit(f"{path}:{line}: {e}")
    if not rows:
        raise SystemExit(f"{path}: no data rows")
    return rows


def plot(rows, out, x_axis, title):
    key = "size_bytes" if x_axis == "bytes" else "avg_bits"
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    fp32 = [r for r in rows if r["strategy"] == "fp32"]
    strategies = []
    for r in rows:
        if r["strategy"] != "fp32" and r["strategy"] not in strategies:
            strategies.append(r["strategy"])
    known = [s for s in STYLES if s in strategies]
    ordered = known + [s for s in strategies if s not in STYLES]
    extra = 0
    for strategy in ordered:
        if strategy in STYLES:
            colour, marker, label = STYLES[strategy]
        else:
            colour, marker, label = None, FALLBACK_MARKERS[extra % len(FALLBACK_MARKERS)], strategy
            extra += 1
        points = sorted((r[key], r["accuracy"]) for r in rows if r["strategy"] == strategy)
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker=marker, color=colour, label=label, linestyle="-",
                linewidth=1, markersize=6, alpha=0.9)
    if fp32:
        acc = max(r["accuracy"] for r in fp32)
        ax.axhline(acc, color="black", linestyle="--", linewidth=1,
                   label=f"FP32 ({acc:.2f}%)")
    if x_axis == "bytes":
        ax.set_xlabel("model size (bytes)")
        ax.ticklabel_format(axis="x", style="plain")
    else:
        ax.set_xlabel("average bits per weight")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or "Accuracy vs. size by search strategy")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", help="results CSV (budget_bits,strategy,avg_bits,size_bytes,accuracy)")
    parser.add_argument("png", help="output PNG")
    parser.add_argument("--x", choices=["bytes", "bits"], default="bytes",
                        help="x axis: size in bytes (default) or average bits")
    parser.add_argument("--title", default=None)
    args = parser.parse_args()
    rows = read_rows(args.csv)
    plot(rows, args.png, args.x, args.title)
    print(f"wrote {args.png} ({len(rows)} rows)")


if __name__ == "__main__":
    main()
