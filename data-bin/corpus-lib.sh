# corpus-lib.sh: shell and awk helpers shared by the corpus builders
# (data-bin/make-corpus.sh, tests/bench/make-corpora.sh). Source it after setting
# SEED, MAX_LINES, MAX_WIDTH, TMP (a scratch directory, where the awk programs
# are written) and a die() function. Everything is deterministic: byte-level
# awk in the C locale, Park-Miller shuffles that compute exactly in any awk.

TAB=$(printf '\t')

# check_packages PKG...: die naming the Debian packages that are not installed.
check_packages() {
  local missing= p st
  for p in $(printf '%s\n' "$@" | LC_ALL=C sort -u); do
    st=$(dpkg-query -W -f '${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$st" = installed ] || missing="$missing $p"
  done
  command -v awk >/dev/null || missing="$missing mawk"
  [ -z "$missing" ] || die "missing Debian packages:$missing (apt-get install$missing)"
}

pkg_version() { dpkg-query -W -f '${Version}' "$1"; }

# Byte-level awk: the same program must give the same bytes under mawk and gawk.
bawk() { LC_ALL=C awk "$@"; }
bsort() { LC_ALL=C sort "$@"; }

# shuffle OFFSET: permute stdin lines with a Park-Miller generator (exact in
# double arithmetic, so every awk agrees) seeded with SEED+OFFSET.
shuffle() {
  bawk -v x=$((SEED + $1)) '{ x = (x * 16807) % 2147483647; printf "%d\t%s\n", x, $0 }' \
    | bsort -t "$TAB" -k1,1n -s | cut -f2-
}

# Units travel one per line as NAME \001 LINE \001 LINE ... so they can be
# shuffled and deduplicated with line tools; decode turns them into the marker
# stream that normalise reads.
cat >"$TMP/encode.awk" <<'EOF'
# One unit per input file. Control bytes used as separators are dropped.
FNR == 1 { if (open) printf "\n"; printf "%s", (prefix FILENAME); open = 1 }
{ gsub(/[\001\036]/, ""); printf "\001%s", $0 }
END { if (open) printf "\n" }
EOF
decode() { bawk -F '\001' '{ print "\036unit " $1; for (i = 2; i <= NF; i++) print $i }'; }

# normalise BUDGET USEDLIST: marker stream in, documents out (each followed by
# one empty line). Cleans lines, wraps long ones, drops blank lines, splits
# units into documents of at most MAX_LINES lines at paragraph breaks. Stops
# taking units once BUDGET bytes have been written; appends the name of every
# unit taken to USEDLIST.
cat >"$TMP/normalise.awk" <<'EOF'
function clean(s) {
  # Unicode whitespace becomes a space (a line of it would read as empty to a
  # Python-style tokenizer); the BOM, C0/C1 controls but tab and DEL go.
  gsub(/\302[\205\240]|\341\232\200|\342\200[\200-\212\250\251\257]|\342\201\237|\343\200\200/, " ", s)
  gsub(/\357\273\277|\302[\200-\237]|[\001-\010\013-\037\177]/, "", s)
  sub(/[ \t]+$/, "", s)
  return s
}
function add_line(s) {
  if (s == "") { end_para(); return }
  para[++np] = s
}
function add_wrapped(s,   q, p, head) {
  while (length(s) > maxw) {
    p = 0
    for (q = maxw + 1; q > maxw / 2; q--)
      if (substr(s, q, 1) == " " || substr(s, q, 1) == "\t") { p = q; break }
    if (p) { head = substr(s, 1, p - 1); s = substr(s, p + 1) }
    else {
      # no space: cut before a character, never inside a UTF-8 sequence
      q = maxw + 1
      while (q > 2 && substr(s, q, 1) ~ /^[\200-\277]$/) q--
      head = substr(s, 1, q - 1); s = substr(s, q)
    }
    sub(/[ \t]+$/, "", head); sub(/^[ \t]+/, "", s)
    if (head != "") para[++np] = head
  }
  if (s != "") para[++np] = s
}
function flush_chunk(   i) {
  if (nc == 0) return
  for (i = 1; i <= nc; i++) { print chunk[i]; total += length(chunk[i]) + 1 }
  print ""; total += 1
  nc = 0; emitted = 1
}
function end_para(   i, pieces, size, j) {
  if (np == 0) return
  if (nc + np > maxl) flush_chunk()
  if (np > maxl) {
    # an oversized paragraph becomes pieces of nearly equal length
    pieces = int((np + maxl - 1) / maxl); size = int((np + pieces - 1) / pieces)
    for (i = 1; i <= np; i += size) {
      for (j = i; j < i + size && j <= np; j++) chunk[++nc] = para[j]
      flush_chunk()
    }
  } else {
    for (i = 1; i <= np; i++) chunk[++nc] = para[i]
  }
  np = 0
}
function end_unit() {
  end_para(); flush_chunk()
  if (name != "" && emitted) print name >> used
  name = ""; emitted = 0
}
BEGIN { total = 0; np = 0; nc = 0; skipping = 0 }
/^\036unit / {
  end_unit()
  skipping = (total >= budget)
  if (!skipping) name = substr($0, 7)
  next
}
skipping { next }
{ s = clean($0); if (length(s) > maxw) { add_wrapped(s); next } add_line(s) }
END { end_unit() }
EOF
normalise() {
  { iconv -c -f UTF-8 -t UTF-8 || true; } | bawk -v budget="$1" -v used="$2" \
    -v maxl=$MAX_LINES -v maxw=$MAX_WIDTH -f "$TMP/normalise.awk"
}

# make_splits OUT DOMAIN...: from TMP/DOMAIN.docs (documents separated by one
# empty line) write TMP/all.tsv and OUT/{train,valid,test}.{txt,domains}.
# Per domain, every SPLIT_PERIOD-th document (default 20; in shuffled order)
# goes to valid and another to test; then each split is shuffled so the domains
# interleave.
make_splits() {
  local out=$1 d s n=10 p=${SPLIT_PERIOD:-20}
  shift
  for d in "$@"; do
    bawk -v d=$d -v p=$p 'BEGIN { RS = "" }
      { k = (NR - 1) % p; s = (k == 7 % p) ? "valid" : (k == 13 % p) ? "test" : "train"
        gsub(/\n/, "\001"); print s "\t" d "\t" $0 }' "$TMP/$d.docs"
  done >"$TMP/all.tsv"
  mkdir -p "$out"
  for s in train valid test; do
    n=$((n + 1))
    : >"$TMP/$s.txt"; : >"$TMP/$s.domains"
    grep "^$s$TAB" "$TMP/all.tsv" | cut -f2- | shuffle $n \
      | bawk -F '\t' -v txt="$TMP/$s.txt" -v dom="$TMP/$s.domains" '
          { body = $0; sub(/^[^\t]*\t/, "", body); gsub(/\001/, "\n", body)
            if (NR > 1) printf "\n" > txt
            print body > txt; print $1 > dom }'
    iconv -f UTF-8 -t UTF-8 "$TMP/$s.txt" >/dev/null || die "$s.txt: not valid UTF-8"
  done
}

stats() { # domain split -> "docs bytes" (bytes: text and newlines, no separators)
  grep "^$2$TAB$1$TAB" "$TMP/all.tsv" | cut -f3- | bawk '{ n++; b += length($0) + 1 } END { printf "%d %d", n, b }'
}
pkgline() { for p in "$@"; do printf -- '- %s %s\n' "$p" "$(pkg_version "$p")"; done; }

# size_table DOMAIN...: the markdown table of documents and bytes per split.
size_table() {
  local d s
  echo '| domain | train docs | train bytes | valid docs | valid bytes | test docs | test bytes |'
  echo '| --- | ---: | ---: | ---: | ---: | ---: | ---: |'
  for d in "$@"; do
    printf '| %s' "$d"
    for s in train valid test; do set -- $(stats $d $s); printf ' | %s | %s' "$1" "$2"; done
    printf ' |\n'
  done
}
