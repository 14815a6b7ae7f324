#!/usr/bin/env bash
# The seed request of the HappyHorse r2v docs, sent with curl, with the reference images served from a
# local static server (so it works offline). Start the server with image URLs on loopback allowed:
#   VIDEOSYNTH_MEDIA_ALLOW_PRIVATE=1 make run
# then, in another shell:
#   KEY=sk-... examples/seed.sh            (BASE defaults to http://127.0.0.1:8000/api/v1)
set -euo pipefail
BASE=${BASE:-http://127.0.0.1:8000/api/v1}
: "${KEY:?set KEY to the API key printed by make run}"
PY=${PY:-.venv/bin/python}
IMG_PORT=${IMG_PORT:-8765}
www=$(mktemp -d)
trap 'kill "$img_pid" 2>/dev/null || true; rm -rf "$www"' EXIT

"$PY" - "$www" <<'PY'
import sys
import numpy as np
from PIL import Image, ImageDraw
out = sys.argv[1]
for i, (name, colour) in enumerate([("girl.jpg", (180, 30, 40)), ("fan.png", (30, 120, 170)), ("earrings.webp", (200, 160, 40))]):
    yy, xx = np.mgrid[0:900, 0:1200]
    img = np.stack([(xx * colour[0]) // 1200, (yy * colour[1]) // 900, np.full_like(xx, colour[2])], -1).astype(np.uint8)
    im = Image.fromarray(img)
    ImageDraw.Draw(im).ellipse((400, 200, 800, 700), fill=tuple(255 - c for c in colour))
    im.save(f"{out}/{name}")
PY
"$PY" -m http.server "$IMG_PORT" --bind 127.0.0.1 --directory "$www" >/dev/null 2>&1 &
img_pid=$!
sleep 1
IMG="http://127.0.0.1:$IMG_PORT"

response=$(curl -sS "$BASE/services/aigc/video-generation/video-synthesis" \
  -H "Authorization: Bearer $KEY" -H "X-DashScope-Async: enable" -H "Content-Type: application/json" \
  -d '{
    "model": "happyhorse-1.1-r2v",
    "input": {
      "prompt": "[Image 1]中身着红色旗袍的女性站在老上海的街头，[Image 2]中的折扇在她手中缓缓打开，[Image 3]中的流苏耳坠随着她转头轻轻摇晃。",
      "media": [
        {"type": "reference_image", "url": "'"$IMG"'/girl.jpg"},
        {"type": "reference_image", "url": "'"$IMG"'/fan.png"},
        {"type": "reference_image", "url": "'"$IMG"'/earrings.webp"}
      ]
    },
    "parameters": {"resolution": "720P", "ratio": "16:9", "duration": 5, "watermark": true}
  }')
echo "$response"
task_id=$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["output"]["task_id"])' "$response")
while true; do
  body=$(curl -sS "$BASE/tasks/$task_id" -H "Authorization: Bearer $KEY")
  status=$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["output"]["task_status"])' "$body")
  case "$status" in
    PENDING|RUNNING) sleep 1 ;;
    *) echo "$body"; break ;;
  esac
done
