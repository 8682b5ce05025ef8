# recsys-stream: `make demo` runs the whole job on synthetic data; `make test` runs the tests.
# Stage outputs are file targets: a second run does nothing, and touching a raw
# file reruns what follows it. Each stage's JSON stats file is written last, so
# it is the target that says the stage finished.

# The environment every Python command runs in: an activated virtual or conda
# environment when there is one, else the project's own .venv, made by $(PY)
# on first use. A system interpreter is never installed into (PEP 668).
PY ?= python3
ifneq ($(VIRTUAL_ENV),)
VENV ?= $(VIRTUAL_ENV)
else ifneq ($(CONDA_PREFIX),)
VENV ?= $(CONDA_PREFIX)
else
VENV ?= .venv
endif
PYTHON := $(VENV)/bin/python
# Exact versions CI passes with; `make constraints` refreshes it from the environment.
CONSTRAINTS := .ci/constraints.txt
# Written last by each install, so a half-made environment is never taken for a working one.
INSTALLED := $(VENV)/.recsys-stream-installed
BENCH_INSTALLED := $(VENV)/.recsys-stream-bench-installed
PIP := $(PYTHON) -m pip install --quiet --constraint $(CONSTRAINTS)
DATA ?= data
# Training and split parameters: unset means the code's own default
# (recsys_stream/core/config.py, pipeline/split.py), so each default lives in one place.
# SEED seeds the splits, walks, sequences and trainings; a synthetic input is
# fixed by its size (DEMO_PRODUCTS), so that the demo's figures are docs/running.md's.
SEED ?=
VAL_PROP ?=
VAL_NEGATIVES ?=
EPOCHS ?=
DIM ?=
NEGATIVES ?=
BATCH_SIZE ?=
# The engine of parse, pairs and split: unset means polars on this machine;
# ENGINE=spark runs them on Spark at SPARK_MASTER (unset: local[*]). Not a
# stage setting: both engines write the same files, so switching reruns nothing.
ENGINE ?=
SPARK_MASTER ?=
DEMO_PRODUCTS ?= 100000
QUIET ?=
quiet = $(if $(QUIET),--quiet)
VARIANTS := mf-binary mf-continuous mf_bias-binary mf_bias-continuous
# Skip-gram over random walks of the train pairs, at the model's own defaults
# (SKIPGRAM_DEFAULTS in recsys_stream/core/config.py: one epoch, 32 negatives shared
# by each batch of 8,192 pairs); EPOCHS= and BATCH_SIZE= still apply, as a flag
# given wins over them.
# skipgram-side adds brand, category and price vectors to each product's.
SKIPGRAM := skipgram-binary
SKIPGRAM_SIDE := skipgram-side
SKIPGRAM_FLAGS := --model skipgram

# SIMILAR_ALL=1: each run of the dataset also writes its batch table once it has
# trained (rewritten when the run or these settings change): a product dataset's
# runs every product's SIMILAR_K most similar (runs/NAME/similar.parquet), a
# ratings dataset's runs of models with vectors every user's SIMILAR_K best unrated
# items (runs/NAME/recommend.parquet). SIMILAR_METHOD=ann searches a faiss index.
SIMILAR_ALL ?=
SIMILAR_K ?=
SIMILAR_METHOD ?=

# The public address of McAuley's 2014 per-category metadata files.
AMAZON_2014 := http://snap.stanford.edu/data/amazon/productGraph/categoryFiles
# MovieLens 100K, a zip holding u.data (ratings) and u.item (titles).
MOVIELENS_100K := https://files.grouplens.org/datasets/movielens/ml-100k.zip
# A ratings dataset trains each rating model under its own name.
RATING_MODELS := mf mf_bias pmf embedding_net
# The rating models whose users and items are vectors, which recommend --all searches.
VECTOR_RATING_MODELS := mf mf_bias pmf svdpp bpmf bpmf_svdpp
# A sequences dataset (split by time) trains these: a run named MODEL-next
# trains MODEL on the next item (--task next-item).
SEQUENCE_RUNS := mf_bias embedding_net lstm lstm-next gru-next
# `make sequences` without RAW=: synthetic ratings with a planted order.
SEQUENCE_DEMO := --users 6000 --items 3000 --ratings 300000 --sequential
MAX_LENGTH ?=
ifneq ($(filter sequences,$(MAKECMDGOALS)),)
NAME ?= sequences
endif
NAME ?= ratings
TITLES ?=
# The ratings' scale, MIN:MAX, for a file whose format does not fix one (RecBole's
# .inter) or whose ratings lie on another (pipeline ratings --scale).
SCALE ?=

