#!/usr/bin/env bash
# On the lent GPU machine (no internet): install the carried wheels (fvcore and friends, and this
# repo's packages built here with `pip wheel --no-deps . plugins/ticketforge-ddpm -w .whl`).
set -e
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site
python3 -c "import ticketforge, ticketforge_ddpm, fvcore, torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
