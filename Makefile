# The two commands of the README: `make serve` and `make test`. Everything else is set-up they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Keras 3 on JAX, hls4ml and HGQ2 for parsing .keras models; HGQ2's `qkeras` shim would shadow QKeras in .venv.
KERAS3_VENV ?= .venv-keras3
PORT ?= 8000
REPOSITORY ?= model_repository
MODEL ?= models/muon-pt.h5
MODEL_NAME ?= muon-pt
# hls4ml's QKeras path needs Keras 2 (tf_keras) while TensorFlow >= 2.16 ships Keras 3.
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: serve test install system-packages model lint bench clean images figures

# --embedded: the management API, a private PostgreSQL under .fpgaas/ (Unix socket only) and one
# local build worker; FPGAAS_DATABASE_URL points at an external PostgreSQL instead.
serve: install model
	$(BIN)/fpgaas serve --embedded --repository $(REPOSITORY) --host 127.0.0.1 --port $(PORT)

test: install
	$(BIN)/python -m pytest

# g++ compiles the hls4ml firmware into the emulation library; PostgreSQL holds the build queue;
# wrk and h2load drive the benchmarks (their tests run them against real servers); everything else
# comes from PyPI.
system-packages:
	@command -v g++ >/dev/null && command -v make >/dev/null || { \
		echo "installing g++ and make with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ make; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		echo "installing postgresql (the build queue's database) with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }
	@command -v wrk >/dev/null && command -v h2load >/dev/null || { \
		echo "installing wrk and h2load (nghttp2-client), the benchmarks' load generators, with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nghttp2-client; }

install: system-packages $(VENV)/.installed $(KERAS3_VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

$(KERAS3_VENV)/.installed: requirements-keras3.txt
	test -x $(KERAS3_VENV)/bin/python || $(PYTHON) -m venv $(KERAS3_VENV)
	$(KERAS3_VENV)/bin/python -m pip install -q --upgrade pip
	$(KERAS3_VENV)/bin/python -m pip install -q -r requirements-keras3.txt
	touch $@

model: $(REPOSITORY)/$(MODEL_NAME)/1/manifest.json

$(REPOSITORY)/$(MODEL_NAME)/1/manifest.json: $(MODEL) | install
	$(BIN)/fpgaas build $(MODEL) --name $(MODEL_NAME) --version 1 --out $(REPOSITORY)/$(MODEL_NAME)/1

lint: install
	$(BIN)/ruff check service builder client kernels fpgaas tests benchmarks examples deploy docker
	$(BIN)/ruff format --check service builder client kernels fpgaas tests benchmarks examples deploy docker
	$(BIN)/mypy -p fpgaas
	$(BIN)/mypy deploy docker/lock.py docker/smoke

bench: install model
	$(BIN)/python benchmarks/bench_engine.py
	$(BIN)/python benchmarks/bench_pynq_stages.py
	$(BIN)/python benchmarks/bench_http.py
	$(BIN)/python benchmarks/bench_large_body.py
	$(BIN)/python benchmarks/bench_overload.py
	$(BIN)/python benchmarks/bench_card_pipeline.py --artifact $(REPOSITORY)/$(MODEL_NAME)/1

# The source paper's Fig. 1 (per-stage latency, PYNQ path vs XRT path, on emulated cards) and
# Fig. 2 (muon pT resolution: NN vs L1 baseline, fixed-point kernel vs float), under docs/figures.
figures: install model
	$(BIN)/python benchmarks/fig1_stage_latency.py --artifact $(REPOSITORY)/$(MODEL_NAME)/1 --out docs/figures
	PYTHONPATH=. $(BIN)/python benchmarks/fig2_resolution.py --model $(MODEL) --work-dir $(REPOSITORY) --out docs/figures

# The server, builder and client images, built for real with buildah (chroot isolation) on a
# debootstrap'd Debian base, then smoke-tested in their own rootfs; see docker/images.sh, docs/deploy.md.
images: install model
	@command -v buildah >/dev/null && command -v debootstrap >/dev/null || { \
		echo "installing buildah and debootstrap with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah debootstrap; }
	nice -n 19 bash docker/images.sh

clean:
	rm -rf $(VENV) $(KERAS3_VENV) $(REPOSITORY) .pytest_cache .mypy_cache .ruff_cache
