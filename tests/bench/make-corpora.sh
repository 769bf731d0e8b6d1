#!/bin/bash
# make-corpora.sh OUTDIR: the two extra four-domain corpora of the mixture
# benchmark (tests/bench/mixture-bench.sh), built from installed Debian packages
# like the shipped one (data-bin/make-corpus.sh, whose helpers it shares):
#
#   OUTDIR/docs  info   GNU info manuals (one unit per info node)
#                man    section 1 and 8 manual pages of the same GNU/Debian tools
#                changelog  Debian changelog entries
#                perldoc    Perl's own documentation (POD source)
#   OUTDIR/code  python Python standard library modules
#                pytest the Python standard library's test suite
#                perl   Perl modules, documentation (POD) removed
#                shell  POSIX/bash shell scripts of the build tools
#
# Each corpus has unequal domain sizes (about 3.2 : 1.8 : 1.2 : 1 in bytes) and
# one pair of similar domains: info manuals and manual pages document the same
# programs; library code and its tests are both Python. Each OUTDIR/X gets
# {train,valid,test}.{txt,domains} (one label per document) and PROVENANCE.md.
# One document in 10 goes to valid and one to test, so that the smallest domain
# still has a few dozen held-out documents.
#
# Installs nothing: when a package is missing it names it with the apt-get line.
# Deterministic: the same package versions give byte-identical output.
set -euo pipefail

export LC_ALL=C.UTF-8
unset MANOPT MANPAGER PAGER MANROFFOPT MANROFFSEQ MANSECT MANPATH MANLESS \
      GROFF_TYPESETTER GROFF_TMAC_PATH GROFF_FONT_PATH GROFF_BIN_PATH || true
export GROFF_NO_SGR=1 MANWIDTH=80

MAX_LINES=40      # lines per document; longer units are split
MAX_WIDTH=150     # bytes per line; longer lines are wrapped (a line must fit a 128-token block)
MAX_UNIT_LINES=400 # lines taken from the start of each source file (code)
SEED=20251207     # Park-Miller seed; each shuffle offsets it
SPLIT_PERIOD=10   # one document in 10 to valid, one to test
PY=python3.11     # the Python and Perl versions of Debian 12
PERLV=5.36

# bytes of finished text per domain
BUDGET_BIG=800000 BUDGET_MID=450000 BUDGET_SMALL=300000 BUDGET_TINY=250000

GNU_PKGS="coreutils findutils grep sed gzip diffutils m4 automake gettext bc ed
  time wget"
MAN_PKGS="$GNU_PKGS tar util-linux dpkg apt debianutils bash man-db"
CHANGELOG_PKGS="bash coreutils dash debianutils diffutils e2fsprogs findutils
  grep gzip libc6 login mawk ncurses-base perl-base procps util-linux
  libglib2.0-0 bzip2 curl man-db gnupg file less zlib1g openssl"
PERLDOC_PKGS="perl-doc"
PY_PKGS="lib$PY-stdlib lib$PY-minimal"
PYTEST_PKGS="lib$PY-testsuite"
PERL_PKGS="perl-modules-$PERLV"
SHELL_PKGS="libtool automake autoconf gzip debianutils dpkg gettext bzip2
  xz-utils"
TOOL_PKGS="man-db groff-base bsdextrautils gzip coreutils dpkg"

