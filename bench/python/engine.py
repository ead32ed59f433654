"""Engine overhead baseline: trivial items through two thread-pool stages.

    python3 bench/python/engine.py N > /dev/null

The same work as bench/pipelines/engine.yaml: range(1, N+1), +1, +1, each
result written as a line. executor.map is what the concurrent.futures guide
teaches; chained, the second map consumes the first in order.
"""
import json
import sys
from concurrent.futures import ThreadPoolExecutor


def inc(x: int) -> int:
    return x + 1


def main() -> None:
    n = int(sys.argv[1])
    out = sys.stdout
    count = 0
    with ThreadPoolExecutor() as executor:
        for r in executor.map(inc, executor.map(inc, range(1, n + 1))):
            out.write(f"{r}\n")
            count += 1
    print(json.dumps({"items": count}), file=sys.stderr)


if __name__ == "__main__":
    main()
