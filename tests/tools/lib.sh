# Shared by the build scripts in tests/tools: the cache outside the checkout, Go's build settings, the
# version a go.mod requires, and a timer that prints how long each build took. Source it; it defines, it does not run anything.
cache_root=${PALISADE_ASSETS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/palisade/assets}
export CGO_ENABLED=0 GOFLAGS=-mod=mod

module_version() { # go.mod, module path: the version it requires (in a require block or on one line)
  awk -v m="$2" '($1==m) {print $2; exit} ($1=="require" && $2==m) {print $3; exit}' "$1"
}

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
