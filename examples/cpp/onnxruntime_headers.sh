#!/bin/sh
# ONNX Runtime's C/C++ headers into DEST (default build/onnxruntime-include), from Debian's
# libonnxruntime-dev package (Debian 13, "trixie"), downloaded with apt through a private source list:
# nothing is installed and the system's apt sources are untouched. The headers' C API (1.21) is served
# by any newer libonnxruntime, such as the one in the onnxruntime wheel. (ONNX Runtime's own release
# archives carry the same headers, where GitHub is reachable.)
set -eu
dest=$(realpath -m "${1:-build/onnxruntime-include}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/archives/partial"
echo "deb http://deb.debian.org/debian trixie main" > "$work/sources.list"
apt_options="-q -o Dir::Etc::sourcelist=$work/sources.list -o Dir::Etc::sourceparts=- \
  -o Dir::State::Lists=$work/lists -o Dir::Cache::Archives=$work/archives -o APT::Sandbox::User=root"
# shellcheck disable=SC2086
apt-get $apt_options update > /dev/null
# shellcheck disable=SC2086
(cd "$work" && apt-get $apt_options download libonnxruntime-dev > /dev/null)
dpkg-deb -x "$work"/libonnxruntime-dev_*.deb "$work/root"
mkdir -p "$dest"
cp -r "$work/root/usr/include/onnxruntime/." "$dest/"
echo "$dest"
