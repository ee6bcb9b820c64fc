#!/bin/sh
# run.sh - runs test programs and counts their PASS/FAIL/SKIP lines into the
# suite's closing line "N passed, N failed[, N skipped]". A program that exits
# non-zero without reporting a failure (a crash, a sanitizer report) counts as
# one failure of its own. Exits 1 if anything failed.
#
#   sh tests/run.sh PROGRAM...       (*.py run with $SMQ_PYTHON, default python3)
#   sh tests/run.sh A B VAR=value C   (VAR=value set for the programs after it)
#   ... | sh tests/run.sh --count-stdin
set -u
TIMEOUT=${SMQ_TEST_TIMEOUT:-900}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

if [ "${1:-}" = "--count-stdin" ]; then
    tee "$log"
else
    for prog in "$@"; do
        case "$prog" in
        [A-Za-z_]*=*)
            export "$prog"
            continue
            ;;
        esac
        case "$prog" in
        *.py) cmd="${SMQ_PYTHON:-python3} $prog" ;;
        *) cmd="$prog" ;;
        esac
        out=$(mktemp)
        t0=$(date +%s%N)
        timeout "$TIMEOUT" $cmd >"$out" 2>"$out.err"
        rc=$?
        t1=$(date +%s%N)
        cat "$out"
        # Each program's wall time, for keeping the suite's time in view.
        echo "-- $prog: $(( (t1 - t0) / 1000000 )) ms"
        # Failure details go to stderr; show them (indented) only on failure.
        if [ $rc -ne 0 ]; then
            sed 's/^/    /' "$out.err" | tail -n 60
        fi
        cat "$out" >>"$log"
        if [ $rc -ne 0 ] && ! grep -q '^FAIL ' "$out"; then
            if [ $rc -eq 124 ]; then why="timed out after ${TIMEOUT}s"; else why="exited with status $rc"; fi
            echo "FAIL $prog: $why without reporting a failed test"
            echo "FAIL $prog" >>"$log"
        fi
        rm -f "$out" "$out.err"
    done
fi

passed=$(grep -c '^PASS ' "$log")
failed=$(grep -c '^FAIL ' "$log")
skipped=$(grep -c '^SKIP ' "$log")
if [ "$skipped" -gt 0 ]; then
    echo "$passed passed, $failed failed, $skipped skipped"
else
    echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
