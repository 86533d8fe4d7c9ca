#!/usr/bin/env bash
# Container images without Docker or a registry: `image.sh OUT.tar NAME:TAG[,NAME:TAG...] ROOTFS [ENTRYPOINT...]`
# writes ROOTFS as a one-layer image (under every name given) in the docker-archive format (`docker save`), which
# `ctr images import`, `docker load` and `podman load` all read. The layer is reproducible: sorted
# names, every mtime zero, numeric root ownership. Env: IMAGE_USER (e.g. 65532:65532), IMAGE_ENV
# (space-separated KEY=VALUE), IMAGE_CMD (space-separated default arguments, a Dockerfile's CMD).
set -euo pipefail
{
out=$1 tag=$2 rootfs=$3; shift 3
[[ -d $rootfs ]] || { echo "image.sh: $rootfs is not a directory" >&2; exit 2; }
IFS=, read -r -a tags <<<"$tag"
for t in "${tags[@]}"; do [[ $t == *:* ]] || { echo "image.sh: $t needs a :tag" >&2; exit 2; }; done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

json_array() { # the arguments as a JSON array of strings
  local first=1 item
  printf '['
  for item in "$@"; do
    ((first)) || printf ','
    first=0
    item=${item//\\/\\\\}
    printf '"%s"' "${item//\"/\\\"}"
  done
  printf ']'
}

tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu -C "$rootfs" -cf "$work/layer.tar" .
layer=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
mkdir "$work/$layer" && mv "$work/layer.tar" "$work/$layer/layer.tar"
read -r -a env <<<"${IMAGE_ENV:-PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}"
read -r -a cmd <<<"${IMAGE_CMD:-}"
printf '{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":{"Entrypoint":%s,"Cmd":%s,"Env":%s,"User":"%s","WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
  "$(json_array "$@")" "$(json_array "${cmd[@]}")" "$(json_array "${env[@]}")" "${IMAGE_USER:-}" "$layer" >"$work/config.json"
config=$(sha256sum "$work/config.json" | cut -d' ' -f1)
mv "$work/config.json" "$work/$config.json"
printf '[{"Config":"%s.json","RepoTags":%s,"Layers":["%s/layer.tar"]}]' "$config" "$(json_array "${tags[@]}")" "$layer" >"$work/manifest.json"
mkdir -p "$(dirname "$out")"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work" -cf "$out.tmp" manifest.json "$config.json" "$layer"
mv "$out.tmp" "$out"
echo "$out: $tag ($(du -h "$out" | cut -f1))" >&2
exit
}
