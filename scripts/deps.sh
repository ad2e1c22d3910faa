#!/usr/bin/env bash
# Installs the system packages PSLS needs, when they are missing (Debian 12).
# Uses apt-get directly as root, sudo otherwise. Quiet when everything is there.
set -euo pipefail

PKGS=(
  libopenmpi-dev openmpi-bin    # Open MPI (the default MPI)
  mpich libmpich-dev            # MPICH (CI runs the suite with both)
  libclang-dev clang            # bindgen, for rsmpi
  gfortran                      # Fortran bindings
  libhwloc-dev libudev-dev      # hwloc (libhwloc links libudev)
  pkg-config make g++           # the C API tests: make install, the header compiled as C++
  slurm-wlm munge               # the emulated Slurm cluster of the tests
  procps                        # ps, pkill for the cluster script
)

missing=()
for p in "${PKGS[@]}"; do
  [[ $p == \#* ]] && continue
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  SUDO=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    SUDO=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  for d in "$HOME/.cargo/bin" /usr/local/cargo/bin; do
    [[ -x $d/cargo ]] && { echo "deps: cargo is in $d; add it to PATH" >&2; exit 1; }
  done
  echo "deps: cargo not found: install Rust (https://rustup.rs) and re-run" >&2
  exit 1
fi
