#!/bin/sh
# Start script of the Docker image (Hugging Face Docker Space): data folder, sign-in secrets, weights, schema, server.
set -eu

# Data folder: AFFECTLAB_DATA_DIR if set, else the Space's persistent storage (/data) when mounted, else the image's.
if [ -z "${AFFECTLAB_DATA_DIR:-}" ]; then
  if [ -d /data ] && [ -w /data ]; then AFFECTLAB_DATA_DIR=/data/affectlab; else AFFECTLAB_DATA_DIR="$HOME/app/data"; fi
fi
export AFFECTLAB_DATA_DIR
mkdir -p "$AFFECTLAB_DATA_DIR"

# Sign in with Hugging Face: a Space with `hf_oauth: true` gets OAUTH_CLIENT_ID/SECRET and OPENID_PROVIDER_URL as
# environment variables; Streamlit's st.login reads them from an [auth] section of .streamlit/secrets.toml.
python -m webapp.secrets_from_env

# Weights of every model the app uses (models.registry.app_models: $AFFECTLAB_MODEL, else models.registry.DEFAULT_MODEL,
# and the engagement model): fetched at build unless FETCH_WEIGHTS=0 was passed; then here, once (a no-op when they are
# present). The Analyze page names what is missing.
if [ "${AFFECTLAB_FETCH_AT_START:-1}" = "1" ]; then
  python -m models fetch --defaults --quiet \
    || echo "weights not fetched; the Analyze page names the missing ones" >&2
fi

python -m db upgrade
# The demo study ("Try a sample") keeps media for AFFECTLAB_DEMO_TTL_HOURS; the app sweeps it hourly too.
python -m webapp.demo_sweep || echo "demo study not swept" >&2

# The app behind its guard (webapp/guard.py): uploads only from a signed-in browser, at most AFFECTLAB_MAX_UPLOAD_MB
# per file, rate limits per client, no public /_stcore/metrics, no "clear cache" from browsers. Browser messages are
# capped at 16 MB (server.maxMessageSize bounds what one websocket message may make the server hold).
MAX_UPLOAD_MB=$(python -c 'from core.settings import Settings; print(Settings.from_env().max_upload_mb)')
exec streamlit run webapp/serve.py --server.address "${AFFECTLAB_HOST:-0.0.0.0}" --server.port "${PORT:-8501}" \
  --server.maxUploadSize "$MAX_UPLOAD_MB" --server.maxMessageSize 16
