# A stand-in for the python:3.11-slim image, built from Debian 12's packages (Python 3.11), for
# hosts that reach a Debian mirror and PyPI but not Docker Hub. See build.sh.
FROM debian:bookworm-slim
# The host's own certificate authorities (a TLS-inspecting proxy's, say), trusted by pip too.
COPY ca-certificates/ /usr/local/share/ca-certificates/
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && update-ca-certificates \
 && python3 -m venv /usr/local/python
ENV PATH=/usr/local/python/bin:$PATH PYTHONUNBUFFERED=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
