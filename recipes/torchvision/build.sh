#!/usr/bin/env bash
# Thin shell: setup.py does the work; the recipe passes its settings in the environment.
set -euo pipefail
"${PYTHON}" setup.py install --single-version-externally-managed --record=record.txt
