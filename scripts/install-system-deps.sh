#!/usr/bin/env bash
# Debian packages the tests use: PostgreSQL (real database behind the Supabase tests), Chromium
# (the UI test), a headless Java 17 runtime (Spark, for the Spark trainer) and OpenBLAS (Spark's
# native BLAS/LAPACK: libblas.so.3, liblapack.so.3; without them ALS runs on a slower Java fallback).
# Installs only what is missing; needs root (or passwordless sudo).
set -euo pipefail
missing=()
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing+=(postgresql)
[ -x /usr/bin/chromium ] || missing+=(chromium)
{ [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; } || command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
ls /usr/lib/*/libblas.so.3 /usr/lib/*/liblapack.so.3 >/dev/null 2>&1 || missing+=(libopenblas0-pthread)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "install-system-deps: need root to apt-get install ${missing[*]}; the tests that need them will skip" >&2
    exit 0
  fi
fi
echo "install-system-deps: apt-get install ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
${SUDO:-} apt-get update -qq
${SUDO:-} apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
