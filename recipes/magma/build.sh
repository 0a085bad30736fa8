#!/usr/bin/env bash
# Thin shell: the build logic lives in build_magma.py (unit-tested).
set -euo pipefail
"${PYTHON}" "${RECIPE_DIR}/build_magma.py"
