# The two commands of the README's Quick start are `make book` and `make test`.
# Both create the virtual environment .venv on first use and install requirements.txt into it.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export PYTHONHASHSEED := 0

.PHONY: venv book po test test-kernels lab execute bench lint clean help

help:
	@echo "make book     build the HTML book into _build/html, the Chinese edition into _build/html/zh (strict: warnings fail)"
	@echo "make test     pytest --nbval: unit tests, every chapter notebook, the browser test"
	@echo "make test-kernels  the chapters again with torch's scalar CPU kernels (and AVX2 on an AVX-512 CPU)"
	@echo "make lab      open the chapters in JupyterLab with the .venv kernel and live widgets (LAB_ARGS=... for more options)"
	@echo "make execute  re-run every chapter notebook on the CPU and store its outputs (NB=path for one)"
	@echo "make bench    run the benchmarks in benchmarks/ and save their output in benchmarks/results/"
	@echo "make lint     ruff check and ruff format --check"
	@echo "make po       merge the book's current English messages into the Chinese catalogues (locales/zh_CN)"

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed, found " + sys.version.split()[0])'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

venv: $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build --warningiserror --keep-going --builder html .
	$(BIN)/python _ext/i18n.py build

po: $(STAMP)
	$(BIN)/python _ext/i18n.py update

test: $(STAMP)
	$(BIN)/python -m pytest --nbval

# JupyterLab from .venv, rooted at chapters/: its python3 kernel is .venv's python (the environment's
# own kernelspec comes before any per-user one), so `import gptmini` works and the widgets are live.
# Threads and device are left to torch and gptmini.auto_device(), for speed; `make test` and
# `make execute` pin them (one thread, CPU) so that the stored outputs reproduce, so re-run digits
# may differ slightly from the stored ones here. Lab prints its URL; add LAB_ARGS=--no-browser to
# keep it from opening a browser, or e.g. LAB_ARGS=--port=8899.
LAB_ARGS ?=
lab: $(STAMP)
	@echo "JupyterLab on chapters/ with the .venv kernel: open the http://localhost:... URL it prints; Ctrl-C twice stops it"
	JUPYTER_PREFER_ENV_PATH=1 $(BIN)/jupyter lab --ServerApp.root_dir=chapters \
		$(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# Other CPUs run other vector kernels, which round differently in the last bits: the stored outputs must
# reproduce under torch's scalar kernels too, and under AVX2 where this CPU would pick AVX-512. The two
# passes run side by side (each notebook kernel uses one thread); KERNEL_NB narrows them to some chapters.
KERNEL_NB ?= chapters/
test-kernels: $(STAMP)
	@mkdir -p .cache
	@caps=default; grep -qw avx512f /proc/cpuinfo 2>/dev/null && caps="default avx2"; pids=""; \
	for cap in $$caps; do \
		ATEN_CPU_CAPABILITY=$$cap $(BIN)/python -m pytest --nbval -q $(KERNEL_NB) > .cache/kernels-$$cap.log 2>&1 & \
		pids="$$pids $$!"; done; \
	status=0; for pid in $$pids; do wait $$pid || status=1; done; \
	for cap in $$caps; do echo "== chapters under ATEN_CPU_CAPABILITY=$$cap"; tail -n 40 .cache/kernels-$$cap.log; done; \
	exit $$status

NB ?= chapters/*.ipynb
execute: $(STAMP)
	for nb in $(NB); do echo "executing $$nb"; \
		GPTMINI_DEVICE=cpu OMP_NUM_THREADS=1 $(BIN)/jupyter-execute --inplace --timeout=1200 --kernel_name=python3 $$nb || exit 1; done

bench: $(STAMP)
	@mkdir -p benchmarks/results
	for b in benchmarks/bench_*.py; do \
		$(BIN)/python $$b | tee benchmarks/results/$$(basename $$b .py).txt || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check gptmini tests benchmarks _ext conftest.py
	$(BIN)/ruff format --check gptmini tests benchmarks _ext conftest.py

clean:
	rm -rf _build .cache
