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
  [ -d tests/provider/node_modules/oidc-provider ] && return 0
  npm ci --prefix tests/provider --no-audit --no-fund --loglevel=error
}
