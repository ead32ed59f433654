#!/bin/sh
# Regenerates the JPEGs of this directory: layouts and codings that Go's
# encoder does not write. Needs /usr/bin/python3 with Pillow and cjpeg
# (Debian: python3-pil, libjpeg-turbo-progs). The files are committed, so
# the tests do not need either.
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
/usr/bin/python3 - "$tmp" <<'PY'
import random, sys
from PIL import Image
random.seed(7)
w, h = 61, 45
im = Image.new("RGB", (w, h))
px = im.load()
for y in range(h):
    for x in range(w):
        n = random.randint(-20, 20)
        inside = (x - 30) ** 2 + (y - 20) ** 2 < 150
        r = (200 if inside else x * 4) + n
        g = (40 if inside else y * 5) + n
        b = ((x + y) * 2) + n
        px[x, y] = tuple(max(0, min(255, v)) for v in (r, g, b))
d = sys.argv[1]
im.save(d + "/src.ppm")
im.convert("L").save(d + "/gray.pgm")
im.save("pil-444.jpg", quality=90, subsampling=0)
im.save("pil-422.jpg", quality=80, subsampling=1)
im.save("pil-progressive.jpg", quality=85, progressive=True)
im.convert("CMYK").save("pil-cmyk.jpg", quality=85)
PY
c() { out=$1; shift; cjpeg "$@" -outfile "$out" "$tmp/src.ppm"; }
c cjpeg-440.jpg -quality 85 -sample 1x2,1x1,1x1
c cjpeg-411.jpg -quality 85 -sample 4x1,1x1,1x1
c cjpeg-410.jpg -quality 85 -sample 4x2,1x1,1x1
c cjpeg-420-restart.jpg -quality 90 -restart 3B
c cjpeg-422-restart-rows.jpg -quality 75 -sample 2x1,1x1,1x1 -restart 1
c cjpeg-444-q100-restart.jpg -quality 100 -sample 1x1,1x1,1x1 -restart 1B
c cjpeg-420-optimized.jpg -quality 60 -optimize
c cjpeg-rgb.jpg -quality 85 -rgb
c cjpeg-arithmetic.jpg -quality 85 -arithmetic
# Baseline sequential, one scan per component (non-interleaved).
printf '0;\n1;\n2;\n' >"$tmp/scans"
c cjpeg-420-noninterleaved.jpg -quality 85 -scans "$tmp/scans"
# With restarts: image/jpeg counts the interval in MCUs of the interleaved
# layout, so it only reads these right when no component is subsampled.
c cjpeg-420-noninterleaved-restart.jpg -quality 85 -scans "$tmp/scans" -restart 2B
c cjpeg-444-noninterleaved-restart.jpg -quality 85 -sample 1x1,1x1,1x1 -scans "$tmp/scans" -restart 2B
cjpeg -quality 85 -grayscale -restart 5B -outfile cjpeg-gray-restart.jpg "$tmp/src.ppm"
cjpeg -quality 50 -sample 2x2 -outfile cjpeg-gray-2x2.jpg "$tmp/gray.pgm"
