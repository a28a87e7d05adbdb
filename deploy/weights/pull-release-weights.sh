#!/bin/sh
# pull-release-weights.sh NAME...: fetch the paper's release weights into $WEIGHTS_DIR and
# pin every file by sha256 (the release publishes no checksums, so the catalog has none).
#
#   - $PINS_FILE lists "SHA256  FILENAME" lines (sha256sum format, '#' comments): when it
#     has any, every file must match them (pins you supply);
#   - otherwise the digests are recorded in $WEIGHTS_DIR/SHA256SUMS on the first pull and
#     every later run verifies against that record (trust on first use).
# A mismatch exits non-zero, so the services that wait for this job never start on
# weights that changed.
set -eu
WEIGHTS_DIR=${WEIGHTS_DIR:-/weights}
PINS_FILE=${PINS_FILE:-}
RECORD="$WEIGHTS_DIR/SHA256SUMS"
PYTHON=${PYTHON:-python}

[ "$#" -gt 0 ] || { echo "usage: $0 WEIGHTS_NAME..." >&2; exit 2; }
mkdir -p "$WEIGHTS_DIR"
for name in "$@"; do
  "$PYTHON" -m transtic weights pull "$name" --cache-dir "$WEIGHTS_DIR" --no-progress
done

pins=$(mktemp)
trap 'rm -f "$pins"' EXIT
if [ -n "$PINS_FILE" ] && [ -f "$PINS_FILE" ]; then
  grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$PINS_FILE" > "$pins" || true
fi
cd "$WEIGHTS_DIR"
if [ -s "$pins" ]; then
  echo "verifying against the pinned digests in $PINS_FILE"
  sha256sum --check --strict "$pins"
elif [ -s "$RECORD" ]; then
  echo "verifying against the digests recorded on the first pull ($RECORD)"
  sha256sum --check --strict "$RECORD"
  # Files pulled since the record was written are added to it (first use for them).
  for file in *.pth.tar; do
    grep -q "  $file\$" "$RECORD" || sha256sum "$file" >> "$RECORD"
  done
else
  sha256sum -- *.pth.tar > "$RECORD"
  echo "first pull: recorded the digests in $RECORD; later runs verify against them"
  cat "$RECORD"
fi
