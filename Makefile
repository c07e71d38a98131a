# sipdisp developer commands.  `make run` starts the proxy, `make test` runs
# every test.  Both create .venv with the dependencies first if needed.
#
# The working tree itself (not an installed copy) is what runs and is tested:
# its root goes first on PYTHONPATH.  The project is deliberately not installed
# into .venv: an editable install hides twisted/plugins/ from twistd's plugin
# scan, and a regular install would shadow the tree's plugin with a stale copy.

PYTHON      ?= python3
VENV        ?= .venv
CONFIG      ?= etc/sipdisp.yaml
TESTS       ?= tests
PYTEST_ARGS ?=

VPY   := $(VENV)/bin/python
STAMP := $(VENV)/.sipdisp-deps

export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv run test docs clean distclean

## venv: create .venv and install the build, runtime and test dependencies from pyproject.toml
venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")); print("\n".join(p["build-system"]["requires"] + p["project"]["dependencies"] + p["project"]["optional-dependencies"]["test"]))' > $(VENV)/requirements.txt
	$(VPY) -m pip install -q -r $(VENV)/requirements.txt
	touch $@

## run: start the proxy in the foreground with $(CONFIG)
run: venv
	mkdir -p var
	$(VENV)/bin/twistd -n --pidfile= sipdisp -c $(CONFIG)

## test: run the whole test suite (TESTS=... and PYTEST_ARGS=... narrow it)
test: venv
	$(VPY) -m pytest -q -p no:cacheprovider $(TESTS) $(PYTEST_ARGS)

## docs: regenerate docs/configuration.md from the schema (each package's settings.py)
docs: venv
	$(VPY) -m sipdisp.schema > docs/configuration.md.tmp
	mv docs/configuration.md.tmp docs/configuration.md

## clean: remove build leftovers and caches (keeps .venv and var/)
clean:
	rm -rf build dist *.egg-info .pytest_cache twisted/plugins/dropin.cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

## distclean: clean, and remove .venv too
distclean: clean
	rm -rf $(VENV)