# Each stage's options from the make variables: the same text goes into its
# command and its settings file (SETTINGS), so a variable that reaches one
# reaches the other (tests/test_make_settings.py checks every documented one).
flag = $(if $(2),$(1) $(2))
TRAIN_FLAGS = $(call flag,--epochs,$(EPOCHS)) $(call flag,--dim,$(DIM)) \
	$(call flag,--negatives,$(NEGATIVES)) $(call flag,--batch-size,$(BATCH_SIZE)) \
	$(call flag,--seed,$(SEED))
ENGINE_FLAGS = $(call flag,--engine,$(ENGINE)) $(call flag,--spark-master,$(SPARK_MASTER))
SPLIT_FLAGS = $(call flag,--val-prop,$(VAL_PROP)) $(call flag,--negatives,$(VAL_NEGATIVES)) \
	$(call flag,--seed,$(SEED))
WALK_FLAGS = $(call flag,--seed,$(SEED))
RATING_FLAGS = $(call flag,--scale,$(SCALE))
RATING_SPLIT_FLAGS = $(call flag,--val-prop,$(VAL_PROP)) $(call flag,--seed,$(SEED))
SEQUENCE_FLAGS = $(call flag,--max-length,$(MAX_LENGTH)) $(call flag,--seed,$(SEED))
TABLE_FLAGS = $(call flag,-k,$(SIMILAR_K)) $(call flag,--method,$(SIMILAR_METHOD))

.PHONY: help install deps test test-fast lint format bench constraints clean distclean \
	demo electronics books movielens ratings sequences FORCE
.DELETE_ON_ERROR:

help:
	@echo "make demo         whole pipeline on a synthetic catalog (DEMO_PRODUCTS=$(DEMO_PRODUCTS))"
	@echo "make electronics  meta_Electronics.json.gz (downloaded, or RAW=path)"
	@echo "make books        meta_Books.json.gz (downloaded, or RAW=path)"
	@echo "                  ENGINE=spark [SPARK_MASTER=url]: parse, pairs and split on Spark"
	@echo "make movielens    MovieLens 100K's u.data (downloaded, or RAW=path [TITLES=u.item])"
	@echo "make ratings      RAW=any ratings file [NAME=$(NAME)] [TITLES=file]: the rating models"
	@echo "                  [SCALE=MIN:MAX]: the ratings' scale where the format has none"
	@echo "make sequences    [RAW=ratings file] [NAME=sequences] [MAX_LENGTH=50]: sequence models"
	@echo "                  on each user's ratings in time order (default: synthetic ones)"
	@echo "                  SIMILAR_ALL=1 [SIMILAR_K=10] [SIMILAR_METHOD=exact|ann]: each run's"
	@echo "                  table of similar products (ratings: recommendations), every one"
	@echo "make test         lint and the test suite (what CI runs)"
	@echo "make test-fast    lint and the tests that start no make, pip, torchrun or Spark"
	@echo "make bench        benchmarks; rewrites the tables in docs/performance.md"
	@echo "make install      the environment in $(VENV): CPU torch 2.13.0, the package, dev tools, Spark"
	@echo "make constraints  pin $(CONSTRAINTS) to what $(VENV) holds now"
	@echo "make clean        derived files under $(DATA)/ (never raw/)"
	@echo "make distclean    clean, and remove .venv"

# The project's own environment, made under its final name but only taken for
# finished once .made is written, so an interrupted or failed creation is redone.
.venv/.made:
	@$(PY) -c "import venv, ensurepip" 2>/dev/null || { echo "error: $(PY) cannot make a \
	virtual environment: install python3-venv (Debian, Ubuntu: apt install python3-venv), \
	or activate an environment of your own" >&2; exit 2; }
	@echo "making the project environment .venv with $(PY)"
	@rm -rf .venv
	@$(PY) -m venv .venv || { rm -rf .venv; echo "error: $(PY) -m venv .venv failed" >&2; exit 2; }
	@touch $@

