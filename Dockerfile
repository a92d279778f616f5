# pwmpr on NVIDIA GPUs: torch 2.13 and onnxruntime-gpu 1.31 from PyPI are both CUDA 13 builds
# (onnxruntime-gpu asks for libcublasLt.so.13), so the base is the CUDA 13 runtime with cuDNN 9.
#
#   docker build -t pwmpr:gpu .
#   docker run --gpus all -v "$PWD/runs:/runs" pwmpr:gpu grow --data mnist5k --out /runs/lenet
#   docker run --gpus all -v "$PWD/runs:/runs" pwmpr:gpu export /runs/lenet --provider cuda
# (add --user "$(id -u):$(id -g)" when the mounted folder must stay writable by you rather than uid 10001)
#
# The Python install steps live in docker/install.sh, which CI runs too (`docker/install.sh --check cpu`).
FROM nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    VIRTUAL_ENV=/opt/pwmpr \
    PATH=/opt/pwmpr/bin:$PATH

# The apt packages follow the pinned base image; Python packages are pinned in docker/install.sh.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/pwmpr

WORKDIR /src
COPY pyproject.toml README.md ./
COPY pwmpr ./pwmpr
COPY cli ./cli
COPY export ./export
COPY docker/install.sh ./docker/install.sh
RUN PYTHON=/opt/pwmpr/bin/python bash docker/install.sh gpu

# Runs and exports are written to /runs, a volume owned by an unprivileged user.
RUN groupadd --gid 10001 pwmpr \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin pwmpr \
    && mkdir -p /runs \
    && chown 10001:10001 /runs
USER 10001:10001
WORKDIR /runs
VOLUME ["/runs"]

ENTRYPOINT ["pwmpr"]
CMD ["--help"]
