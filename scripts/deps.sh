#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages librwkvpeft needs to build and test, if missing.
# Usage: scripts/deps.sh [--test] [--hip]
#   --test  also the test tools (Check, valgrind)
#   --hip   also Debian's HIP compiler (to build the HIP module; ~650 MB)
set -euo pipefail
want=(build-essential cmake ninja-build pkg-config libopenblas-dev libopenblas-openmp-dev libcjson-dev zlib1g-dev
      python3 python3-pip)
for a in "$@"; do
  case "$a" in
    --test) want+=(check valgrind python3-numpy python3-pytest python3-venv) ;;
    --hip) want+=(hipcc libamdhip64-dev) ;;
    *) echo "deps.sh: unknown option $a" >&2; exit 2 ;;
  esac
done
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps.sh: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
