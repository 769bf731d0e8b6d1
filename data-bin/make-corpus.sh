#!/bin/bash
# make-corpus.sh OUTDIR: build moelm's four-domain demo corpus from installed
# Debian packages. Writes OUTDIR/{train,valid,test}.{txt,domains} and
# OUTDIR/PROVENANCE.md. Installs nothing: it checks that every source package is
# installed and names the missing ones. Deterministic: the same package versions
# give byte-identical output (fixed seeds, sorted file lists, C-locale awk/sort).
#
# Output format (fairseq raw text): one document per block, blocks separated by
# exactly one empty line, no empty line inside a block, no line over 300 bytes,
# valid UTF-8, no control characters but tab. X.domains has one label per
# document of X.txt, in order.
set -euo pipefail

export LC_ALL=C.UTF-8
# man/groff must not pick up a user's settings: they would change the text.
unset MANOPT MANPAGER PAGER MANROFFOPT MANROFFSEQ MANSECT MANPATH MANLESS \
      GROFF_TYPESETTER GROFF_TMAC_PATH GROFF_FONT_PATH GROFF_BIN_PATH || true
export GROFF_NO_SGR=1 MANWIDTH=80

BUDGET=650000     # bytes of finished text per domain (the licences have less)
MAX_LINES=60      # lines per document; longer units are split
MAX_WIDTH=300     # bytes per line; longer lines are wrapped
SEED=20240611     # Park-Miller seed; each shuffle offsets it

LICENCE_PKGS="base-files libsoftware-license-perl"
# Packages whose machine-readable /usr/share/doc/PKG/copyright files give
# licence paragraphs: the essential system plus the project's own dependencies.
COPYRIGHT_PKGS="apt bash bsdutils coreutils dash debianutils diffutils dpkg
  e2fsprogs findutils grep gzip init-system-helpers libcunit1-dev libglib2.0-dev
  libjson-glib-dev liblocale-gettext-perl libopenblas-dev libpam-modules-bin
  libsentencepiece-dev login man-db manpages manpages-dev mawk ncurses-base
  perl-base sed sensible-utils sysvinit-utils tar"
# Software::License templates whose text /usr/share/common-licenses lacks.
SOFTWARE_LICENSES="AGPL_3 Apache_1_1 EUPL_1_1 EUPL_1_2 FreeBSD ISC MIT
  Mozilla_1_0 PostgreSQL QPL_1_0 SSLeay Sun Zlib"
MANPAGE_PKGS="manpages manpages-dev"
FORTUNE_PKGS="fortunes fortunes-min"
# Not taken: pictures rather than prose, other languages, and two sets about
# groups of people that are not offensive enough for fortunes-off but close.
FORTUNE_SKIP="art ascii-art ethnic men-women translate-me"
HEADER_PKGS="libc6-dev libglib2.0-dev"
TOOL_PKGS="man-db groff-base bsdextrautils libc-bin gzip coreutils dpkg"

die() { echo "make-corpus.sh: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: make-corpus.sh OUTDIR"
OUT=$1

# --- packages ---------------------------------------------------------------
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
. "$(dirname "$0")/corpus-lib.sh"
check_packages $LICENCE_PKGS $COPYRIGHT_PKGS $MANPAGE_PKGS $FORTUNE_PKGS $HEADER_PKGS $TOOL_PKGS
all_pkgs=$(printf '%s\n' $LICENCE_PKGS $COPYRIGHT_PKGS $MANPAGE_PKGS \
  $FORTUNE_PKGS $HEADER_PKGS $TOOL_PKGS | LC_ALL=C sort -u)

# --- 1. licences --------------------------------------------------------------
echo "make-corpus.sh: licences" >&2
find /usr/share/common-licenses -maxdepth 1 -type f | bsort >"$TMP/common-licenses.list"
[ -s "$TMP/common-licenses.list" ] || die "/usr/share/common-licenses is empty"
{
  bawk -f "$TMP/encode.awk" $(cat "$TMP/common-licenses.list")
  for m in $SOFTWARE_LICENSES; do
    f=/usr/share/perl5/Software/License/$m.pm
    [ -f "$f" ] || die "$f: not found (libsoftware-license-perl changed?)"
    # the text is the __LICENSE__ data section; template fields become placeholders
    bawk -v f="$f" '
      /^__LICENSE__$/ { on = 1; printf "%s", f; next }
      /^__[A-Z_]+__$/ { on = 0 }
      on { gsub(/[\001\036]/, "")
           gsub(/\{\{ *\$self->year *\}\}/, "<year>")
           gsub(/\{\{ *\$self->(_dotless_)?holder *\}\}/, "<copyright holder>")
           printf "\001%s", $0 }
      END { printf "\n" }' "$f"
  done
  for p in $COPYRIGHT_PKGS; do
    f=/usr/share/doc/$p/copyright
    [ -f "$f" ] || continue
    # machine-readable copyright files only: keep the text of License fields
    # (continuation lines, " ." for an empty line), never names or copyrights
    bawk -v f="$f" '
      function done() { if (lic && n) printf "\n"; lic = 0; n = 0 }
      FNR == 1 && !/^Format:.*copyright-format/ { exit }
      /^[^ \t]/ { done(); if (/^License:/) { lic = 1; id = $0; sub(/^License:[ \t]*/, "", id) }; next }
      /^[ \t]*$/ { done(); next }
      lic { sub(/^[ \t]/, ""); if ($0 == ".") $0 = ""; gsub(/[\001\036]/, "")
            if (n++ == 0) printf "%s (License: %s)", f, id; printf "\001%s", $0 }
      END { done() }' "$f"
  done
} >"$TMP/licence.units"
# The same text appears in many packages: keep its first occurrence only,
# comparing with whitespace collapsed.
bawk -F '\001' '{ k = $0; sub(/^[^\001]*/, "", k); gsub(/[\001 \t]+/, " ", k)
                  sub(/^ /, "", k); sub(/ $/, "", k)
                  if (k != "" && !(k in seen)) { seen[k] = 1; print } }' \
  "$TMP/licence.units" | shuffle 1 | decode | normalise $BUDGET "$TMP/licence.used" \
  >"$TMP/licence.docs"

