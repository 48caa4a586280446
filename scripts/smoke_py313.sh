#!/usr/bin/env bash
# End-to-end smoke test on Python 3.13 (what Colab runs): install, `mfcolab up`, one real flow, `down`,
# as on a Colab runtime: no USER, USERNAME or SUDO_USER (Metaflow takes no run by root).
set -euo pipefail
cd "$(dirname "$0")/.."

py=""
for candidate in python3.13 "$(PYENV_VERSION=3.13.0 pyenv which python3.13 2>/dev/null || true)"; do
    if [ -n "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then
        py=$candidate; break
    fi
done
[ -n "$py" ] || { echo "smoke: Python 3.13 not found (install it, e.g. pyenv install 3.13)" >&2; exit 1; }

VENV=.venv-py313 PYTHON="$py" scripts/setup
bin=.venv-py313/bin
tmp=$(mktemp -d /tmp/mfcolab-smoke-XXXXXX)
folders=(--root "$tmp/root" --local "$tmp/local")
cleanup() { "$bin/mfcolab" down "${folders[@]}" >/dev/null 2>&1 || true; rm -rf "$tmp"; }
trap cleanup EXIT
mkdir -p "$tmp/root"

unset USER USERNAME SUDO_USER LOGNAME
port() { "$bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# The UI from a local copy of the upstream build (this machine cannot reach GitHub's release download).
cp -r "${UI_BUILD:-/work/shared/upstream/metaflow-ui}" "$tmp/ui-bundle"
"$bin/mfcolab" up "${folders[@]}" --port "$(port)" --pg-port "$(port)" --no-tunnel --ui-bundle "$tmp/ui-bundle"

export METAFLOW_HOME="$tmp/metaflow-home"
"$bin/mfcolab" connect --root "$tmp/root"
export METAFLOW_PROFILE=mfcolab
(cd "$tmp" && "$OLDPWD/$bin/python" "$OLDPWD/tests/flows/linear_flow.py" --no-pylint run --alpha 4 >"$tmp/flow.log" 2>&1) \
    || { tail -n 30 "$tmp/flow.log" >&2; exit 1; }
"$bin/python" - <<'PY'
import sys
from metaflow import Flow, namespace
namespace(None)
run = Flow("LinearFlow").latest_run
assert run.successful and run.data.message == "plain:6", (run, run.data.message)
assert "user:colab" in run.system_tags, run.system_tags  # the name `connect` gave a root shell
print(f"smoke: Python {sys.version.split()[0]}: LinearFlow/{run.id} by user colab logged through the service and read back")
PY
"$bin/mfcolab" down "${folders[@]}"
