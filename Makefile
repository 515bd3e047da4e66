# Two commands on a fresh machine: `make demo` and `make test`. Each does all its own set-up.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.screener-installed

.PHONY: demo test install clean-venv

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# CPU torch first, from the local wheel (torch==2.13.0); constraints.txt stops any dependency from pulling a CUDA build.
$(STAMP): $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The main job on the embedded defaults: an offline campaign (stand-in calculators, local executor, shipped model and
# candidates) and its report. Re-running resumes the same campaign folder, so nothing is recomputed.
DEMO_DIR ?= demo-campaign
DEMO_BUDGET ?= 100
DEMO_BATCH ?= 8

demo: $(STAMP)
	$(VENV)/bin/screener run --budget $(DEMO_BUDGET) --batch $(DEMO_BATCH) --campaign $(DEMO_DIR)
	$(VENV)/bin/screener status $(DEMO_DIR)
	$(VENV)/bin/screener report $(DEMO_DIR)
	@echo "report: $(DEMO_DIR)/report/site/index.html"

test: $(STAMP)
	OMP_NUM_THREADS=2 $(PY) -m pytest -q

clean-venv:
	rm -rf $(VENV)
