#!/usr/bin/env bash
# Builds the PSLS Fortran module: OUTDIR/psls.mod and OUTDIR/libpslsf.a.
#
#   bindings/fortran/build.sh OUTDIR
#
# The compiler is $MPIF90 if set, else mpif90.mpich when PSLS_MPI=mpich, else mpif90.
# Extra flags go in $FFLAGS (default: -O2 -g). A .mod file is specific to the compiler (and
# its version) that wrote it: build the module with the compiler that builds the program.
# Programs then link with: -I OUTDIR ... -L OUTDIR -lpslsf -L LIBDIR -lpsls plus the C
# library's native libraries (see docs/fortran.md).
set -euo pipefail

if [ $# -ne 1 ] || [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  echo "usage: $0 OUTDIR   (writes OUTDIR/psls.mod and OUTDIR/libpslsf.a)" >&2
  exit 2
fi
out=$1
here=$(cd "$(dirname "$0")" && pwd)

if [ -n "${MPIF90:-}" ]; then
  fc=$MPIF90
elif [ "${PSLS_MPI:-}" = "mpich" ]; then
  fc=mpif90.mpich
else
  fc=mpif90
fi
if ! command -v "${fc%% *}" >/dev/null 2>&1; then
  echo "$0: Fortran compiler '$fc' not found: install the MPI Fortran wrapper" \
       "(Debian: libopenmpi-dev or libmpich-dev, and gfortran), or set MPIF90" >&2
  exit 1
fi
ar=${AR:-ar}

mkdir -p "$out"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/psls-fortran.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# shellcheck disable=SC2086 # FFLAGS and fc are word lists on purpose
$fc ${FFLAGS:--O2 -g} -std=f2008 -Wall -c "$here/psls.f90" -J "$tmp" -o "$tmp/psls.o"
rm -f "$tmp/libpslsf.a"
"$ar" rcs "$tmp/libpslsf.a" "$tmp/psls.o"
cp "$tmp/psls.mod" "$tmp/libpslsf.a" "$out/"
echo "built $out/psls.mod and $out/libpslsf.a with $fc"