die() { echo "make-corpora.sh: $*" >&2; exit 1; }
[ $# -eq 1 ] || die "usage: make-corpora.sh OUTDIR"
OUT=$1

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
. "$(dirname "$0")/../../data-bin/corpus-lib.sh"
check_packages $GNU_PKGS $MAN_PKGS $CHANGELOG_PKGS $PERLDOC_PKGS $PY_PKGS \
  $PYTEST_PKGS $PERL_PKGS $SHELL_PKGS $TOOL_PKGS

# cap N: at most N lines of each unit of a marker stream, so that one big file
# cannot fill a domain's budget alone.
cap() { bawk -v n=$1 '/^\036unit / { k = 0; print; next } k++ < n'; }

# files PATTERN PKG...: the regular files (no symlinks) of the packages whose
# path matches the extended regular expression, sorted.
files() {
  local re=$1
  shift
  dpkg -L "$@" | grep -E "$re" | bsort -u \
    | while read -r f; do if [ -f "$f" ] && [ ! -L "$f" ]; then echo "$f"; fi; done
}

# handwritten: the file names on stdin whose first 3 lines do not say that a
# program wrote the file (generated from/by, auto-generated, DO NOT EDIT). Such
# files are tables or expansions, not code of their domain: Python's charmap
# codecs (gencodec.py), token.py, stringprep.py; Perl's feature.pm; autoconf's
# and libtool's m4sh output. Left in, they are a fifth domain that the mixture
# finds (tests/bench/NOTES.md, issue 17).
GENERATED_RE='[Gg]enerated (from|by) |[Aa]uto-?generated|[Aa]utomatically generated|DO NOT EDIT'
handwritten() {
  while read -r f; do
    head -n 3 "$f" | grep -q -a -E "$GENERATED_RE" || echo "$f"
  done
}

# --- docs: info manuals ---------------------------------------------------------
echo "make-corpora.sh: info manuals" >&2
files '^/usr/share/info/.*\.info(-[0-9]+)?\.gz$' $GNU_PKGS >"$TMP/info.files"
[ -s "$TMP/info.files" ] || die "no info manuals found"
# one unit per node (nodes start after a \037 line); the node's "File: ..."
# header line, the indirect table and the tag table are dropped
# (index entries are marked with NUL and backspace bytes: dropped)
while read -r f; do zcat "$f"; done <"$TMP/info.files" | tr -d '\000\010' | bawk '
  function done() { if (n) printf "\n"; n = 0 }
  /^\037/ { done(); skip = 0; hdr = 1; next }
  hdr { hdr = 0; if ($0 ~ /^(Tag Table|Indirect):/ || $0 !~ /^File: /) skip = 1
        name = $0; sub(/,  *Next:.*/, "", name); sub(/,  *Prev:.*/, "", name); sub(/,  *Up:.*/, "", name)
        next }
  skip { next }
  { gsub(/[\001\036\037]/, "")
    if (n == 0 && $0 ~ /^[ \t]*$/) next
    if (n++ == 0) printf "%s", name; printf "\001%s", $0 }
  END { done() }' | shuffle 1 | decode | normalise $BUDGET_BIG "$TMP/info.used" >"$TMP/info.docs"

# --- docs: manual pages ------------------------------------------------------------
echo "make-corpora.sh: manual pages" >&2
files '^/usr/share/man/man[18]/[^/]+\.gz$' $MAN_PKGS | shuffle 2 >"$TMP/man.list"
: >"$TMP/man.docs"
while read -r f; do
  body=$(zcat "$f" | grep -c -v -e '^\.so ' -e '^[[:space:]]*$' || true)
  [ "$body" -gt 0 ] || continue
  { printf '\036unit %s\n' "$f"
    man --nh --nj -E UTF-8 -P cat -l "$f" 2>/dev/null | col -bx || true
  } | normalise 999999999 "$TMP/man.used" >>"$TMP/man.docs"
  [ "$(wc -c <"$TMP/man.docs")" -lt $BUDGET_MID ] || break
done <"$TMP/man.list"

# --- docs: Debian changelog entries --------------------------------------------------
echo "make-corpora.sh: changelogs" >&2
files '^/usr/share/doc/[^/]+/changelog\.Debian\.gz$' $CHANGELOG_PKGS >"$TMP/changelog.files"
# one unit per entry: from "pkg (version) dist; urgency=..." to its " -- " line;
# an entry met twice (a changelog shared by two packages) is kept once
while read -r f; do zcat "$f"; done <"$TMP/changelog.files" | bawk '
  function done() { if (n && !(key in seen)) { seen[key] = 1; printf "%s\n", unit } n = 0; unit = ""; key = "" }
  /^[a-z0-9][a-z0-9.+-]* \(.*\).*;.*urgency=/ { done(); unit = $1 " " $2; key = $0 }
  { gsub(/[\001\036]/, "")
    if (n == 0 && unit == "") next
    n++; unit = unit "\001" $0; key = key $0 }
  END { done() }' | shuffle 3 | decode | normalise $BUDGET_SMALL "$TMP/changelog.used" >"$TMP/changelog.docs"

# --- docs: Perl's documentation --------------------------------------------------
echo "make-corpora.sh: perldoc" >&2
files '\.pod$' $PERLDOC_PKGS | shuffle 4 >"$TMP/perldoc.files"
[ -s "$TMP/perldoc.files" ] || die "no .pod files in $PERLDOC_PKGS"
bawk -f "$TMP/encode.awk" $(cat "$TMP/perldoc.files") | shuffle 5 | decode \
  | normalise $BUDGET_TINY "$TMP/perldoc.used" >"$TMP/perldoc.docs"

make_splits "$TMP/out-docs" info man changelog perldoc
for s in train valid test; do for x in txt domains; do mv "$TMP/$s.$x" "$TMP/out-docs/"; done; done
{
  echo "# Provenance of the 'docs' corpus"
  echo
  echo "Generated by \`tests/bench/make-corpora.sh\` from installed Debian packages"
  echo "(licences: each package's /usr/share/doc/PKG/copyright; all in Debian main)."
  echo "Units longer than $MAX_LINES lines are cut into documents at paragraph breaks;"
  echo "one document in $SPLIT_PERIOD goes to valid, one to test."
  echo
  echo "## Packages"
  echo
  pkgline $(printf '%s\n' $GNU_PKGS $MAN_PKGS $CHANGELOG_PKGS $PERLDOC_PKGS $TOOL_PKGS | bsort -u)
  echo
  echo "## Domains"
  echo
  echo "- info: GNU info manuals of $(echo $GNU_PKGS), one unit per node ($(bsort -u "$TMP/info.used" | wc -l) nodes)"
  echo "- man: manual pages, sections 1 and 8, of $(echo $MAN_PKGS), rendered with"
  echo "  \`MANWIDTH=80 man --nh --nj -E UTF-8 -P cat -l PAGE | col -bx\` ($(wc -l <"$TMP/man.used") pages)"
  echo "- changelog: entries of /usr/share/doc/PKG/changelog.Debian.gz of $(echo $CHANGELOG_PKGS) ($(wc -l <"$TMP/changelog.used") entries)"
  echo "- perldoc: POD source of Perl's manual (/usr/share/perl/$PERLV.0/pod, $PERLDOC_PKGS) ($(wc -l <"$TMP/perldoc.used") files)"
  echo
  echo "## Sizes"
  echo
  size_table info man changelog perldoc
} >"$TMP/out-docs/PROVENANCE.md"

# --- code: Python library, Python tests --------------------------------------------
echo "make-corpora.sh: python" >&2
files "^/usr/lib/$PY/.*\\.py\$" $PY_PKGS | grep -v -E '/(test|tests|idle_test)/' | handwritten | shuffle 6 >"$TMP/python.files"
files "^/usr/lib/$PY/test/(.*/)?test_[^/]*\\.py\$" $PYTEST_PKGS | handwritten | shuffle 7 >"$TMP/pytest.files"
[ -s "$TMP/python.files" ] && [ -s "$TMP/pytest.files" ] || die "no Python sources found"
bawk -f "$TMP/encode.awk" $(cat "$TMP/python.files") | decode | cap $MAX_UNIT_LINES \
  | normalise $BUDGET_BIG "$TMP/python.used" >"$TMP/python.docs"
bawk -f "$TMP/encode.awk" $(cat "$TMP/pytest.files") | decode | cap $MAX_UNIT_LINES \
  | normalise $BUDGET_MID "$TMP/pytest.used" >"$TMP/pytest.docs"

# --- code: Perl modules without their POD -----------------------------------------
echo "make-corpora.sh: perl" >&2
files '\.pm$' $PERL_PKGS | handwritten | shuffle 8 >"$TMP/perl.files"
[ -s "$TMP/perl.files" ] || die "no Perl modules in $PERL_PKGS"
bawk '
  FNR == 1 { if (open) printf "\n"; printf "%s", FILENAME; open = 1; pod = 0; end = 0 }
  end { next }
  /^__END__$/ || /^__DATA__$/ { end = 1; next }
  /^=cut/ { pod = 0; next }
  /^=[a-zA-Z]/ { pod = 1; next }
  pod { next }
  { gsub(/[\001\036]/, ""); printf "\001%s", $0 }
  END { if (open) printf "\n" }' $(cat "$TMP/perl.files") | decode | cap $MAX_UNIT_LINES \
  | normalise $BUDGET_SMALL "$TMP/perl.used" >"$TMP/perl.docs"

# --- code: shell scripts -------------------------------------------------------------
echo "make-corpora.sh: shell" >&2
files '.' $SHELL_PKGS | while read -r f; do
  case "$f" in *.sh) echo "$f"; continue ;; esac
  head -n 1 "$f" 2>/dev/null | grep -q -a -E '^#! *(/usr)?/bin/(env +)?(ba)?sh( |$)' && echo "$f"
