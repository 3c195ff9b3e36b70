# Shared by scripts/test and scripts/demo: install what is missing on a fresh Debian machine.

# Installs Debian packages whose command is missing: `need_packages cmd:pkg ...`.
need_packages() {
  local missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  ((${#missing[@]})) || return 0
  echo "installing: ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Installs the pinned test provider (oidc-provider) from its lockfile.
need_provider() {
  need_npm tests/provider
}

# Installs an npm project's pinned dependencies when missing or older than its lockfile.
need_npm() {
  local stamp="$1/node_modules/.package-lock.json"
  if [ ! -f "$stamp" ] || [ "$1/package-lock.json" -nt "$stamp" ]; then
    npm ci --prefix "$1" --no-audit --no-fund --loglevel=error
  fi
}
