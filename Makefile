# Two commands on a fresh machine: `make demo` (the default pipeline end to end) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
CONFIG ?= config.yaml
SNAKEMAKE := $(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG)
DEV := $(VENV)/.dev-installed

.PHONY: demo test lint format dryrun report pull clean

# uv installs the pins in about a minute (pip takes three). Byte-code is compiled up front: every
# job is a fresh interpreter importing torch, and PYTHONDONTWRITEBYTECODE may be set.
INSTALL := $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python

$(BIN)/snakemake: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==0.13.9
	$(INSTALL) -e .
	touch $@

# Tests and linters also need the dev tools (pytest, ruff, snakefmt, SAELens for the round trip).
$(DEV): $(BIN)/snakemake
	$(INSTALL) -e '.[dev]'
	touch $@

demo: $(BIN)/snakemake
	$(SNAKEMAKE)
	$(SNAKEMAKE) --report results/report.html

test: $(DEV)
	$(BIN)/pytest -q

lint: $(DEV)
	$(BIN)/ruff check src scripts tests benchmarks
	$(BIN)/ruff format --check src scripts tests benchmarks
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint --configfile $(CONFIG)

format: $(DEV)
	$(BIN)/ruff format src scripts tests benchmarks
	$(BIN)/snakefmt Snakefile rules

dryrun: $(BIN)/snakemake
	$(SNAKEMAKE) -n

# Restore every artifact from the DVC remote and make Snakemake trust it (DVC does not keep file
# times, so restored inputs would look newer than their outputs).
pull: $(BIN)/snakemake
	$(BIN)/dvc pull
	$(SNAKEMAKE) --touch

clean:
	rm -rf results .snakemake
