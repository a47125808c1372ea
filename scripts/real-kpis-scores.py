#!/usr/bin/env python3
"""How well simple scores separate faulty from healthy cases in fixtures/real-kpis/*-dev.

Rebuilds the four windows around each case from InterFusion's data (today's window
before the release, the canary window, and both one day earlier), checks the canary
against the committed case sample for sample, and prints each score's AUC (the chance
a faulty case scores above a healthy one) per split. BENCHMARKS.md quotes its output.

Usage (NumPy; DATA_DIR as for scripts/corpus-interfusion.py):
    python3 scripts/real-kpis-scores.py DATA_DIR fixtures/real-kpis
"""
import json
import pathlib
import pickle
import sys

import numpy as np

SHAPE = {"omi": {"window": 24, "onset": 3, "day": 288}, "machine": {"window": 60, "onset": 5, "day": 1440}}
PAST = 5  # steps of the trailing median a jump is measured from


def series(data, name):
    parts = [np.asarray(pickle.load(open(data / "processed" / f"{name}_{p}.pkl", "rb")), dtype=np.float64)
             for p in ("train", "test")]
    return np.concatenate(parts), len(parts[0])


def mad(x):
    return 1.4826 * np.median(np.abs(x - np.median(x)))


def largest_jump(x):
    return max(abs(x[i] - np.median(x[max(0, i - PAST):i])) for i in range(3, len(x)))


def jump_steps(x, bar, first):
    """Steps from `first` on whose jump (against the median of the 5 before) is past `bar`."""
    return {i for i in range(max(3, first), len(x)) if abs(x[i] - np.median(x[max(0, i - PAST):i])) > bar}


def joint(case, factor=3.0, first=1):
    """Whether two metrics jump past `factor` x their reference's largest jump within a step."""
    steps = []
    for m in case["metrics"]:
        reference, canary = np.asarray(m["baseline"], dtype=float), np.asarray(m["canary"], dtype=float)
        steps.append(jump_steps(canary, factor * max(largest_jump(reference), 1e-12), first))
    return any(abs(i - j) <= 1 for a in range(len(steps)) for b in range(a + 1, len(steps))
               for i in steps[a] for j in steps[b])


def auc(pos, neg):
    neg = np.asarray(neg)
    return float(np.mean([(p > neg).mean() + 0.5 * (p == neg).mean() for p in pos]))


def scores(full, release, shape, case):
    w, day = shape["window"], shape["day"]
    out = {}
    for m in case["metrics"]:
        c = int(m["name"][4:]) - 1
        before, after = full[release - w:release, c], full[release:release + w, c]
        day_before, day_after = full[release - day - w:release - day, c], full[release - day:release - day + w, c]
        assert np.allclose(np.round(after, 5), np.asarray(m["canary"], dtype=float)), case["name"]
        reference = np.asarray(m["baseline"], dtype=float)
        noise = max(mad(np.diff(np.concatenate([before, day_before, day_after]))) / np.sqrt(2), 1e-3)
        shift = np.median(after) - np.median(reference)
        both = (np.median(after) - np.median(day_after)) - (np.median(before) - np.median(day_before))
        found = {
            "level shift / step noise": abs(shift) / noise,
            "level shift less the preceding hours' (both views) / step noise": abs(both) / noise,
            "largest jump / reference's largest jump": largest_jump(after) / max(largest_jump(reference), 1e-3),
        }
        for k, v in found.items():
            out[k] = max(out.get(k, 0.0), v)
    return out


def main():
    data, cases = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    loaded = {}
    for split in ("seasonal-dev", "preceding-dev"):
        rows = []
        for path in sorted((cases / split).glob("*.json")):
            case = json.loads(path.read_text())
            name, rest = case["name"].split("--")
            shape = SHAPE[name.split("-")[0]]
            if name not in loaded:
                loaded[name] = series(data, name)
            full, off = loaded[name]
            kind, point = rest.split("-")[0], int(rest.split("-")[1])
            release = off + point - (shape["onset"] if kind == "bad" else 0)
            found = scores(full, release, shape, case)
            found["two metrics jumping past 3x within a step"] = float(joint(case))
            rows.append((case["truth"]["bad"], found))
        for k in rows[0][1]:
            pos = [s[k] for bad, s in rows if bad]
            neg = [s[k] for bad, s in rows if not bad]
            extra = ""
            if k.startswith("two metrics"):
                print(f"{split}: {k}: {np.mean(pos):.1%} of faulty, {np.mean(neg):.1%} of healthy")
                continue
            if k.startswith("largest jump"):
                extra = f"; above 3x: {np.mean(np.array(pos) > 3):.1%} of faulty, {np.mean(np.array(neg) > 3):.1%} of healthy"
            print(f"{split}: {k}: AUC {auc(pos, neg):.2f}{extra}")


if __name__ == "__main__":
    main()