ifeq ($(VENV),.venv)
ENVIRONMENT := .venv/.made
else
ENVIRONMENT := $(PYTHON)
$(PYTHON):
	@echo "error: $(VENV) has no bin/python; activate a working environment or unset VENV" >&2
	@exit 2
endif

# torch first and pinned, so nothing else pulls a CUDA build.
$(INSTALLED): $(ENVIRONMENT) pyproject.toml $(CONSTRAINTS)
	@$(if $(filter .venv,$(VENV)),,echo "using the environment $(VENV)")
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev,spark]'
	@touch $@

# recbole's wheel is installed without its dependencies for the MovieLens 100K
# copy it ships (the bench's data where nothing can be downloaded).
$(BENCH_INSTALLED): $(INSTALLED)
	$(PIP) -e '.[bench]'
	$(PIP) --no-deps recbole==1.2.1
	@touch $@

install: $(INSTALLED)

# What the data targets run first: silent when nothing is missing, so a second
# run of one says only that its report is up to date.
deps: $(INSTALLED)
	@:

lint: $(INSTALLED)
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format: $(INSTALLED)
	$(PYTHON) -m ruff format .
	$(PYTHON) -m ruff check --fix .

test: lint
	$(PYTHON) -m pytest -n 2 --dist loadgroup --durations=20 tests

test-fast: lint
	$(PYTHON) -m pytest -n 2 --dist loadgroup -m "not slow" tests

bench: $(BENCH_INSTALLED)
	$(PYTHON) tests/bench/run_all.py

constraints: $(BENCH_INSTALLED)
	$(PYTHON) -m pip freeze --exclude-editable > $(CONSTRAINTS)

clean:
	find $(DATA) -mindepth 2 -maxdepth 2 ! -name raw -exec rm -rf {} + 2>/dev/null || true

distclean: clean
	rm -rf .venv

# A stage's settings file holds what decides its output besides its input files
# (the raw file's path, the options); it is rewritten only when that text
# changes, so a stage reruns exactly when its input or its settings changed and
# a second run does nothing. $(1): the file, $(2): its text (spaces between
# words do not count).
define SETTINGS
$(1): FORCE
	@mkdir -p $$(@D)
	@printf '%s\n' '$(strip $(2))' | cmp -s - $$@ || printf '%s\n' '$(strip $(2))' > $$@
endef

# $(1): dataset name, $(2): raw file. Stage outputs, their inputs and settings.
define DATASET
$(eval $(call SETTINGS,$(DATA)/$(1)/.make/parse,raw=$(abspath $(2))))
$(eval $(call SETTINGS,$(DATA)/$(1)/.make/pairs,defaults))
$(eval $(call SETTINGS,$(DATA)/$(1)/.make/split,$(SPLIT_FLAGS)))
$(eval $(call SETTINGS,$(DATA)/$(1)/.make/train,$(TRAIN_FLAGS)))
$(eval $(call SETTINGS,$(DATA)/$(1)/.make/walks,$(WALK_FLAGS)))
$(DATA)/$(1)/parse.json: $(2) $(DATA)/$(1)/.make/parse
	$(PYTHON) -m pipeline parse $$< --out $(DATA)/$(1) $(ENGINE_FLAGS) $(quiet)
$(DATA)/$(1)/pairs.json: $(DATA)/$(1)/parse.json $(DATA)/$(1)/.make/pairs
	$(PYTHON) -m pipeline pairs $(DATA)/$(1) $(ENGINE_FLAGS) $(quiet)
$(DATA)/$(1)/split.json: $(DATA)/$(1)/pairs.json $(DATA)/$(1)/.make/split
	$(PYTHON) -m pipeline split $(DATA)/$(1) $(SPLIT_FLAGS) $(ENGINE_FLAGS) $(quiet)
# --resume auto: a killed training continues from its checkpoint when the
# settings match and the checkpoint is the start of the run asked for; else it
# starts afresh (recsys_stream/core/runs.py says when).
$(DATA)/$(1)/runs/%/summary.json: $(DATA)/$(1)/split.json $(DATA)/$(1)/.make/train
	$(PYTHON) -m recsys_stream train $(DATA)/$(1) --name $$* --resume auto \
		--model $$(firstword $$(subst -, ,$$*)) --labels $$(lastword $$(subst -, ,$$*)) \
		$(TRAIN_FLAGS) $(quiet)
