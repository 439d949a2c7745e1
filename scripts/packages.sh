# Sourced by the scripts that build or test: installs Debian packages they need when they are
# missing, with apt-get, as root or through sudo. Nothing else on the machine is changed.
#
#   need_packages CHECK PACKAGE...   installs PACKAGE... unless the command CHECK succeeds

need_packages() {
  local check="$1"
  shift
  if eval "$check" >/dev/null 2>&1; then
    return 0
  fi
  local sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  if ! command -v apt-get >/dev/null; then
    echo "missing: $* (Debian package names); install them with your package manager" >&2
    return 1
  fi
  echo "installing $* (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
}

# The host links the system's OpenSSL (TLS and SASL/SCRAM for Kafka): its headers, and
# pkg-config to find them, are needed to build it.
need_build_packages() {
  need_packages "pkg-config --exists openssl" pkg-config libssl-dev
}
