# Two entry points, each doing the whole set-up from a fresh clone:
#   make demo   set up .venv and run the main job on the embedded synthetic data
#   make test   set up .venv and run the test suite
# Set-up is idempotent: a stamp file records what was installed, and it is redone only
# when setup.cfg or pyproject.toml change; the detectron2 installer checks its own marker.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.seg_suite-setup
DEMO_DIR ?= demo_output
PYTEST_ARGS ?=

.PHONY: setup demo test clean-demo

setup: $(STAMP)
	@# detectron2 (pure-Python, patched v0.6): skips in < 1 s when our current patch is installed
	@$(PY) tools/install_detectron2.py
	@# headless Chromium (Debian's package) for the report tests; installed once, when missing
	@test -x /usr/bin/chromium || { echo "installing chromium (apt-get)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null \
	  || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }; }

$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

demo: setup
	$(PY) tools/demo.py --output $(DEMO_DIR)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

clean-demo:
	rm -rf $(DEMO_DIR)
