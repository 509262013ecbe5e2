#!/usr/bin/env bash
# Builds what a release uploads, into dist/: the sdist, and from it (so that
# a file missing from the sdist fails here, not on a user's machine) one
# abi3 wheel for CPython 3.11 and newer tagged manylinux2014
# (manylinux_2_17, glibc 2.17). zig, from the `ziglang` package on PyPI,
# links against glibc 2.17's symbols, so the newer glibc of the machine that
# builds does not leak into the wheel; no container image is needed.
# `auditwheel show` then confirms the tag, and `twine check` both files.
#
#   scripts/build_wheel.sh [RUST_TARGET]
#
# RUST_TARGET defaults to this machine's; the release workflow passes
# aarch64-unknown-linux-gnu (its Rust standard library must be installed:
# `rustup target add aarch64-unknown-linux-gnu`). The build tools live in
# their own virtual environment, .build-venv, never in the one that tests
# the wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
target=${1:-$(rustc -vV | sed -n 's/^host: //p')}
arch=${target%%-*}

tools=.build-venv
[ -x "$tools/bin/maturin" ] || python3 -m venv "$tools"
# Versions these steps were checked with; the wheel's own build backend
# range is in pyproject.toml.
"$tools/bin/python" -m pip install --quiet maturin==1.16.0 ziglang==0.17.1 auditwheel==6.8.2 twine==7.0.0

rm -rf dist
"$tools/bin/maturin" sdist --out dist
sdist=$(echo dist/pufferrs-*.tar.gz)

unpacked=$(mktemp -d)
trap 'rm -rf "$unpacked"' EXIT
tar -xzf "$sdist" -C "$unpacked"
# CARGO_TARGET_DIR: rebuilds here reuse the checkout's compiled dependencies.
(cd "$unpacked"/pufferrs-* && PATH="$repo/$tools/bin:$PATH" CARGO_TARGET_DIR="$repo/target" \
    maturin build --release --strip --locked --zig --compatibility manylinux2014 --target "$target" \
    --out "$repo/dist")
wheel=$(echo dist/pufferrs-*.whl)

shown=$("$tools/bin/auditwheel" show "$wheel")
echo "$shown"
# auditwheel wraps its lines: join them before looking for the tag.
if ! tr '\n' ' ' <<<"$shown" | grep -q "consistent with the following platform tag: \"manylinux_2_17_$arch\""; then
    echo "build_wheel.sh: $wheel is not manylinux_2_17_$arch" >&2
    exit 1
fi
"$tools/bin/twine" check --strict "$sdist" "$wheel"
ls -l dist
