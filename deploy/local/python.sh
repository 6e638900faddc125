#!/usr/bin/env bash
# Create the project's virtual environment with a Python >= 3.11.
# Usage: python.sh PYTHON VENV_DIR
SERVICE_NAME=python
. "$(dirname "$0")/lib.sh"

python=${1:-python3}
venv=${2:-.venv}
command -v "$python" >/dev/null || apt_install python3 python3-venv
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "$python is $("$python" --version 2>&1); NexaNest needs Python >= 3.11 (set PYTHON=...)"
# Debian's python3 ships venv without ensurepip until python3-venv is installed.
"$python" -c 'import ensurepip' 2>/dev/null || apt_install python3-venv
log "creating $venv with $("$python" --version 2>&1)"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q -U pip
