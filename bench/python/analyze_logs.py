"""analyze-logs baseline: the concurrent.futures guide's program.

    python3 bench/python/analyze_logs.py LOG_DIR [WORKERS]

analyze_log and summarize_logs are the guide's ("Real-world: parallel file
processing"), with the per-file print replaced by one JSON line per file on
stdout and the totals on stderr for the harness to check.
"""
import json
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path


def analyze_log(path: Path) -> dict:
    error_count = 0
    warn_count = 0
    lines = 0

    with path.open() as f:
        for line in f:
            lines += 1
            if "ERROR" in line:
                error_count += 1
            elif "WARN" in line:
                warn_count += 1

    return {
        "file": path.name,
        "lines": lines,
        "errors": error_count,
        "warnings": warn_count,
    }


def summarize_logs(log_dir: str, workers: int = 8) -> list[dict]:
    paths = list(Path(log_dir).glob("*.log"))
    results = []

    with ThreadPoolExecutor(max_workers=workers) as executor:
        future_to_path = {executor.submit(analyze_log, p): p for p in paths}

        for future in as_completed(future_to_path):
            path = future_to_path[future]
            try:
                result = future.result()
                results.append(result)
                print(json.dumps(result))
            except Exception as exc:
                print(f"Failed to process {path.name}: {exc}", file=sys.stderr)

    return sorted(results, key=lambda r: r["errors"], reverse=True)


if __name__ == "__main__":
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    results = summarize_logs(sys.argv[1], workers)
    totals = {k: sum(r[k] for r in results) for k in ("lines", "errors", "warnings")}
    totals["files"] = len(results)
    print(json.dumps(totals), file=sys.stderr)
