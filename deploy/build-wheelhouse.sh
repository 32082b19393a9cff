#!/usr/bin/env bash
# Build the wheelhouse for an offline (air-gapped) install: the agent's wheel, a wheel of every
# runtime dependency, and requirements.txt pinning each of them by version and SHA-256.
#
#   deploy/build-wheelhouse.sh [DIR]        (default DIR: dist/wheelhouse-VERSION; new or empty)
#   PYTHON=/usr/bin/python3.11 deploy/build-wheelhouse.sh /media/usb/wheelhouse-0.1.0
#
# Run it where pip can reach an index, with a Python of the same minor version, CPU
# architecture and C library (glibc) as the hospital servers: binary wheels (wasmtime,
# cryptography, pydantic-core, ...) are chosen for the Python that runs pip. Install with
#   pip install --no-index --find-links DIR --require-hashes -r DIR/requirements.txt
# (pip then refuses any file whose hash differs, e.g. one altered on the way to the site),
# or let the Ansible role do it (edge_agent_install_mode: wheelhouse).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
version="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$repo/agent/__init__.py")"
out="${1:-$repo/dist/wheelhouse-$version}"

if [ -n "$(ls -A "$out" 2>/dev/null)" ]; then
  echo "build-wheelhouse: $out is not empty; give a new folder" >&2
  exit 2
fi

# Build from a clean copy of the source (tracked and new files, nothing git ignores): an
# in-tree build/ folder would otherwise let modules deleted since the last build into the wheel.
src="$(mktemp -d)"
trap 'rm -rf "$src"' EXIT
if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # (files deleted but not yet committed are listed too: skipped quietly)
  git -C "$repo" ls-files -z --cached --others --exclude-standard \
    | tar -C "$repo" --null --files-from=- --ignore-failed-read -cf - 2>/dev/null \
    | tar -C "$src" -xf -
else
  cp -a "$repo/." "$src"
  rm -rf "$src/build" "$src/.venv"
fi

mkdir -p "$out"
"$python" -m pip wheel --quiet --wheel-dir "$out" "$src"

# One pinned, hashed line per wheel (file names are NAME-VERSION-...whl).
(
  cd "$out"
  for wheel in *.whl; do
    rest="${wheel#*-}"
    printf '%s==%s --hash=sha256:%s\n' \
      "${wheel%%-*}" "${rest%%-*}" "$(sha256sum -- "$wheel" | cut -d' ' -f1)"
  done > requirements.txt
)
echo "wheelhouse: $out ($(find "$out" -name '*.whl' | wc -l) wheels, edge-inference-agent $version)"
