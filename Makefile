# Two commands set everything up on a fresh machine (Python 3.10+ and pip only):
#   make demo   - creates .venv, installs the zoo, runs the main job on the bundled photos
#   make test   - creates .venv, installs the zoo with its test extras, runs the default test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is installed first and pinned: an unpinned torch pulls the CUDA build (gigabytes).
TORCH_PIN := torch==2.13.0
EXTRAS ?= mobile,data,test

.PHONY: demo test test-slow venv clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/zoo demo

test: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow"

test-slow: $(VENV)/.installed
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) demo_out .pytest_cache
