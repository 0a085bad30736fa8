#!/usr/bin/env bash
# Thin shell: the build logic lives in build_driver.py (unit-tested).
set -euo pipefail
"${PYTHON}" "${RECIPE_DIR}/build_driver.py"
