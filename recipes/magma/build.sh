#!/usr/bin/env bash
# Thin shell: the build logic lives in build_magma.py (unit-tested).
# Python is a build requirement only (MAGMA has no Python), so it is the build env's, not $PYTHON.
set -euo pipefail
"${BUILD_PREFIX}/bin/python" "${RECIPE_DIR}/build_magma.py"
