#!/usr/bin/env bash
# Create bench/.venv-tia: TIAToolbox (installed --no-deps, as it pins an older torch) with the
# runtime dependencies it needs, shindan's torch, and shindan itself (--no-deps) so it can load
# a shindan model card. Used by bench/tiatoolbox_compare.py. Does nothing if already built
# from the current requirements; delete bench/.venv-tia to rebuild.
#
# Usage: bench/setup_tiatoolbox.sh        (PY=python3.11 by default)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
VENV="$HERE/.venv-tia"
REQ="$HERE/tiatoolbox-requirements.txt"
STAMP="$VENV/.installed"
PY="${PY:-python3.11}"

if [[ -f "$STAMP" && "$STAMP" -nt "$REQ" && "$STAMP" -nt "${BASH_SOURCE[0]}" ]]; then
    exit 0
fi
command -v "$PY" >/dev/null 2>&1 || { echo "error: $PY not found" >&2; exit 2; }

# pip's end-of-install check reports tiatoolbox's own torch/click pins, deliberately not met.
quiet_pip() {
    "$VENV/bin/python" -m pip "$@" 2>&1 | {
        grep -v -e "^tiatoolbox .* requires " -e "dependency resolver does not currently" || true
    }
}

echo "setting up $VENV (TIAToolbox benchmark venv)…" >&2
rm -f "$STAMP"
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
# 1. shindan's torch with its own platform dependencies.
quiet_pip install -q $(grep -E '^(torch|torchvision)==' "$REQ" | sed 's/ *#.*//')
# 2. everything else, pinned and complete, without dependency resolution.
quiet_pip install -q --no-deps -r "$REQ"
quiet_pip install -q --no-deps -e "$ROOT"
"$VENV/bin/python" - <<'EOF'
from tiatoolbox.models.engine.semantic_segmentor import SemanticSegmentor  # noqa: F401
from shindan.models import load_network  # noqa: F401
EOF
touch "$STAMP"
echo "ready: $VENV" >&2
