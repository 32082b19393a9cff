#!/usr/bin/env bash
# Build the wheelhouse for an offline (air-gapped) install: the agent's wheel and a wheel of
# every runtime dependency, plus SHA256SUMS to check the copy that reaches the site.
#
#   deploy/build-wheelhouse.sh [DIR]          (default DIR: dist/wheelhouse)
#   PYTHON=/usr/bin/python3.11 deploy/build-wheelhouse.sh /media/usb/wheelhouse
#
# Run it where pip can reach an index, with a Python of the same minor version, CPU
# architecture and C library (glibc) as the hospital servers: binary wheels (wasmtime,
# cryptography, pydantic-core, ...) are chosen for the Python that runs pip. Then install with
#   pip install --no-index --find-links DIR edge-inference-agent
# or let the Ansible role do it (edge_agent_install_mode: wheelhouse).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$repo/dist/wheelhouse}"
python="${PYTHON:-python3}"

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
(cd "$out" && sha256sum -- *.whl > SHA256SUMS)
echo "wheelhouse: $out ($(find "$out" -name '*.whl' | wc -l) wheels)"
