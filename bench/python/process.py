"""process-mode baseline: tiny items through a process pool.

    python3 bench/python/process.py N CHUNKSIZE > /dev/null

executor.map with chunksize=1 (the default, as the guide writes it) pays a
round trip per item; a larger chunksize ships items in batches.
"""
import json
import sys
from concurrent.futures import ProcessPoolExecutor


def double(x: int) -> int:
    return x * 2


def main() -> None:
    n, chunksize = int(sys.argv[1]), int(sys.argv[2])
    out = sys.stdout
    count = 0
    with ProcessPoolExecutor() as executor:
        for r in executor.map(double, range(1, n + 1), chunksize=chunksize):
            out.write(f"{r}\n")
            count += 1
    print(json.dumps({"items": count}), file=sys.stderr)


if __name__ == "__main__":
    main()
