#!/usr/bin/env bash
# Install test needs, then: fmt, clippy, every test, and the QEMU lab with real VFs.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
./scripts/deps.sh test
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== tests"
cargo build --workspace --all-targets
# simhost::skip appends each skipped test here (as root or with CI=true a skip fails instead)
skipped="${CARGO_TARGET_DIR:-target}/skipped-tests.txt"
rm -f "$skipped"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
    cargo test --workspace --doc -q
else
    cargo test --workspace --no-fail-fast
fi
if [ -s "$skipped" ]; then
    echo "== skipped tests ($(wc -l <"$skipped"))"
    cat "$skipped"
fi
if [ -x ./scripts/vmlab.sh ]; then
    echo "== QEMU lab (real SR-IOV VFs, real RDMA device)"
    ./scripts/vmlab.sh
fi
