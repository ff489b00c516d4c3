# The netcompose binary a bench measures, sourced by the bench scripts (after they set `repo`).
#
#   bench_binary          # NETCOMPOSE_BIN as given, else this checkout's release build (made first)
#   bench_work [TEMPLATE] # and a work directory ($work, mktemp TEMPLATE), removed on exit,
#                         # holding a copy of it as $work/netcompose
bench_binary() {
    if [[ -z ${NETCOMPOSE_BIN:-} ]]; then
        (cd "$repo" && cargo build --release --quiet --bin netcompose)
        NETCOMPOSE_BIN=$repo/target/release/netcompose
    fi
}

bench_work() {
    bench_binary
    work=$(mktemp -d ${1:+"$1"})
    trap 'rm -rf "$work"' EXIT
    # A copy, so that a concurrent build cannot swap the binary in the middle of the run.
    cp "$NETCOMPOSE_BIN" "$work/netcompose"
}
