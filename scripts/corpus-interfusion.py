#!/usr/bin/env python3
"""Convert the labelled server KPIs of zhhlee/InterFusion (MIT) into
backstop.scenario/v1 release cases with earlier-window baselines.

Usage:  corpus-interfusion.py DATA_DIR OUT_DIR
  DATA_DIR  the repository's `data/` folder (processed/*.pkl, interpretation_label/*.txt)
  OUT_DIR   gets seasonal-dev/, seasonal-holdout/, preceding-dev/, preceding-holdout/

Needs NumPy (the .pkl files are pickled NumPy arrays). The converted cases are
committed under fixtures/real-kpis/, so neither CI nor the tests run this.

What a case is (see fixtures/real-kpis/README.md):
- a *faulty* release: a labelled anomaly starts ONSET_STEPS after the release
  time; the metrics are those the dataset's interpretation label names for
  that anomaly (at most METRICS_PER_CASE that move in the window);
- a *healthy* release: a window with no label in it, its baseline or a margin
  around both, with as many metrics drawn from the machine's labelled pool;
- `seasonal`: the baseline is the same window one day earlier;
  `preceding`: the baseline is the window just before the release.
The anomalies were not caused by releases: the corpus tests the judge's
statistics on real server data, not release causality.

The dev/holdout split is by machine and was fixed in this file before any
case was judged: a machine's cases are all on one side.
"""

import json
import pathlib
import pickle
import random
import sys

import numpy as np

# Decided before looking at any result; never changed after.
SPLIT = {
    "dev": ["omi-1", "omi-3", "omi-5", "omi-7", "omi-9", "omi-11",
            "machine-1-6", "machine-2-1", "machine-2-7", "machine-3-3"],
    "holdout": ["omi-2", "omi-4", "omi-6", "omi-8", "omi-10", "omi-12",
                "machine-1-7", "machine-2-2", "machine-2-8", "machine-3-4"],
}
SEED = 3201
METRICS_PER_CASE = 3
# Per dataset: seconds per point, points per case window, onset (points after
# the release), points per day (the seasonal period).
SHAPE = {
    "omi": {"step_s": 300, "window": 24, "onset": 3, "day": 288},
    "machine": {"step_s": 60, "window": 60, "onset": 5, "day": 1440},
}
# Points around a healthy window (and its baseline) that must be label-free.
MARGIN = 12


def load(data, name, part):
    with open(data / "processed" / f"{name}_{part}.pkl", "rb") as f:
        return np.asarray(pickle.load(f), dtype=np.float64)


def segments(label):
    """(start, end_exclusive) of each run of 1s."""
    out, start = [], None
    for i, v in enumerate(label):
        if v > 0.5 and start is None:
            start = i
        elif v <= 0.5 and start is not None:
            out.append((start, i))
            start = None
    if start is not None:
        out.append((start, len(label)))
    return out


def interpretation(data, name):
    """[(start, end_inclusive, [0-based metric indices])] from the label file."""
    path = data / "interpretation_label" / f"{name}.txt"
    out = []
    for line in path.read_text().split("\n"):
        line = line.strip()
        if not line:
            continue
        span, metrics = line.split(":")
        a, b = (int(x) for x in span.split("-"))
        out.append((a, b, [int(m) - 1 for m in metrics.split(",") if m]))
    return out


def moves(x):
    return np.nanmax(x) - np.nanmin(x) > 1e-6


def series(values):
    return [round(float(v), 5) for v in values]


