#!/usr/bin/env bash
# Run transformers' own common model tests on ScratchGPT (tests/upstream) against a transformers source tree of
# the installed transformers release. Downloads nothing: tests/upstream/README.md says how to get a tree.
#
#   tests/upstream/run.sh TREE [pytest arguments...]      e.g. tests/upstream/run.sh /tmp/transformers-5.24.0 -k sdpa
#
# TREE: a git checkout of tag v<version> (every common test) or the extracted PyPI sdist (ModelTesterMixin only).
# PYTHON picks the interpreter (default .venv/bin/python); put another transformers first on PYTHONPATH to test it.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ $# -lt 1 ]; then
    sed -n '2,8p' "$0" >&2
    exit 2
fi
tree=$1
shift
PYTHON=${PYTHON:-.venv/bin/python}
# A missing or mismatched tree (or a missing test dependency) fails the run: a skip would pass without testing.
export TRANSFORMERS_TESTS_DIR=$tree TRANSFORMERS_TESTS_REQUIRED=1
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
"$PYTHON" -c "import transformers; print('transformers', transformers.__version__, 'from', transformers.__file__)"
# transformers' own conftest (not loaded here) registers the custom marks its tests carry.
exec "$PYTHON" -m pytest -q -p no:cacheprovider -rfEs -W ignore::pytest.PytestUnknownMarkWarning tests/upstream "$@"
