# Two entry points: `make demo` and `make test`. Both create/refresh .venv only when
# requirements.txt or pyproject.toml changed (the stamp file records the last install).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test unit dist venv clean-runs browser-test

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (medgan)" >/dev/null
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m medgan_core.batch demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 MEDGAN_SMOKE=1 $(PY) -m pytest -q --durations=15 --nbval-lax --nbval-current-env tests notebooks

# the wheel (package + notebooks) in dist/; `medgan kaggle-bundle` adds the wheels Kaggle lacks
dist: $(STAMP)
	$(PY) -m pip wheel --no-deps --no-build-isolation -q -w dist .

# unit tests only: no notebooks, no papermill batch runs, no SIGKILL resume workers (~a third of `make test`)
unit: $(STAMP)
	HF_HUB_OFFLINE=1 MEDGAN_SMOKE=1 $(PY) -m pytest -q --durations=10 -m "not slow" tests

# the explorers in a real browser (Voila + headless Chromium): Debian's chromium and chromium-driver via apt-get
# when missing (CI runs as root), voila + selenium from requirements-browser.txt; ~1 minute
browser-test: $(VENV)/.browser
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q browser_tests

$(VENV)/.browser: requirements-browser.txt $(STAMP)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver)
	$(PY) -m pip install --quiet -r requirements-browser.txt
	touch $@
