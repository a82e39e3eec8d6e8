#!/usr/bin/env bash
# The README's pictures: runs the quickstart, then headless Chromium takes screenshots of its report
# and of the page of its most German-selective neuron, into docs/.
#   scripts/screenshots.sh [OUT]     (default output folder: outputs/; needs `chromium`, on Debian
#                                     `apt-get install chromium`)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-outputs}"
cargo run --release -- run experiments/quickstart.toml --out "$out"
dir="$(cd "$out/quickstart" && pwd)"
# The index lists the neurons in the order that selected them: the first is the top one.
first="$(grep -o 'href="L[0-9]*\.N[0-9]*\.html"' "$dir/viewer_a/index.html" | head -1 | cut -d'"' -f2)"
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
shot() { # FILE WIDTH,HEIGHT URL
    chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$profile" --hide-scrollbars --screenshot="$1" --window-size="$2" "$3" 2>/dev/null
}
shot docs/quickstart-report.png 1400,1500 "file://$dir/report.html"
shot docs/quickstart-neuron.png 1400,1350 "file://$dir/viewer_a/$first"
echo "docs/quickstart-report.png, docs/quickstart-neuron.png ($first)"
