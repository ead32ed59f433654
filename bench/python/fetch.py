"""fetch baseline: N GET requests on a thread pool, optionally paced.

    python3 bench/python/fetch.py BASE_URL N WORKERS RATE

urllib from the standard library (the guide uses httpx, which Debian's
Python lacks). RATE > 0 spaces request starts 1/RATE seconds apart with a
lock: concurrent.futures has no rate limiter, and a Semaphore bounds
concurrency, not rate.
"""
import json
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed

_lock = threading.Lock()
_next = 0.0


def pace(interval: float) -> None:
    global _next
    with _lock:
        now = time.monotonic()
        start = max(now, _next)
        _next = start + interval
    if start > now:
        time.sleep(start - now)


def fetch(url: str, interval: float) -> int:
    if interval:
        pace(interval)
    with urllib.request.urlopen(url, timeout=30) as resp:
        resp.read()
        return resp.status


def main() -> None:
    base, n, workers, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    interval = 1.0 / rate if rate > 0 else 0.0
    ok = failed = 0
    with ThreadPoolExecutor(max_workers=workers) as executor:
        futures = {executor.submit(fetch, f"{base}/item/{i}", interval): i for i in range(1, n + 1)}
        for future in as_completed(futures):
            try:
                status = future.result()
                ok += 1
                print(json.dumps({"id": futures[future], "status": status}))
            except Exception as exc:
                failed += 1
                print(f"Item {futures[future]} failed: {exc}", file=sys.stderr)
    print(json.dumps({"ok": ok, "failed": failed}), file=sys.stderr)


if __name__ == "__main__":
    main()
