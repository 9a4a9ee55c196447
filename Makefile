# Two commands set everything up on a fresh machine (Python 3.10+ and pip only):
#   make demo   - creates .venv, installs the zoo, runs the main job on the bundled photos
#   make test   - creates .venv, installs the zoo with its test extras, runs the default test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is installed first and pinned: an unpinned torch pulls the CUDA build (gigabytes).
TORCH_PIN := torch==2.13.0
EXTRAS ?= mobile,data,test

# The Kotlin compiler for the Android demo's core-module tests (tests/test_android_core.py),
# from the npm registry; best effort: without npm those tests skip and say why.
KOTLIN_HOME ?= $(CURDIR)/.tools/node_modules/kotlin-compiler
export KOTLIN_HOME

.PHONY: demo test test-slow venv clean kotlin

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/zoo demo

.tools/.kotlin:
	@mkdir -p .tools
	@if command -v npm >/dev/null 2>&1; then \
		npm install --silent --no-audit --no-fund --prefix .tools kotlin-compiler@2.1.0 && touch $@ \
		|| echo "kotlin-compiler not installed: the Android core tests will be skipped"; \
	else echo "npm not found: the Android core tests will be skipped"; fi

kotlin: .tools/.kotlin

test: $(VENV)/.installed kotlin
	$(PY) -m pytest -q -m "not slow"

test-slow: $(VENV)/.installed
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) demo_out .pytest_cache .tools
