# Shared by the build scripts in tests/tools: the cache outside the checkout, Go's build settings, and
# a timer that prints how long each build took. Source it; it defines, it does not run anything.
cache_root=${PALISADE_ASSETS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/palisade/assets}
export CGO_ENABLED=0 GOFLAGS=-mod=mod

timed() { # name, then the command: prints how long each build took, and keeps its exit status
  local name=$1 start status=0; shift; start=$(date +%s)
  "$@" || status=$?
  if ((status)); then
    echo "building $name failed after $(( $(date +%s) - start ))s" >&2
  else
    echo "built $name in $(( $(date +%s) - start ))s" >&2
  fi
  return "$status"
}
