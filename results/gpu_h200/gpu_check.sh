#!/bin/bash
# Device check for issues 16/18: gpu tests, then relational-gnn timings on synthetic pairs.
# usage, from the repository root: bash results/gpu_h200/gpu_check.sh DEV N_SMALL N_LARGE LARGE_MINUTES
#   DEV=cuda: a machine whose python3 has torch with CUDA but no package registry; the packages it lacks
#   (pydantic, pydantic_core, annotated-types, typing-inspection, faiss-cpu) travel as wheels in .whl/
#   (`pip download --only-binary=:all: --python-version 3.12 ... -d .whl NAME==VERSION`).
#   DEV=cpu: the reference here, with the project's .venv.
# Ran on 2026-12-04: `... cuda 15000 100000 2.5` on the lent H200, `... cpu 15000 2000 0.1` here (2 cores).
DEV=${1:-cuda}; N1=${2:-15000}; N2=${3:-100000}; MIN2=${4:-2.5}
export PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/gpuout}; mkdir -p $OUT
if [ "$DEV" = cuda ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
  export PYTHONPATH=/tmp/site:$PWD PY=python3
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $OUT/env.txt
else
  export PY=.venv/bin/python
fi
$PY -c "import sys,torch,faiss,numpy;print(sys.version.split()[0],'torch',torch.__version__,'cuda',torch.cuda.is_available(),'faiss',faiss.__version__,'numpy',numpy.__version__)" >> $OUT/env.txt
nproc >> $OUT/env.txt
T0=$(date +%s)
timeout 150 $PY -m pytest -q -m gpu -p no:cacheprovider tests/test_relational_gnn.py tests/test_search.py -rA > $OUT/gpu_tests.log 2>&1
echo "gpu tests rc=$? $(( $(date +%s)-T0 )) s" >> $OUT/env.txt
M="$PY -m mmea.cli -q"
$M datasets synth --entities $N1 --seed 0 --out /tmp/s1 --overwrite >> $OUT/log.txt 2>&1
$M datasets synth --entities $N2 --seed 0 --out /tmp/s2 --overwrite >> $OUT/log.txt 2>&1
run() { name=$1; shift; T=$(date +%s)
  $M align "$@" --model relational-gnn --device $DEV --seed 0 --seed-ratio 0.3 --set features.names=off \
     --out /tmp/r_$name --overwrite >> $OUT/log.txt 2>&1; rc=$?
  echo "$name rc=$rc wall=$(( $(date +%s)-T )) s" >> $OUT/env.txt
  cp /tmp/r_$name/metrics.json $OUT/$name.json 2>/dev/null; }
run gnn_small --pair /tmp/s1
run gnn_small_it --pair /tmp/s1 --set model.iterations=3
run gnn_large --pair /tmp/s2 --set model.max_minutes=$MIN2 --set model.epochs=60 --set features.cache=false
cat $OUT/env.txt
