#!/usr/bin/env bash
# `make images`: build the server, builder and client images with buildah (chroot isolation, no
# daemon, no registry), then smoke-test each inside its own root filesystem.
#
#  1. base: debootstrap a Debian bookworm minbase rootfs from Debian's mirror, and import it into
#     buildah's local storage as localhost/fpgaas-base:bookworm (buildah from scratch + add of a
#     tarball + commit). No registry is needed, and the Dockerfiles' FROM takes it by --build-arg.
#  2. wheels: `pip wheel` the pinned docker/requirements/*.txt and fpgaas itself (from
#     `git archive HEAD`) into build/images/wheels on the host, so the image builds install
#     Python packages offline.
#  3. images: buildah bud --isolation chroot for each Dockerfile, timed, sizes recorded.
#  4. smoke: docker/smoke (python -m smoke) runs each image's entry point in its mounted rootfs.
# Results (times, sizes, smoke output) go to build/images/report.md.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=build/images
PY=${PYTHON:-.venv/bin/python}
TAG=0.1.0
BASE=localhost/fpgaas-base:bookworm
mkdir -p "$WORK"
REPORT=$WORK/report.md
: >"$REPORT"

need() { command -v "$1" >/dev/null || { echo "make images: $1 is missing (apt-get install $2)" >&2; exit 1; }; }
need buildah buildah
need debootstrap debootstrap

record() { printf '%s\n' "$*" | tee -a "$REPORT"; }

if ! buildah inspect --type image "$BASE" >/dev/null 2>&1; then
    t0=$SECONDS
    if [ ! -x "$WORK/rootfs-bookworm/bin/sh" ]; then
        debootstrap --variant=minbase --include=ca-certificates bookworm "$WORK/rootfs-bookworm" \
            http://deb.debian.org/debian
    fi
    rm -rf "$WORK"/rootfs-bookworm/var/cache/apt/archives/*.deb "$WORK"/rootfs-bookworm/var/lib/apt/lists/*
    tar -C "$WORK/rootfs-bookworm" --numeric-owner -cf "$WORK/base.tar" .
    ctr=$(buildah from scratch)
    buildah add "$ctr" "$WORK/base.tar" /
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd /bin/bash "$ctr"
    buildah commit --rm "$ctr" "$BASE"
    rm -f "$WORK/base.tar"
    record "base $BASE: $((SECONDS - t0)) s (debootstrap + import)"
fi

"$PY" docker/lock.py --check
t0=$SECONDS
"$PY" -m pip wheel -q --wheel-dir "$WORK/wheels" \
    -r docker/requirements/server.txt -r docker/requirements/builder.txt -r docker/requirements/client.txt
# Resolved on its own: the builder's Keras 3 venv pins other numpy, h5py and ml-dtypes versions.
"$PY" -m pip wheel -q --wheel-dir "$WORK/wheels" -r docker/requirements/builder-keras3.txt
# fpgaas itself from the last commit, not the work tree: an image holds only committed code.
rm -rf "$WORK/src" "$WORK"/wheels/fpgaas-*.whl
mkdir -p "$WORK/src"
git archive HEAD | tar -x -C "$WORK/src"
"$PY" -m pip wheel -q --no-deps --wheel-dir "$WORK/wheels" "./$WORK/src"
record "fpgaas wheel from commit $(git rev-parse --short HEAD)"
record "wheelhouse: $(du -sh "$WORK/wheels" | cut -f1), $((SECONDS - t0)) s"

for image in server builder client; do
    file=docker/Dockerfile
    [ "$image" = server ] || file=docker/Dockerfile.$image
    t0=$SECONDS
    buildah bud --isolation chroot --layers=false --build-arg BASE_IMAGE="$BASE" \
        -f "$file" -t "localhost/fpgaas-$image:$TAG" . >"$WORK/$image.build.log" 2>&1 \
        || { tail -30 "$WORK/$image.build.log" >&2; exit 1; }
    seconds=$((SECONDS - t0))
    size=$(buildah images --format '{{.Size}}' "localhost/fpgaas-$image:$TAG")
    record "image localhost/fpgaas-$image:$TAG: built in $seconds s, size $size"
done

PYTHONPATH=docker${PYTHONPATH:+:$PYTHONPATH} "$PY" -m smoke 2>&1 | tee -a "$REPORT"