# --- 2. manual pages -----------------------------------------------------------
echo "make-corpus.sh: manual pages" >&2
dpkg -L $MANPAGE_PKGS | grep -E '^/usr/share/man/man[0-9]/[^/]+\.gz$' | bsort -u \
  | while read -r f; do if [ -f "$f" ] && [ ! -L "$f" ]; then echo "$f"; fi; done \
  | shuffle 2 >"$TMP/manpage.list"
: >"$TMP/manpage.docs"
while read -r f; do
  # pages that only point at another page (.so) are aliases: skip them
  body=$(zcat "$f" | grep -c -v -e '^\.so ' -e '^[[:space:]]*$' || true)
  [ "$body" -gt 0 ] || continue
  { printf '\036unit %s\n' "$f"
    man --nh --nj -E UTF-8 -P cat -l "$f" 2>/dev/null | col -bx || true
  } | normalise 999999999 "$TMP/manpage.used" >>"$TMP/manpage.docs"
  [ "$(wc -c <"$TMP/manpage.docs")" -lt $BUDGET ] || break
done <"$TMP/manpage.list"

# --- 3. fortunes ----------------------------------------------------------------
echo "make-corpus.sh: fortunes" >&2
dpkg -L $FORTUNE_PKGS | grep -E '^/usr/share/games/fortunes/[^/.]+$' | bsort -u \
  | while read -r f; do
      if [ ! -f "$f" ] || [ -L "$f" ]; then continue; fi
      case " $FORTUNE_SKIP " in *" ${f##*/} "*) continue ;; esac
      echo "$f"
    done >"$TMP/fortune.files"
[ -s "$TMP/fortune.files" ] || die "no fortune files found"
# one unit per %-separated fortune
bawk '
  function done() { if (n) printf "\n"; n = 0 }
  FNR == 1 { done() }
  /^%$/ { done(); next }
  { gsub(/[\001\036]/, "")
    if (n == 0 && $0 ~ /^[ \t]*$/) next
    if (n++ == 0) printf "%s", FILENAME; printf "\001%s", $0 }
  END { done() }' $(cat "$TMP/fortune.files") \
  | shuffle 3 | decode | normalise $BUDGET "$TMP/fortune.used" >"$TMP/fortune.docs"

# --- 4. C headers -----------------------------------------------------------------
echo "make-corpus.sh: C headers" >&2
# architecture-independent headers only, so every architecture gives the same text
dpkg -L $HEADER_PKGS | grep -E '^/usr/include/.*\.h$' \
  | grep -v -E '^/usr/include/[^/]*-linux-[^/]*/' | bsort -u \
  | while read -r f; do if [ -f "$f" ] && [ ! -L "$f" ]; then echo "$f"; fi; done \
  | shuffle 4 >"$TMP/cheader.list"
# The licence comment at the top of each file is the same in hundreds of
# headers (and belongs to the licence domain): drop it.
bawk '
  function start() { if (open) printf "\n"; printf "%s", FILENAME; open = 1; state = 0; nb = 0; blk = "" }
  function out(s) { gsub(/[\001\036]/, "", s); printf "\001%s", s }
  FNR == 1 { start() }
  state == 0 { if (/^[ \t]*$/) next; state = /^\/\*/ ? 1 : 2 }
  state == 1 { buf[++nb] = $0; blk = blk " " $0
               if (/\*\//) {
                 if (blk !~ /[Ll]icen[cs]e|Copyright|SPDX/) for (i = 1; i <= nb; i++) out(buf[i])
                 state = 2
               }
               next }
  { out($0) }
  END { if (open) printf "\n" }' $(cat "$TMP/cheader.list") \
  | decode | normalise $BUDGET "$TMP/cheader.used" >"$TMP/cheader.docs"

