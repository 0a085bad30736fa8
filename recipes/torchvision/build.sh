#!/usr/bin/env bash
# Thin shell: build_torchvision.py decides the switches setup.py sees and runs it (see README.md).
set -euo pipefail
"${PYTHON}" "${RECIPE_DIR}/build_torchvision.py"
