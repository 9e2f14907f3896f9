#!/usr/bin/env bash
# kubemill's Go runner: runs a Windmill Go script (`package inner`, `func main(...)` or `func Main(...)`) and
# writes the result envelope (contract: docs/runners.md). The script's program is built once per content
# (script, $KUBEMILL_REQUIREMENTS, this runner's sources, architecture) by builder/ and cached as
# $KUBEMILL_CACHE_DIR/go/bin/<sha256>; a cached run does not start the Go toolchain at all.
set -euo pipefail
runner="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
code="${KUBEMILL_CODE_DIR:-/var/run/kubemill/code}/main.go"

writable() { mkdir -p "$1" 2>/dev/null && [[ -w $1 ]]; }
# Pods run as uid 65532 with a read-only root: HOME must be somewhere writable for Go's default caches.
if [[ -z ${HOME:-} ]] || ! writable "$HOME"; then export HOME=/tmp; fi
cache="${KUBEMILL_CACHE_DIR:-$HOME/.cache/kubemill/deps}/go"

key=$({
  cat "$code"
  printf '\0%s\0%s\0' "${KUBEMILL_REQUIREMENTS:-}" "$(uname -m)"
  cat "$runner"/builder/go.mod "$runner"/builder/*.go "$runner"/windmill-go-client/*.go
} | sha256sum)
binary="$cache/bin/${key%% *}"

if [[ ! -x $binary ]]; then
  go="${KUBEMILL_GO:-go}"
  export GOTOOLCHAIN=local GOWORK=off GOTELEMETRY=off
  # Go's build and module caches where go keeps them when that is writable, else beside the binaries.
  { read -r gocache; read -r gopath; read -r gomodcache; } < <("$go" env GOCACHE GOPATH GOMODCACHE)
  writable "$gocache" || export GOCACHE="$cache/build"
  writable "$gopath" || export GOPATH="$cache/path"
  writable "$gomodcache" || export GOMODCACHE="${GOPATH:-$cache/path}/pkg/mod"
  # The image ships a build cache with the standard library compiled: a fresh pod starts from a copy of it.
  seed="${KUBEMILL_GOCACHE_SEED:-}" gocache="${GOCACHE:-$gocache}"
  if [[ -d $seed && ! -e $gocache/README ]] && writable "$gocache"; then cp -r "$seed/." "$gocache/"; fi
  # The builder writes the error envelope itself when the script does not compile.
  "$go" -C "$runner/builder" run . "$code" "$binary" || exit $?
fi
[[ ! -e $binary.warnings ]] || cat "$binary.warnings" >&2
exec "$binary"
