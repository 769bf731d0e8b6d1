#!/bin/sh
# make check: the moelm Python package's tests (python/tests/test_*.py) with Debian's python3
# (or $PYTHON from configure) against this build's libmoelm.so and cli/moelm. Skipped (exit 77)
# without python3 or numpy (apt-get install python3-numpy), or without the shared library.
py=${PYTHON:-/usr/bin/python3}
case $py in ""|:) py=/usr/bin/python3 ;; esac
if ! command -v "$py" >/dev/null 2>&1; then
  echo "SKIP: no python3 ($py)"
  exit 77
fi
if ! "$py" -c 'import numpy' 2>/dev/null; then
  echo "SKIP: $py has no numpy (apt-get install python3-numpy)"
  exit 77
fi
lib=${MOELM_BUILDDIR:?}/lib/.libs/libmoelm.so.0
if [ ! -f "$lib" ]; then
  echo "SKIP: no $lib (configure --disable-shared?)"
  exit 77
fi
if ldd "$lib" 2>/dev/null | grep -q 'libasan' || nm -D --undefined-only "$lib" 2>/dev/null | grep -q ' __asan_'; then
  # make check-sanitize: python3 cannot load an ASan library unless ASan's runtime comes first
  echo "SKIP: $lib is built with AddressSanitizer"
  exit 77
fi
MOELM_LIBRARY=$lib
PYTHONPATH=${MOELM_SRCDIR:?}/python${PYTHONPATH:+:$PYTHONPATH}
PYTHONDONTWRITEBYTECODE=1 # the source tree may be read-only (make distcheck)
export MOELM_LIBRARY PYTHONPATH PYTHONDONTWRITEBYTECODE
# A private TMPDIR: the library converts fairseq checkpoints in a directory it makes there,
# and test-api (run beside this by make check) counts such directories in its own TMPDIR.
tmp=$(mktemp -d "${TMPDIR:-/tmp}/moelm-python-tests-XXXXXX") || exit 1
TMPDIR=$tmp
export TMPDIR
rc=0
cd "$MOELM_SRCDIR/python/tests" && "$py" -m unittest discover -s . -p 'test_*.py' -v || rc=$?
rm -rf "$tmp"
exit $rc
