"""The tables of docs/performance.md and docs/capacity.md, computed from bench_scale's results files.

    python -m benchmarks.scale_report            # reads results/scale.json and results/scale_real*.json

The 35M projection scales the 1M run linearly in tracks (the measured 100k → 1M CPU growth says
whether that holds), and by the real-size calibration (CPU and bytes per real track over a small
one, both measured at 20,000 tracks in one run) for the steps whose work is per analysis byte.
"""

from __future__ import annotations

import json
import math

from benchmarks.common import RESULTS

TARGET = 35_000_000
CORES = 16
# Steps whose work is proportional to analysis bytes (scaled by the real/small calibration);
# the others handle ids, attributes or catalog rows, whose size does not depend on the analysis.
PAYLOAD_STEPS = {"full_ingest", "compaction", "attributes_full", "incremental", "attributes_incremental_day",
                 "attributes_compaction_day"}
SINGLE_PROCESS_STEPS = {"catalog", "catalog_day1", "catalog_day2", "publish", "status_view"}


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def growth_table(scale: dict) -> str:
    small, large = scale["runs"][0], scale["runs"][-1]
    out = [f"| step | {small['tracks']:,}: wall s / CPU s / peak RSS MB | {large['tracks']:,}: wall s / CPU s / "
           "peak RSS MB | RSS growth | CPU growth |", "|---|---|---|---|---|"]
    for name, a in small["steps"].items():
        b = large["steps"].get(name)
        if b is None:
            continue
        g = scale["growth"][name]
        out.append(f"| {name} | {a['wall_s']} / {a['cpu_s']} / {a['tree_rss_mb']} | {b['wall_s']} / {b['cpu_s']} / "
                   f"{b['tree_rss_mb']} | {g['rss_growth']}× | {g['cpu_growth']}× |")
    return "\n".join(out)


def calibration(real: dict | None, small20: dict | None) -> dict[str, float]:
    """CPU per real track over CPU per small track, per step, at the same size and in the same run."""
    if not real or not small20:
        return {}
    r, s = real["runs"][0]["steps"], small20["runs"][0]["steps"]
    return {name: r[name]["cpu_s"] / s[name]["cpu_s"] for name in r if name in s and s[name]["cpu_s"] > 0}


def projection(scale: dict, calib: dict[str, float], bytes_ratio: float, efficiency: float) -> str:
    large = scale["runs"][-1]
    factor = TARGET / large["tracks"]
    out = ["| step | CPU-hours | wall on 16 cores | peak RSS (one process → 16 processes) |", "|---|---|---|---|"]
    for name, s in large["steps"].items():
        c = calib.get(name, 1.0) if name in PAYLOAD_STEPS else 1.0
        cpu_h = s["cpu_s"] * factor * c / 3600
        cores = 1 if name in SINGLE_PROCESS_STEPS else CORES * efficiency
        wall_h = cpu_h / cores
        g = scale["growth"].get(name, {}).get("rss_growth", 1.0)
        rss = s["tree_rss_mb"] * g ** math.log10(factor)  # the measured per-10× growth, carried on
        per_proc = s["tree_rss_mb"] / max(1, s.get("processes_seen", 1))
        many = "" if name in SINGLE_PROCESS_STEPS else f" → ~{per_proc * g ** math.log10(factor) * 17:.0f} MB"
        out.append(f"| {name} | {cpu_h:.2f} | {_hours(wall_h)} | ~{rss:.0f} MB{many} |")
    disk = large["disk_mb"]
    out.append("")
    out.append("| dataset | 1M (small analyses) | 35M with real analyses |")
    out.append("|---|---|---|")
    for name, mb in disk.items():
        scale_bytes = bytes_ratio if name.startswith("analysis-") and name != "analysis-ledger" else 1.0
        out.append(f"| {name} | {mb:,.0f} MB | ~{mb * factor * scale_bytes / 1e6:.2f} TB |")
    return "\n".join(out)


def _hours(h: float) -> str:
    return f"{h * 60:.0f} min" if h < 1 else f"{h:.1f} h"


def main() -> None:
    scale = _load("scale")
    real, small20 = _load("scale_real"), _load("scale_small20k")
    if scale:
        print(growth_table(scale), "\n")
        print(json.dumps({r["tracks"]: r["ratios"] for r in scale["runs"]}, indent=1), "\n")
    calib = calibration(real, small20)
    bytes_ratio = 1.0
    if real and small20:
        bytes_ratio = (real["runs"][0]["analysis_avro_bytes_per_track"]
                       / small20["runs"][0]["analysis_avro_bytes_per_track"])
        print("calibration (real CPU / small CPU at 20k):", {k: round(v, 1) for k, v in calib.items()},
              f"bytes ×{bytes_ratio:.1f}\n")
    if scale:
        speed = scale["runs"][0]["ratios"]
        efficiency = min(speed.get("ingest_speedup_default_vs_single", 1.0),
                         speed.get("attributes_speedup_default_vs_single", 1.0)) / 2
        print(f"parallel efficiency used: {efficiency:.2f}\n")
        print(projection(scale, calib, bytes_ratio, max(efficiency, 0.5)))


if __name__ == "__main__":
    main()
