#!/usr/bin/env bash
# GPU check for a lent device machine (see ../shared/device/README.md): run from the repo root
# there, with .whl carried (bash ../shared/device/fetch-wheels.sh here first). Writes logs to $OUT.
set -u
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__, torch.cuda.get_device_name(0))"
} 2>&1 | tee "$OUT/env.txt"
# The trainer's tests that need no Keras; device="auto" makes them train on the GPU here.
timeout 300 python3 -m pytest -p no:cacheprovider -q tests/test_run.py \
  tests/test_packing.py $(ls tests/test_space.py tests/test_template.py tests/test_config.py tests/test_data.py \
       tests/test_models.py tests/test_diagnosis.py 2>/dev/null) 2>&1 | tee "$OUT/pytest.txt"
timeout 200 python3 bench/trial_overhead.py --device cuda --repeats 5 2>&1 | grep -v Warn | tee "$OUT/bench_cuda.txt"
timeout 200 python3 bench/trial_overhead.py --device cpu --repeats 5 2>&1 | grep -v Warn | tee "$OUT/bench_cpu.txt"
timeout 120 python3 -m service.cli demo --device cuda 2>&1 | tail -15 | tee "$OUT/demo.txt"
timeout 200 python3 bench/packing.py --device cuda --repeats 3 2>&1 | grep -v Warn | tee "$OUT/bench_packing_cuda.txt"