$(DATA)/$(1)/walks.json: $(DATA)/$(1)/split.json $(DATA)/$(1)/.make/walks
	$(PYTHON) -m pipeline walks $(DATA)/$(1) $(WALK_FLAGS) $(quiet)
$(DATA)/$(1)/runs/$(SKIPGRAM)/summary.json: $(DATA)/$(1)/walks.json $(DATA)/$(1)/.make/train
	$(PYTHON) -m recsys_stream train $(DATA)/$(1) --name $(SKIPGRAM) --resume auto \
		$(SKIPGRAM_FLAGS) $(TRAIN_FLAGS) $(quiet)
$(DATA)/$(1)/runs/$(SKIPGRAM_SIDE)/summary.json: $(DATA)/$(1)/walks.json $(DATA)/$(1)/.make/train
	$(PYTHON) -m recsys_stream train $(DATA)/$(1) --name $(SKIPGRAM_SIDE) --resume auto \
		$(SKIPGRAM_FLAGS) --side-info brand,category,price $(TRAIN_FLAGS) $(quiet)
$(DATA)/$(1)/report.md: $(foreach v,$(VARIANTS) $(SKIPGRAM) $(SKIPGRAM_SIDE),$(DATA)/$(1)/runs/$(v)/summary.json)
	$(PYTHON) -m recsys_stream report $(DATA)/$(1) $(quiet)
$(eval $(call SETTINGS,$(DATA)/$(1)/.make/similar,$(TABLE_FLAGS)))
$(DATA)/$(1)/runs/%/similar.json: $(DATA)/$(1)/runs/%/summary.json $(DATA)/$(1)/.make/similar
	$(PYTHON) -m recsys_stream similar $(DATA)/$(1)/runs/$$* --all $(TABLE_FLAGS) $(quiet)
TABLES_$(1) := $(foreach v,$(VARIANTS) $(SKIPGRAM) $(SKIPGRAM_SIDE),$(DATA)/$(1)/runs/$(v)/similar.json)
endef

# $(1): dataset name, $(2): raw ratings file, $(3): titles file (or nothing),
# $(4): "sequences" for a dataset split by time with each user's ratings in
# time order (pipeline sequences), training SEQUENCE_RUNS (the sequence
# models' runs also wait for the sequences stage); else RATING_MODELS.
define RATINGS_DATASET
$(eval $(call SETTINGS,$(DATA)/$(1)/.make/ratings,raw=$(abspath $(2)) titles=$(abspath $(3)) $(RATING_FLAGS)))
$(eval $(call SETTINGS,$(DATA)/$(1)/.make/split-ratings,$(if $(4),--by time) $(RATING_SPLIT_FLAGS)))
$(eval $(call SETTINGS,$(DATA)/$(1)/.make/sequences,$(SEQUENCE_FLAGS)))
$(eval $(call SETTINGS,$(DATA)/$(1)/.make/train,$(TRAIN_FLAGS)))
$(DATA)/$(1)/ratings.json: $(2) $(3) $(DATA)/$(1)/.make/ratings
	$(PYTHON) -m pipeline ratings $(2) --out $(DATA)/$(1) $(call flag,--titles,$(3)) \
		$(RATING_FLAGS) $(quiet)
$(DATA)/$(1)/split-ratings.json: $(DATA)/$(1)/ratings.json $(DATA)/$(1)/.make/split-ratings
	$(PYTHON) -m pipeline split-ratings $(DATA)/$(1) $(if $(4),--by time) \
		$(RATING_SPLIT_FLAGS) $(quiet)
$(DATA)/$(1)/sequences.json: $(DATA)/$(1)/split-ratings.json $(DATA)/$(1)/.make/sequences
	$(PYTHON) -m pipeline sequences $(DATA)/$(1) $(SEQUENCE_FLAGS) $(quiet)
$(DATA)/$(1)/runs/%/summary.json: $(DATA)/$(1)/split-ratings.json $(DATA)/$(1)/.make/train
	$(PYTHON) -m recsys_stream train $(DATA)/$(1) --name $$* --resume auto \
		--model $$(firstword $$(subst -, ,$$*)) $$(if $$(filter %-next,$$*),--task next-item) \
		$(TRAIN_FLAGS) $(quiet)
