# hpsearch image: API server and workers (docker-compose.yml runs both from it).
#   CPU (default):  docker build -t hpsearch .
#   NVIDIA GPU:     docker build -t hpsearch:cuda --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 .
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HPS_DATA_DIR=/data
WORKDIR /app

# torch first, from the chosen index, so the project's own install keeps it (CPU or CUDA).
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"

COPY pyproject.toml README.md ./
COPY trainer ./trainer
COPY service ./service
COPY migrations ./migrations
COPY examples ./examples
RUN pip install -e ".[s3]" && mkdir -p /data

EXPOSE 8000
CMD ["hpsearch", "serve", "--host", "0.0.0.0", "--port", "8000"]
