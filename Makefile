# Two commands on a fresh machine: `make demo` (the default pipeline end to end) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
CONFIG ?= config.yaml
SNAKEMAKE := $(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG)
# The config's results root (its `results:` key, default results): read when a recipe runs, once
# the environment exists.
RESULTS = $(shell $(BIN)/python -c 'import yaml; print(yaml.safe_load(open("$(CONFIG)")).get("results", "results"))')
# DVC stages are GROUP@NAME, NAME the config file's stem (config, smoke, paper; see dvc.yaml).
# GROUP: world, data, activations, saes or tables; each comes with the groups it was made from,
# so the default, tables, is all of them.
GROUP ?=
STAGES = $(addsuffix @$(basename $(notdir $(CONFIG))),$(or $(GROUP),tables))
DEV := $(VENV)/.dev-installed

.PHONY: demo test lint format dryrun rehearsal pull push clean

# uv installs the pins in seconds from a warm cache (pip takes minutes). Every job is a fresh
# interpreter importing torch, so byte-code must be cached: Python writes it on first import, for
# the modules the jobs use (about 20 s of compiling), where compiling all 25,000 files of the
# environment up front (`--compile-bytecode`) took 42 s on 2 cores before the first job could
# start. PYTHONDONTWRITEBYTECODE, if set, would make every job compile its imports again.
unexport PYTHONDONTWRITEBYTECODE
INSTALL := $(BIN)/uv pip install --quiet --python $(BIN)/python

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
	$(SNAKEMAKE) --report $(RESULTS)/report.html

test: $(DEV)
	$(BIN)/pytest -q --durations=25 -n 2 --dist loadgroup --no-loadscope-reorder

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

# The paper config rehearsed offline on a miniature hub (tiny random-init models in each library's
# format, tiny datasets packed as their public archives, served on loopback): builds the hub in
# rehearsal/, serves it and runs every job of the paper DAG with configs/rehearsal.yaml on top.
rehearsal: $(BIN)/snakemake
	$(BIN)/python -m saeprobe.rehearsal --workdir rehearsal --cores $(CORES)

# Record this config's artifacts (GROUP and what it was made from; default all) in dvc.lock and
# upload them to the DVC remote; then commit dvc.lock with git.
push: $(BIN)/snakemake
	$(BIN)/dvc commit --force --with-deps $(STAGES)
	$(BIN)/dvc push --with-deps $(STAGES)

# Restore this config's artifacts (GROUP and what it was made from; default all) from the DVC
# remote and make Snakemake trust them (DVC does not keep file times, so restored inputs would
# look newer than their outputs). What follows an unrestored group is then recomputed.
pull: $(BIN)/snakemake
	$(BIN)/dvc pull --with-deps $(STAGES)
	$(SNAKEMAKE) --touch $(GROUP)

clean:
	rm -rf results .snakemake rehearsal