done | handwritten | shuffle 9 >"$TMP/shell.files" || true
[ -s "$TMP/shell.files" ] || die "no shell scripts in $SHELL_PKGS"
bawk -f "$TMP/encode.awk" $(cat "$TMP/shell.files") | decode | cap $MAX_UNIT_LINES \
  | normalise $BUDGET_TINY "$TMP/shell.used" >"$TMP/shell.docs"

make_splits "$TMP/out-code" python pytest perl shell
for s in train valid test; do for x in txt domains; do mv "$TMP/$s.$x" "$TMP/out-code/"; done; done
{
  echo "# Provenance of the 'code' corpus"
  echo
  echo "Generated by \`tests/bench/make-corpora.sh\` from installed Debian packages"
  echo "(licences: each package's /usr/share/doc/PKG/copyright; all in Debian main)."
  echo "Units (one file each) longer than $MAX_LINES lines are cut into documents at"
  echo "paragraph breaks (blank lines); one document in $SPLIT_PERIOD goes to valid, one to test."
  echo "Files whose first 3 lines say a program generated them are left out."
  echo
  echo "## Packages"
  echo
  pkgline $(printf '%s\n' $PY_PKGS $PYTEST_PKGS $PERL_PKGS $SHELL_PKGS | bsort -u)
  echo
  echo "## Domains"
  echo
  echo "- python: /usr/lib/$PY/**/*.py of $PY_PKGS, test directories left out ($(wc -l <"$TMP/python.used") files)"
  echo "- pytest: /usr/lib/$PY/test/**/test_*.py of $PYTEST_PKGS ($(wc -l <"$TMP/pytest.used") files)"
  echo "- perl: *.pm of $PERL_PKGS, POD blocks and everything after __END__/__DATA__ removed ($(wc -l <"$TMP/perl.used") files)"
  echo "- shell: files of $(echo $SHELL_PKGS) named *.sh or starting with a sh/bash #! line ($(wc -l <"$TMP/shell.used") files)"
  echo
  echo "## Sizes"
  echo
  size_table python pytest perl shell
} >"$TMP/out-code/PROVENANCE.md"

mkdir -p "$OUT"
rm -rf "$OUT/docs" "$OUT/code"
mv "$TMP/out-docs" "$OUT/docs"
mv "$TMP/out-code" "$OUT/code"
echo "make-corpora.sh: wrote $OUT/docs and $OUT/code" >&2
