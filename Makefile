# AffectLab: `make run` serves the app, `make test` runs every test. Both set up a fresh machine first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)
# The side environment of the LiteRT / ExecuTorch converters and TensorFlow (models/mobile_env.py says why it is apart).
MOBILE_VENV := .venv-mobile
MOBILE_STAMP := $(MOBILE_VENV)/.installed-$(shell cat requirements.txt requirements-mobile.txt | sha1sum | cut -c1-12)
APT_STAMP := /var/tmp/affectlab-apt-$(shell id -u)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install mobile-env system-deps test lint typecheck run bench clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements-dev.txt
	# AffectLab itself, editable: the `affectlab` command (dependencies come from the requirements above).
	$(BIN)/pip install -q --no-deps -e .
	# The reference package, for the parity tests only; its own pins (tensorflow, old numpy) do not apply.
	$(BIN)/pip install -q --no-deps emotiefflib==1.1.1
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

# .venv-mobile sees .venv's packages underneath (a .pth file), so torch is shared and only what differs is installed.
$(MOBILE_STAMP): requirements-mobile.txt $(STAMP)
	test -x $(MOBILE_VENV)/bin/python || $(PYTHON) -m venv $(MOBILE_VENV)
	$(BIN)/python -c 'import site; print(site.getsitepackages()[0])' > "$$($(MOBILE_VENV)/bin/python -c 'import site; print(site.getsitepackages()[0])')/affectlab_main_venv.pth"
	$(MOBILE_VENV)/bin/pip install -q -r requirements-mobile.txt
	rm -f $(MOBILE_VENV)/.installed-*
	touch $@

mobile-env: $(MOBILE_STAMP)

# Debian packages the tests use: PostgreSQL server, Chromium for the browser test, ffmpeg-free PyAV needs none.
system-deps:
	@if [ ! -f $(APT_STAMP) ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      postgresql chromium fonts-dejavu-core >/dev/null && touch $(APT_STAMP); \
	  else echo "system-deps: not root or no apt-get: install postgresql and chromium yourself, or the tests that need them fail"; fi; \
	fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Strict type check of models/ and db/ (settings: [tool.mypy] in pyproject.toml).
typecheck: install
	$(BIN)/mypy

test: install mobile-env system-deps lint typecheck
	AFFECTLAB_MOBILE_PYTHON=$(CURDIR)/$(MOBILE_VENV)/bin/python AFFECTLAB_REQUIRE_MOBILE=1 $(BIN)/python -m pytest

run: install
	$(BIN)/python -m db upgrade
	# webapp/serve.py: the app behind its guard (sign-in cookie, upload bounds, rate limits; webapp/guard.py).
	$(BIN)/streamlit run webapp/serve.py --server.address $${AFFECTLAB_HOST:-127.0.0.1} --server.port $${PORT:-8501} \
	  --server.maxUploadSize $$($(BIN)/python -c 'from core.settings import Settings; print(Settings.from_env().max_upload_mb)')

bench: install
	$(BIN)/python bench/bench_image.py

clean:
	rm -rf $(VENV) $(MOBILE_VENV) .pytest_cache .ruff_cache .mypy_cache test-output
