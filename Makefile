# The two commands a new user runs: `make demo` and `make test`. Both create .venv if needed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NOTEBOOKS ?= $(wildcard notebooks/*.ipynb)
TESTS     ?= $(wildcard tests/test_*.py)
NBVAL_FLAGS := --nbval --nbval-current-env --nbval-cell-timeout=900 \
               --nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider

.PHONY: demo test test-py test-nb test-portable test-browser chromium lab bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "Python 3.10+ needed, found " + sys.version' 
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

## make demo: generate data, train the laptop profile on the CPU, evaluate on the test set, on
## lines typeset by another renderer in fonts held out of training, and read a few typed words
## in 30 minutes (the venv excluded): the training gets what the data stage leaves, less a
## reserve for the evaluations scaled to the data stage's pace (ocrlib.budget.job_budget), and
## at most the profile's 25 minutes. make expands the whole recipe once the venv is ready, just
## before its first line runs: DEMO_STARTED is that moment.
CKPT := checkpoints/best_mamba_ocr.pth
WORDS := Hello Mamba2026 OCR kernel Zebra42 quartz
DEMO_SECONDS := 1800
DEMO_STARTED = $(shell date +%s)
demo: $(STAMP)
	$(PY) -m ocrlib synth --out data --profile laptop --seed 0 --overwrite --quiet
	$(PY) -m ocrlib show data/train --n 6 --grid data/train_samples.png
	$(PY) -m ocrlib train --profile laptop --train data/train --val data/val --out $(CKPT) \
		--job-seconds $(DEMO_SECONDS) --job-started $(DEMO_STARTED)
	$(PY) -m ocrlib eval --data data/test --checkpoint $(CKPT) --show 8 --failures data/test_failures.png
	$(PY) benchmarks/foreign_set.py --out data/foreign --n 300 --seed 0 --overwrite
	$(PY) -m ocrlib eval --data data/foreign --checkpoint $(CKPT) --show 4
	$(PY) benchmarks/foreign_set.py --out data/foreign_ink --n 300 --seed 0 --crop ink --overwrite
	$(PY) -m ocrlib eval --data data/foreign_ink --checkpoint $(CKPT)
	$(PY) benchmarks/foreign_set.py --out data/typed --words $(WORDS) --overwrite
	$(PY) -m ocrlib infer data/typed/images --checkpoint $(CKPT)

## make test: pytest on tests/, nbval on every notebook (fails when either set is empty), nbval
## again on the training notebooks under other numerics (test-portable), then the error browser
## in headless Chromium where Chromium is installed or installable
test: test-py test-nb test-portable test-browser

## pytest runs the tests in PYTEST_WORKERS processes of one thread each (pytest-xdist): on 2
## cores that took 10 min 46 s where one process of two threads took 16 min 7 s (small models
## keep two threads busy badly, and the command-line tests mostly start Python)
PYTEST_WORKERS ?= 2
test-py: $(STAMP)
	@test -n "$(TESTS)" || { echo "make test: no tests in tests/" >&2; exit 1; }
	OMP_NUM_THREADS=1 $(PY) -m pytest -n $(PYTEST_WORKERS) $(TESTS)

test-nb: $(STAMP)
	@test -n "$(NOTEBOOKS)" || { echo "make test: no notebooks in notebooks/" >&2; exit 1; }
	$(PY) -m pytest $(NBVAL_FLAGS) $(NOTEBOOKS)

## make test-portable: nbval on the notebooks that train, under other numerics than make test's:
## one thread instead of all, and bf16 autocast forced on where this CPU has fast bf16 (forced
## off otherwise). A notebook check that depends on the processor fails here on any one machine.
TRAINING_NOTEBOOKS ?= notebooks/04_ctc_training.ipynb notebooks/05_decoding_and_metrics.ipynb \
                      notebooks/06_error_analysis.ipynb notebooks/07_your_own_data.ipynb
test-portable: $(STAMP)
	OMP_NUM_THREADS=1 OCRLIB_AMP=$$($(PY) -c 'from ocrlib.precision import cpu_has_fast_bf16 as f; print("bf16" if f() else "off")') \
		$(PY) -m pytest $(NBVAL_FLAGS) $(TRAINING_NOTEBOOKS)

## make test-browser: notebook 06 in JupyterLab in headless Chromium, driven by Playwright.
## Installs Debian's chromium when missing (as root, or with password-less sudo); where it
## cannot, says so and does not fail.
test-browser: $(STAMP)
	@if $(MAKE) --no-print-directory chromium; then \
		$(PY) -m pytest -p no:cacheprovider tests/browser; \
	else \
		echo "make test-browser: Chromium is not installed and cannot be installed here; browser test not run" >&2; \
	fi

chromium:
	@command -v chromium >/dev/null 2>&1 && exit 0; \
	command -v apt-get >/dev/null 2>&1 || exit 1; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else exit 1; fi; \
	echo "installing Debian's chromium for the browser test"; \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || \
		{ $$SUDO apt-get update -q >/dev/null 2>&1 && \
		  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; }; \
	command -v chromium >/dev/null 2>&1

lab: $(STAMP)
	$(PY) -m jupyter lab notebooks

bench: $(STAMP)
	$(PY) benchmarks/synth_speed.py
	$(PY) benchmarks/encoder_speed.py
	$(PY) benchmarks/decode_speed.py
	$(PY) benchmarks/infer_speed.py

## make clean works without .venv (ocrlib clean needs only the standard library)
clean:
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) -m ocrlib clean
