# recsys-stream: `make demo` runs the whole job on synthetic data; `make test` runs the tests.
# Stage outputs are file targets: a second run does nothing, and touching a raw
# file reruns what follows it. Each stage's JSON stats file is written last, so
# it is the target that says the stage finished.

PY ?= python3
DATA ?= data
# Training and split parameters: unset means the code's own default
# (recsys_stream/config.py, pipeline/split.py), so each default lives in one place.
SEED ?=
VAL_PROP ?=
EPOCHS ?=
DIM ?=
NEGATIVES ?=
BATCH_SIZE ?=
DEMO_PRODUCTS ?= 100000
QUIET ?=
quiet = $(if $(QUIET),--quiet)
VARIANTS := mf-binary mf-continuous mf_bias-binary mf_bias-continuous

# The public address of McAuley's 2014 per-category metadata files.
AMAZON_2014 := http://snap.stanford.edu/data/amazon/productGraph/categoryFiles

flag = $(if $(2),$(1) $(2))
TRAIN_FLAGS = $(call flag,--epochs,$(EPOCHS)) $(call flag,--dim,$(DIM)) \
	$(call flag,--negatives,$(NEGATIVES)) $(call flag,--batch-size,$(BATCH_SIZE)) \
	$(call flag,--seed,$(SEED)) $(quiet)
SPLIT_FLAGS = $(call flag,--val-prop,$(VAL_PROP)) $(call flag,--seed,$(SEED))

.PHONY: help install deps test lint format bench clean demo electronics books
.DELETE_ON_ERROR:

help:
	@echo "make demo         whole pipeline on a synthetic catalog (DEMO_PRODUCTS=$(DEMO_PRODUCTS))"
	@echo "make electronics  meta_Electronics.json.gz (downloaded, or RAW=path)"
	@echo "make books        meta_Books.json.gz (downloaded, or RAW=path)"
	@echo "make test         lint and the test suite"
	@echo "make bench        benchmarks; rewrites the README's Performance section"
	@echo "make install      dependencies (CPU torch 2.13.0) and dev tools"
	@echo "make clean        derived files under $(DATA)/ (never raw/)"

install:
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'

deps:  # install only when something is missing
	@$(PY) -c "import torch, polars, pyarrow, ijson, sklearn, matplotlib, tqdm" 2>/dev/null \
		|| $(MAKE) --no-print-directory install

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format:
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

test: lint
	$(PY) -m pytest -n 2 tests

bench: deps
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) tests/bench/run_all.py

clean:
	find $(DATA) -mindepth 2 -maxdepth 2 ! -name raw -exec rm -rf {} + 2>/dev/null || true

# $(1): dataset name, $(2): raw file. Stage outputs and their real inputs.
define DATASET
$(DATA)/$(1)/parse.json: $(2)
	$(PY) -m pipeline parse $$< --out $(DATA)/$(1) $(quiet)
$(DATA)/$(1)/pairs.json: $(DATA)/$(1)/parse.json
	$(PY) -m pipeline pairs $(DATA)/$(1) $(quiet)
$(DATA)/$(1)/split.json: $(DATA)/$(1)/pairs.json
	$(PY) -m pipeline split $(DATA)/$(1) $(SPLIT_FLAGS) $(quiet)
$(DATA)/$(1)/runs/%/summary.json: $(DATA)/$(1)/split.json
	$(PY) -m recsys_stream train $(DATA)/$(1) --name $$* \
		--model $$(firstword $$(subst -, ,$$*)) --labels $$(lastword $$(subst -, ,$$*)) $(TRAIN_FLAGS)
$(DATA)/$(1)/report.md: $(foreach v,$(VARIANTS),$(DATA)/$(1)/runs/$(v)/summary.json)
	$(PY) -m recsys_stream report $(DATA)/$(1) $(quiet)
endef

DEMO_RAW := $(DATA)/demo/raw/synthetic-$(DEMO_PRODUCTS).json.gz
ELECTRONICS_RAW := $(if $(RAW),$(RAW),$(DATA)/electronics/raw/meta_Electronics.json.gz)
BOOKS_RAW := $(if $(RAW),$(RAW),$(DATA)/books/raw/meta_Books.json.gz)
$(eval $(call DATASET,demo,$(DEMO_RAW)))
$(eval $(call DATASET,electronics,$(ELECTRONICS_RAW)))
$(eval $(call DATASET,books,$(BOOKS_RAW)))

$(DEMO_RAW):
	$(PY) -m pipeline synth $@ --products $(DEMO_PRODUCTS) --format py $(call flag,--seed,$(SEED)) $(quiet)

# Download into a .part file and rename, so a failed fetch leaves nothing behind.
$(DATA)/%/raw/meta_Electronics.json.gz $(DATA)/%/raw/meta_Books.json.gz:
	@mkdir -p $(@D)
	@echo "fetching $(AMAZON_2014)/$(@F)"
	@curl -fL --retry 2 --connect-timeout 20 -o $@.part $(AMAZON_2014)/$(@F) \
		|| { rm -f $@.part; echo "error: could not download $(AMAZON_2014)/$(@F); \
	download it elsewhere and put it at $@, or run make $* RAW=/path/to/$(@F)" >&2; exit 1; }
	@mv $@.part $@

demo electronics books:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory $(DATA)/$@/report.md
