#!/usr/bin/env bash
# Installs Debian's headless-capable Chromium (plus fonts for legible screenshots) for scripts/ui_pages.py.
# Idempotent: does nothing when /usr/bin/chromium exists. Needs root and apt-get (Debian 12); refreshes the
# package lists only when they lack chromium or are too stale to download it.
set -euo pipefail
chromium=/usr/bin/chromium
packages=(chromium fonts-liberation)
if [[ -x $chromium ]]; then
  exit 0
fi
if ! command -v apt-get > /dev/null; then
  echo "install_chromium.sh: apt-get not found; install Chromium by hand so that $chromium exists" >&2
  exit 1
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "install_chromium.sh: must run as root (e.g. sudo bash $0) to install ${packages[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
install() {
  apt-get install --yes --quiet --no-install-recommends "${packages[@]}"
}
if ! apt-cache policy chromium 2> /dev/null | grep -q 'Candidate: [0-9]'; then
  apt-get update --quiet
fi
if ! install; then
  echo "install_chromium.sh: retrying after apt-get update" >&2
  apt-get update --quiet
  install
fi
"$chromium" --version
