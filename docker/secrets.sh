#!/bin/sh
# The secrets of docker/compose.yaml, made once into docker/secrets/ (git-ignored):
# the ed25519 key pair artifacts are signed with (PKCS#8 / SubjectPublicKeyInfo PEM, what
# fpgaas.kernels.signing reads), the management API's admin token, and two passwords.
# Existing files are kept, so running it again never rotates anything by accident.
set -eu
dir="$(dirname "$0")/secrets"
mkdir -p "$dir"
umask 077
[ -f "$dir/signing.key" ] || openssl genpkey -algorithm ed25519 -out "$dir/signing.key"
[ -f "$dir/signing.pub" ] || openssl pkey -in "$dir/signing.key" -pubout -out "$dir/signing.pub"
for name in admin-token postgres-password grafana-admin-password; do
    [ -f "$dir/$name" ] || openssl rand -hex 24 | tr -d '\n' >"$dir/$name"
done
# The containers (uids 10001, 999, 472) read these through compose secrets, which are bind
# mounts of single files: the files are world-readable, the directory is not (0700), so on the
# host only its owner reaches them and in a container only the services that mount them do.
chmod 0700 "$dir"
chmod 0644 "$dir"/*
ls -l "$dir"