def case(name, shape, kind, series_of, cols, release, onset, cause):
    """One scenario dict; `series_of(col, start)` gives the window from absolute index `start`."""
    w = shape["window"]
    base_start = release - w if kind == "preceding" else release - shape["day"]
    return {
        "format": "backstop.scenario/v1",
        "name": name,
        "description": f"InterFusion {cause}; baseline = {kind} window; real server KPIs, "
                       "min-max normalised by the dataset; the anomaly was not caused by a release",
        "service": name.split("--")[0],
        "step_s": shape["step_s"],
        "duration_s": shape["step_s"] * w,
        "baseline_kind": kind,
        "metrics": [
            {"name": f"kpi_{c + 1:02d}", "unit": "normalised", "bad_direction": "both",
             "baseline": series(series_of(c, base_start)), "canary": series(series_of(c, release))}
            for c in cols
        ],
        "logs": [],
        "events": [],
        "truth": {"bad": onset is not None,
                  "onset_s": None if onset is None else onset * shape["step_s"],
                  "cause": "labelled anomaly" if onset is not None else "no label"},
    }


def machine_cases(data, name, rng):
    shape = SHAPE[name.split("-")[0]]
    train, test = load(data, name, "train"), load(data, name, "test")
    label = load(data, name, "test_label")
    full = np.concatenate([train, test])
    off = len(train)  # test index i is absolute index off + i
    lab = np.concatenate([np.zeros(len(train)), label])
    interp = interpretation(data, name)
    pool = sorted({c for _, _, cs in interp for c in cs})
    w, day, onset = shape["window"], shape["day"], shape["onset"]

    def window(c, start):
        return full[start:start + w, c]

    def clear(a, b):
        return a >= 0 and b <= len(full) and not lab[max(a, 0):b].any()

    out = {"seasonal": [], "preceding": []}
    bad = 0
    for s, _ in segments(label):
        named = [cs for a, b, cs in interp if a <= s <= b or a <= s + 1 <= b]
        if not named:
            continue
        release = off + s - onset
        for kind in out:
            base = release - w if kind == "preceding" else release - day
            if not (clear(release, release + onset) and clear(base, base + w)):
                continue
            movers = [c for c in named[0] if moves(np.concatenate([window(c, base), window(c, release)]))]
            if not movers:
                continue
            cols = sorted(rng.sample(movers, min(METRICS_PER_CASE, len(movers))))
            out[kind].append(case(f"{name}--bad-{s}-{kind}", shape, kind, window, cols, release, onset,
                                  f"{name} test point {s}"))
        bad += 1
    # As many healthy releases as faulty ones, drawn from label-free test windows.
    for kind in out:
        want, tries = len(out[kind]), 0
        while sum(1 for c in out[kind] if not c["truth"]["bad"]) < want and tries < 5000:
            tries += 1
            release = off + rng.randrange(0, len(test) - w)
            base = release - w if kind == "preceding" else release - day
            if not (clear(release - MARGIN, release + w + MARGIN) and clear(base - MARGIN, base + w + MARGIN)):
                continue
            movers = [c for c in pool if moves(np.concatenate([window(c, base), window(c, release)]))]
            if len(movers) < 1:
                continue
            cols = sorted(rng.sample(movers, min(METRICS_PER_CASE, len(movers))))
            n = f"{name}--good-{release - off}-{kind}"
            if any(c["name"] == n for c in out[kind]):
                continue
            out[kind].append(case(n, shape, kind, window, cols, release, None, f"{name} test point {release - off}"))
    return out


def main():
    data, out_dir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    rng = random.Random(SEED)
    for split, names in SPLIT.items():
        for kind in ("seasonal", "preceding"):
            (out_dir / f"{kind}-{split}").mkdir(parents=True, exist_ok=True)
        for name in names:
            for kind, cases in machine_cases(data, name, rng).items():
                for c in cases:
                    path = out_dir / f"{kind}-{split}" / f"{c['name']}.json"
                    path.write_text(json.dumps(c, separators=(",", ":")) + "\n")
    for p in sorted(out_dir.iterdir()):
        if p.is_dir():
            files = list(p.glob("*.json"))
            bad = sum(1 for f in files if json.loads(f.read_text())["truth"]["bad"])
            print(f"{p.name}: {len(files)} cases, {bad} faulty")


if __name__ == "__main__":
    main()