# --- splits -----------------------------------------------------------------------
echo "make-corpus.sh: splits" >&2
DOMAINS="licence manpage fortune cheader"
make_splits "$OUT" $DOMAINS

# --- PROVENANCE.md --------------------------------------------------------------------
{
cat <<'EOF'
# Provenance of the demo corpus

Generated by `data-bin/make-corpus.sh` from installed Debian packages; the same
package versions give byte-identical files. Four domains of English text, each
document labelled in `X.domains`: `licence`, `manpage`, `fortune`, `cheader`.
Every text here may be redistributed under the licence named for its domain.

Processing, all domains: invalid UTF-8, control characters (but tab), the BOM
and Unicode line/space separators removed or made spaces; trailing blanks
stripped; empty lines dropped; lines over 300 bytes wrapped at a space; a unit
(one licence, page, fortune or header) longer than 60 lines is split into
documents of at most 60 lines at paragraph breaks. Units are taken in a fixed
pseudo-random order until a domain holds about 650 kB. Per domain every 20th
document goes to valid and another to test; each split is then shuffled.

## Packages the script needs

EOF
pkgline $all_pkgs
cat <<'EOF'

Install them with `apt-get install --no-install-recommends` and the names above.

## licence

Licence texts and licence notices. Each may be copied verbatim: the FSF,
Apache, Mozilla and Creative Commons texts say so themselves, and the rest are
permissive notices or Debian's own summaries.

- `/usr/share/common-licenses/*` (regular files; symlinks skipped) from base-files.
- `/usr/share/perl5/Software/License/{AGPL_3,Apache_1_1,EUPL_1_1,EUPL_1_2,FreeBSD,ISC,MIT,Mozilla_1_0,PostgreSQL,QPL_1_0,SSLeay,Sun,Zlib}.pm`
  from libsoftware-license-perl (Perl's terms: GPL-1+ or Artistic): the
  `__LICENSE__` section only, `{{$self->year}}`/`{{$self->holder}}` replaced by
  `<year>`/`<copyright holder>`.
- The text of `License:` fields of the machine-readable `/usr/share/doc/PKG/copyright`
  files of the packages listed under "copyright files" below (names, copyright
  lines and file lists dropped). A text met twice (whitespace aside) is kept once.

EOF
pkgline $LICENCE_PKGS
echo
echo "Sources (licence texts taken from each):"
echo
sed 's/ (License: .*//' "$TMP/licence.used" | bsort | uniq -c | bawk '{ printf "- %s (%d)\n", $2, $1 }'
cat <<'EOF'

## manpage

Linux man-pages project, rendered with
`MANWIDTH=80 man --nh --nj -E UTF-8 -P cat -l PAGE | col -bx`.
Licence: the man-pages project's per-page licences (Linux man-pages verbatim
licence, GPL-2+, BSD and similar; see /usr/share/doc/manpages/copyright), all of
which allow redistribution. Pages that are only a `.so` alias are skipped.

EOF
pkgline $MANPAGE_PKGS
echo
echo "Pages taken:"
echo
sed 's/^/- /' "$TMP/manpage.used"
cat <<'EOF'

## fortune

BSD fortune cookie files, one document per `%`-separated fortune. Licence: the
fortune-mod collection, distributed by Debian (main) under its BSD licence; see
/usr/share/doc/fortunes/copyright. The
offensive sets (package fortunes-off) are not used; nor are art, ascii-art,
ethnic, men-women and translate-me from the packages below.

EOF
pkgline $FORTUNE_PKGS
echo
echo "Fortune files (fortunes taken from each):"
echo
bsort "$TMP/fortune.used" | uniq -c | bawk '{ printf "- %s (%d)\n", $2, $1 }'
cat <<'EOF'

## cheader

C header files, architecture-independent ones only (nothing under
`/usr/include/<triplet>/`), the opening licence comment removed. Licences:
GNU C Library headers from libc6-dev, LGPL-2.1+ (see
/usr/share/doc/libc6-dev/copyright); GLib headers from libglib2.0-dev,
LGPL-2.1+.

EOF
pkgline $HEADER_PKGS
echo
echo "Headers taken:"
echo
sed 's/^/- /' "$TMP/cheader.used"
cat <<'EOF'

## Sizes

EOF
size_table $DOMAINS
} >"$TMP/PROVENANCE.md"

for f in train.txt valid.txt test.txt train.domains valid.domains test.domains PROVENANCE.md; do
  mv -f "$TMP/$f" "$OUT/$f"
done
echo "make-corpus.sh: wrote $OUT" >&2