$(if $(4),$(foreach r,$(filter lstm% gru%,$(SEQUENCE_RUNS)),$(DATA)/$(1)/runs/$(r)/summary.json): $(DATA)/$(1)/sequences.json)
$(DATA)/$(1)/report.md: $(foreach m,$(if $(4),$(SEQUENCE_RUNS),$(RATING_MODELS)),$(DATA)/$(1)/runs/$(m)/summary.json)
	$(PYTHON) -m recsys_stream report $(DATA)/$(1) $(quiet)
$(eval $(call SETTINGS,$(DATA)/$(1)/.make/recommend,$(TABLE_FLAGS)))
$(DATA)/$(1)/runs/%/recommend.json: $(DATA)/$(1)/runs/%/summary.json $(DATA)/$(1)/.make/recommend
	$(PYTHON) -m recsys_stream recommend $(DATA)/$(1)/runs/$$* --all $(TABLE_FLAGS) $(quiet)
TABLES_$(1) := $(foreach m,$(filter $(VECTOR_RATING_MODELS),$(if $(4),$(SEQUENCE_RUNS),$(RATING_MODELS))),$(DATA)/$(1)/runs/$(m)/recommend.json)
endef

DEMO_RAW := $(DATA)/demo/raw/synthetic-$(DEMO_PRODUCTS).json.gz
ELECTRONICS_RAW := $(if $(RAW),$(RAW),$(DATA)/electronics/raw/meta_Electronics.json.gz)
BOOKS_RAW := $(if $(RAW),$(RAW),$(DATA)/books/raw/meta_Books.json.gz)
$(eval $(call DATASET,demo,$(DEMO_RAW)))
$(eval $(call DATASET,electronics,$(ELECTRONICS_RAW)))
$(eval $(call DATASET,books,$(BOOKS_RAW)))
MOVIELENS_RAW := $(if $(RAW),$(RAW),$(DATA)/movielens/raw/u.data)
MOVIELENS_TITLES := $(if $(RAW),$(TITLES),$(DATA)/movielens/raw/u.item)
$(eval $(call RATINGS_DATASET,movielens,$(MOVIELENS_RAW),$(MOVIELENS_TITLES)))
# Only under `make ratings` (and its sub-make, told by RATINGS_DATASET_OF): NAME may be anything.
ifneq ($(filter ratings,$(MAKECMDGOALS))$(RATINGS_DATASET_OF),)
$(eval $(call RATINGS_DATASET,$(NAME),$(RAW),$(TITLES)))
endif
# The same under `make sequences`, whose RAW defaults to synthetic sequences.
SEQUENCES_RAW := $(if $(RAW),$(RAW),$(DATA)/$(NAME)/raw/synthetic-sequential.csv)
ifneq ($(filter sequences,$(MAKECMDGOALS))$(SEQUENCES_DATASET_OF),)
$(eval $(call RATINGS_DATASET,$(NAME),$(SEQUENCES_RAW),$(TITLES),sequences))
endif
ifeq ($(RAW),)
$(DATA)/%/raw/synthetic-sequential.csv:
	$(PYTHON) -m pipeline synth-ratings $@ $(SEQUENCE_DEMO) $(quiet)
endif

$(DEMO_RAW):
	$(PYTHON) -m pipeline synth $@ --products $(DEMO_PRODUCTS) --format py $(quiet)

# RAW= names a file the user has: when it is missing, say so (not make's
# "No rule to make target").
ifneq ($(RAW),)
$(RAW):
	@echo "error: RAW=$(RAW): no such file" >&2; exit 2
endif
ifneq ($(TITLES),)
$(TITLES):
	@echo "error: TITLES=$(TITLES): no such file" >&2; exit 2
endif

# Download into a .part file and rename, so a failed fetch leaves nothing behind.
$(DATA)/%/raw/meta_Electronics.json.gz $(DATA)/%/raw/meta_Books.json.gz:
	@mkdir -p $(@D)
	@echo "fetching $(AMAZON_2014)/$(@F)"
	@curl -fsSL --retry 2 --connect-timeout 20 -o $@.part $(AMAZON_2014)/$(@F) 2>$@.log \
		|| { echo "error: could not download $(AMAZON_2014)/$(@F) ($$(tail -n 1 $@.log \
	| sed 's/^curl: //')); download it elsewhere and put it at $@, or run make $* \
	RAW=/path/to/$(@F)" >&2; rm -f $@.part $@.log; exit 2; }
	@rm -f $@.log
	@mv $@.part $@

