# pwmpr in a container. One Dockerfile, two flavours, chosen by build args.
#
# GPU (no arguments: torch 2.13 and onnxruntime-gpu 1.31 from PyPI are CUDA 13 builds, so the base is the CUDA 13
# runtime with cuDNN 9; building needs a registry, running needs an NVIDIA GPU and the container toolkit):
#   docker build -t pwmpr:gpu .
#   docker run --gpus all -v "$PWD/runs:/runs" pwmpr:gpu grow --data mnist5k --out /runs/lenet
#   docker run --gpus all -v "$PWD/runs:/runs" pwmpr:gpu export /runs/lenet --out /runs/lenet-export --provider cuda
# CPU (torch from PyTorch's CPU wheel index, onnxruntime; any Debian or Ubuntu base with Python 3.10+ in apt):
#   docker build --build-arg FLAVOUR=cpu --build-arg BASE=debian:bookworm-slim -t pwmpr:cpu .
#   docker run -v "$PWD/runs:/runs" pwmpr:cpu grow --out /runs/lenet
# (add --user "$(id -u):$(id -g)" when the mounted folder must stay writable by you rather than uid 10001)
#
# Build args:
#   BASE               the base image of both stages; it must have apt-get
#   FLAVOUR            gpu (default) or cpu: which torch build and which onnxruntime package (docker/install.sh)
#   WHEELHOUSE         a folder in the build context holding every wheel (docker/install.sh --wheels DIR FLAVOUR);
#                      pip then installs from it alone, with no network. docker/ci.sh builds the CPU image this way.
#   TORCH_INDEX  the index torch comes from (unset: PyTorch's CPU index for cpu, PyPI for gpu)
# The build stage keeps the source, the wheelhouse, pip's work and python3-venv; the image gets the venv alone.
ARG BASE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

FROM ${BASE} AS build
ARG FLAVOUR=gpu
ARG WHEELHOUSE=
ARG TORCH_INDEX
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The apt packages follow the pinned base image; Python packages are pinned in docker/install.sh.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/pwmpr

# Few layers (the vfs storage driver copies each in full): one COPY, which .dockerignore limits to what the
# install needs, and one RUN.
COPY . /src
RUN PYTHON=/opt/pwmpr/bin/python PWMPR_WHEELHOUSE="${WHEELHOUSE:+/src/$WHEELHOUSE}" bash /src/docker/install.sh "$FLAVOUR"

FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    VIRTUAL_ENV=/opt/pwmpr \
    PATH=/opt/pwmpr/bin:$PATH

# The interpreter the venv was made with (same base, same path), and an unprivileged user who owns /runs.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 pwmpr \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin pwmpr \
    && mkdir -p /runs \
    && chown 10001:10001 /runs
WORKDIR /runs
COPY --from=build /opt/pwmpr /opt/pwmpr

USER 10001:10001
VOLUME ["/runs"]

ENTRYPOINT ["pwmpr"]
CMD ["--help"]
