#!/usr/bin/env bash
# npm run bench: sets up, then measures the pipeline against baselines in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node dist/scripts/bench.js
