#!/usr/bin/env bash
# The cluster's images, built without Docker: `images.sh [OUT_DIR]` (default target/images) writes
#   pause.tar     registry.k8s.io/pause:3.10, the pod sandbox (tests/tools/pause)
#   probe.tar     palisade.dev/probe:dev, the project's probe servers and client
#   palisade.tar  palisade.dev/palisade:dev, the same image as the Dockerfile: the palisade binary on
#                 the runtime files of the Debian packages the Dockerfile installs (iptables, ipset)
#   agnhost.tar   only when AGNHOST names an agnhost binary (tests/tools/build-conformance.sh): the
#                 upstream e2e test image under the tags the two conformance suites ask for, with bash
# Binaries come from target/$PALISADE_PROFILE (default release); every ELF file brings the shared
# libraries it loads. Prints the tarballs, space-separated, on its last line.
set -euo pipefail
{
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-$repo/target/images}
profile=${PALISADE_PROFILE:-release}
assets=$("$here/../tools/build-assets.sh" cluster | tail -n 1)
mkdir -p "$out"
roots=$(mktemp -d)
trap 'rm -rf "$roots"' EXIT

if [[ $profile == release ]]; then profile_flag=--release; else profile_flag=(--profile "$profile"); fi
echo "building palisade and palisade-probe ($profile)" >&2
(cd "$repo" && cargo build --locked ${profile_flag[@]} -p palisade-cli -p palisade-testkit --bin palisade --bin palisade-probe)
bin=$repo/target/$profile
[[ $profile == dev ]] && bin=$repo/target/debug

# A root with Debian's merged /usr, so paths through /lib and /sbin resolve as on the host.
new_root() {
  local root=$roots/$1
  mkdir -p "$root"/{usr/bin,usr/sbin,usr/lib,usr/lib64,etc,tmp,run}
  ln -s usr/bin "$root/bin"; ln -s usr/sbin "$root/sbin"; ln -s usr/lib "$root/lib"; ln -s usr/lib64 "$root/lib64"
  chmod 1777 "$root/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
  echo "$root"
}

# copy ROOT PATH [DEST]: one file, symlinks kept as links (their targets copied too), ELF files with
# every library they load.
copy() {
  local root=$1 path=$2 dest=${3:-$2}
  # Through the root's own /lib -> usr/lib links, as the loader inside will see it.
  local target=$root$dest
  [[ -e $target || -L $target ]] && return 0
  mkdir -p "$(dirname "$target")"
  if [[ -L $path ]]; then
    cp -P "$path" "$target"
    local link; link=$(readlink "$path")
    [[ $link == /* ]] || link=$(dirname "$path")/$link
    copy "$root" "$link"
    return 0
  fi
  cp "$path" "$target"
  if [[ $(head -c 4 "$path" | od -An -c | tr -d ' ') == 177ELF ]]; then
    local library
    for library in $(ldd "$path" 2>/dev/null | grep -o '/[^ ]*' || true); do copy "$root" "$library"; done
  fi
}

# The runtime files of a Debian package as installed here (no documentation, no manuals).
copy_package() {
  local root=$1 package=$2 file
  dpkg -L "$package" >/dev/null 2>&1 || { echo "images.sh: Debian package $package is not installed (make deps)" >&2; exit 1; }
  while IFS= read -r file; do
    [[ -f $file || -L $file ]] || continue
    case $file in /usr/share/* | /etc/* ) continue ;; esac
    copy "$root" "$file"
  done < <(dpkg -L "$package")
}

root=$(new_root pause)
copy "$root" "$assets/pause" /pause
IMAGE_USER=65535:65535 "$here/image.sh" "$out/pause.tar" registry.k8s.io/pause:3.10 "$root" /pause

root=$(new_root probe)
copy "$root" "$bin/palisade-probe" /usr/local/bin/palisade-probe
IMAGE_USER=65532:65532 "$here/image.sh" "$out/probe.tar" palisade.dev/probe:dev "$root" /usr/local/bin/palisade-probe

root=$(new_root palisade)
copy "$root" "$bin/palisade" /usr/local/bin/palisade
for package in iptables ipset libxtables12; do copy_package "$root" "$package"; done
# The neutral names (iptables-restore, ...) are update-alternatives links, made by the package's
# postinst rather than shipped in it: the same links as a Debian install, to the same backend.
for tool in iptables iptables-restore iptables-save ip6tables ip6tables-restore ip6tables-save; do
  copy "$root" "/usr/sbin/$tool"
done
"$here/image.sh" "$out/palisade.tar" palisade.dev/palisade:dev "$root" /usr/local/bin/palisade

tarballs="$out/pause.tar $out/probe.tar $out/palisade.tar"
if [[ -n ${AGNHOST:-} ]]; then
  # registry.k8s.io/e2e-test-images/agnhost: 2.56 is what e2e.test v1.34 runs (test/utils/image/manifest.go),
  # 2.45 what the network-policy-api v0.2.0 suite's manifests name. Its commands run /agnhost, often
  # through /bin/bash -c. As upstream's Dockerfile: ENTRYPOINT /agnhost, CMD pause (a container given no
  # command, such as the network-policy-api suite's clients, pauses).
  root=$(new_root agnhost)
  copy "$root" "$AGNHOST" /agnhost
  for tool in bash sh cat ls sleep; do copy "$root" "$(command -v "$tool")" "/usr/bin/$tool"; done
  IMAGE_CMD=pause "$here/image.sh" "$out/agnhost.tar" \
    registry.k8s.io/e2e-test-images/agnhost:2.56,registry.k8s.io/e2e-test-images/agnhost:2.45 "$root" /agnhost
  tarballs+=" $out/agnhost.tar"
fi
echo "$tarballs"
exit
}