# MovieLens 100K's zip, fetched as the metadata files are; u.data and u.item
# are taken out of it, each written under a temporary name and renamed.
$(DATA)/movielens/raw/u.data $(DATA)/movielens/raw/u.item: $(DATA)/movielens/raw/ml-100k.zip
	@$(PYTHON) -c "import sys, zipfile; open(sys.argv[2] + '.part', 'wb').write(\
	zipfile.ZipFile(sys.argv[1]).read('ml-100k/' + sys.argv[3]))" $< $@ $(@F)
	@mv $@.part $@
$(DATA)/movielens/raw/ml-100k.zip:
	@mkdir -p $(@D)
	@echo "fetching $(MOVIELENS_100K)"
	@curl -fsSL --retry 2 --connect-timeout 20 -o $@.part $(MOVIELENS_100K) 2>$@.log \
		|| { echo "error: could not download $(MOVIELENS_100K) ($$(tail -n 1 $@.log \
	| sed 's/^curl: //')); download it elsewhere, or run make movielens \
	RAW=/path/to/u.data TITLES=/path/to/u.item" >&2; rm -f $@.part $@.log; exit 2; }
	@rm -f $@.log
	@mv $@.part $@

# After the sub-make that built report $(1), whose `ls -i` line is in $$before:
# one line saying the report is up to date when it was not remade. The report
# is written under a temporary name and renamed, so a remade one has a new
# inode. Nothing under make -n, which runs the sub-make but remakes nothing.
report_said = $(if $(findstring n,$(firstword -$(MAKEFLAGS))),:,\
	{ [ "$$before" != "$$(ls -i $(1))" ] || echo "report up to date: $(1)"; })

demo electronics books movielens:
	@$(if $(word 2,$(RAW)),echo "error: RAW='$(RAW)' holds a space; make cannot take one \
	in a file name: link the file to a path without spaces" >&2; exit 2)
	@$(MAKE) --no-print-directory deps
	@before=$$(ls -i $(DATA)/$@/report.md 2>/dev/null); \
	$(MAKE) --no-print-directory $(DATA)/$@/report.md && $(call report_said,$(DATA)/$@/report.md)
	@$(if $(SIMILAR_ALL),$(MAKE) --no-print-directory $(TABLES_$@))

ratings:
	@$(if $(RAW),,echo "error: make ratings needs RAW=a ratings file (MovieLens or Amazon \
	reviews), and takes NAME= (default: ratings) and TITLES=" >&2; exit 2)
	@$(if $(word 2,$(RAW))$(word 2,$(NAME)),echo "error: RAW='$(RAW)' or NAME='$(NAME)' \
	holds a space; make cannot take one in a file name" >&2; exit 2)
	@$(MAKE) --no-print-directory deps
	@before=$$(ls -i $(DATA)/$(NAME)/report.md 2>/dev/null); \
	$(MAKE) --no-print-directory $(DATA)/$(NAME)/report.md RATINGS_DATASET_OF=$(NAME) \
		&& $(call report_said,$(DATA)/$(NAME)/report.md)
	@$(if $(SIMILAR_ALL),$(MAKE) --no-print-directory $(TABLES_$(NAME)) RATINGS_DATASET_OF=$(NAME))

sequences:
	@$(if $(word 2,$(RAW))$(word 2,$(NAME)),echo "error: RAW='$(RAW)' or NAME='$(NAME)' \
	holds a space; make cannot take one in a file name" >&2; exit 2)
	@$(MAKE) --no-print-directory deps
	@before=$$(ls -i $(DATA)/$(NAME)/report.md 2>/dev/null); \
	$(MAKE) --no-print-directory $(DATA)/$(NAME)/report.md SEQUENCES_DATASET_OF=$(NAME) \
		NAME=$(NAME) && $(call report_said,$(DATA)/$(NAME)/report.md)
	@$(if $(SIMILAR_ALL),$(MAKE) --no-print-directory $(TABLES_$(NAME)) \
		SEQUENCES_DATASET_OF=$(NAME) NAME=$(NAME))

FORCE:
