# Sourced by the scripts that need a Python venv (interop, proxy interop, hostile).
#
# ensure_venv VENV REQUIREMENTS [MIN_PYTHON]: creates VENV with $PYTHON (default python3)
# when missing, (re)installs REQUIREMENTS when the file changed since the last install,
# and sets VPY to the venv's python. With MIN_PYTHON (e.g. 3.11) an older $PYTHON is
# refused with a message. Messages go through the caller's `log`.
ensure_venv() {
    local venv=$1 reqs=$2 min=${3:-}
    local python="${PYTHON:-python3}"
    if [[ -n $min ]] && ! "$python" -c "import sys; sys.exit(sys.version_info < tuple(map(int, '$min'.split('.'))))"; then
        log "$python is older than $min (set PYTHON=)"
        return 1
    fi
    if [[ ! -x "$venv/bin/python" ]]; then
        log "creating venv $venv"
        "$python" -m venv "$venv"
    fi
    local hash stamp="$venv/.requirements-$(basename "$reqs").sha256"
    hash="$(sha256sum "$reqs" | cut -d' ' -f1)"
    if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$hash" ]]; then
        log "installing $reqs"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$reqs"
        echo "$hash" > "$stamp"
    fi
    VPY="$venv/bin/python"
}
