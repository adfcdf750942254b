#!/bin/sh
# Build the base images deploy/compose.yaml names (python:3.11-slim, postgres:15) from a
# Debian mirror, for hosts that cannot pull from Docker Hub (an air-gapped site with a mirror;
# the machines this project was developed on). Needs root, debootstrap and a Docker daemon.
# The host's extra certificate authorities (/usr/local/share/ca-certificates) go into the
# Python image, so pip inside trusts what the host trusts.
#   sh deploy/offline/build.sh [MIRROR]
# Then: docker compose -f deploy/compose.yaml [-f deploy/compose.cpu.yaml] build / up.
# The engine's GPU image (vllm/vllm-openai) has no stand-in: use compose.cpu.yaml's CPU build.
set -eu
mirror="${1:-http://deb.debian.org/debian}"
here="$(cd "$(dirname "$0")" && pwd)"
if ! docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
    rootfs="$(mktemp -d)"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import - debian:bookworm-slim
    rm -rf "$rootfs"
fi
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp "$here"/*.Dockerfile "$here"/postgres-entrypoint.sh "$context"/
mkdir "$context/ca-certificates"
cp /usr/local/share/ca-certificates/*.crt "$context/ca-certificates/" 2>/dev/null || true
docker build --network host -t python:3.11-slim -f "$context/python.Dockerfile" "$context"
docker build --network host -t postgres:15 -f "$context/postgres.Dockerfile" "$context"
