"""resize baseline: the concurrent.futures guide's Pillow program.

    /usr/bin/python3 bench/python/resize.py SRC_DIR OUT_DIR

resize_image and resize_all are the guide's ("Real-world: image resizing
with processes"), with one change that favours Pillow: no optimize=True,
which costs an extra Huffman pass that flow's resize does not make.
"""
import json
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from PIL import Image


def resize_image(src: str, dest: str, width: int, height: int) -> str:
    img = Image.open(src)
    img_resized = img.resize((width, height), Image.LANCZOS)
    img_resized.save(dest, quality=85)
    return dest


def resize_all(input_dir: str, output_dir: str, size: tuple[int, int] = (800, 600)) -> int:
    src_dir = Path(input_dir)
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    images = list(src_dir.glob("*.jpg")) + list(src_dir.glob("*.png"))
    if not images:
        print("No images found.", file=sys.stderr)
        return 0

    jobs = [(str(p), str(out_dir / p.name), size[0], size[1]) for p in images]

    completed = 0
    with ProcessPoolExecutor() as executor:
        futures = {executor.submit(resize_image, src, dest, w, h): src for src, dest, w, h in jobs}
        for future in as_completed(futures):
            src = futures[future]
            try:
                dest = future.result()
                completed += 1
                print(f"[{completed}/{len(jobs)}] {Path(src).name} -> {dest}")
            except Exception as exc:
                print(f"Failed {src}: {exc}", file=sys.stderr)
    return completed


if __name__ == "__main__":
    done = resize_all(sys.argv[1], sys.argv[2])
    print(json.dumps({"images": done}), file=sys.stderr)
