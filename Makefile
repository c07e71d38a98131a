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

FUZZ_SECONDS ?= 60

.PHONY: venv js-deps run test fuzz accel accel-clean docs clean distclean

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

## js-deps: install the pinned Node test dependencies (tests/js) when npm is present
## and node_modules is missing or older than the lock file
JS_STAMP := tests/js/node_modules/.package-lock.json

js-deps:
	@if command -v npm >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory $(JS_STAMP); \
	else \
		echo "npm not found: the WebSocket tests that drive Node clients will skip"; \
	fi

$(JS_STAMP): tests/js/package.json tests/js/package-lock.json
	npm ci --prefix tests/js --no-audit --no-fund
	touch $@

## test: run the whole test suite (TESTS=... and PYTEST_ARGS=... narrow it)
test: venv js-deps
	$(VPY) -m pytest -q -p no:cacheprovider $(TESTS) $(PYTEST_ARGS)

## fuzz: coverage-guided fuzzing of the SIP parser with atheris for FUZZ_SECONDS
## (default 60); crashing inputs land in var/fuzz/crashes/.  It fuzzes the .py
## sources (SIPDISP_PURE=1) even beside a compiled build: atheris instruments bytecode
fuzz: venv
	$(VPY) -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["fuzz"]))' > $(VENV)/fuzz-requirements.txt
	$(VPY) -m pip install -q -r $(VENV)/fuzz-requirements.txt
	mkdir -p var/fuzz/corpus var/fuzz/crashes
	cp tests/data/sip-torture/rfc4475/*.dat tests/data/sip-torture/rfc5118/*.dat \
		tests/data/sip-torture/protos-c07/real/*.dat var/fuzz/corpus/
	SIPDISP_PURE=1 $(VPY) tests/fuzz/fuzz_parser.py -max_total_time=$(FUZZ_SECONDS) -max_len=20000 \
		-rss_limit_mb=2048 -artifact_prefix=var/fuzz/crashes/ var/fuzz/corpus

## accel: compile the SIP parser modules with mypyc, in place (needs a C compiler and
## the Python headers); the .py sources stay and run instead when the build is absent,
## stale (a source edited since) or SIPDISP_PURE=1 is set
accel: venv
	$(VPY) -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["accel"]))' > $(VENV)/accel-requirements.txt
	$(VPY) -m pip install -q -r $(VENV)/accel-requirements.txt
	$(VPY) scripts/build_accel.py
	$(VPY) -c 'import sipdisp.sip; print("SIP parser:", sipdisp.sip.BUILD)'

## accel-clean: remove the compiled parser (back to pure Python)
accel-clean:
	$(PYTHON) scripts/build_accel.py clean

## docs: regenerate docs/configuration.md from the schema (each package's settings.py)
docs: venv
	$(VPY) -m sipdisp.schema > docs/configuration.md.tmp
	mv docs/configuration.md.tmp docs/configuration.md

## clean: remove build leftovers, caches and the compiled parser (keeps .venv and var/)
clean: accel-clean
	rm -rf build dist *.egg-info .pytest_cache twisted/plugins/dropin.cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

## distclean: clean, and remove .venv too
distclean: clean
	rm -rf $(VENV)
