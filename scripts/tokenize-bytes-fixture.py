#!/usr/bin/env python3
"""Write tests/fixtures/tokenize-bytes-KEY.jsonl: byte strings that are not
(all) valid UTF-8, tokenized by llama.cpp's llama-tokenize (-f FILE --ids),
as {"hex": ..., "ids": [...]}.

usage: scripts/tokenize-bytes-fixture.py LLAMA_BIN_DIR MODEL.gguf KEY
"""
import json, random, subprocess, sys, tempfile, os

CASES = [
    b"hi \xff there",
    b"a\xc3(b",
    b"\xe6\x97 x\xf0\x9f\x98",
    b"caf\xc3\xa9\xff\xfe",
    b"\x80\x81\x82 lone continuation bytes",
    b"overlong \xc0\x80 and \xc1\x81 and \xe0\x80\x80",
    b"surrogate-free \xf4\x8f\xbf\xbf max and \xf8\x88\x80\x80\x80 five",
    b"truncated at the end \xe2\x82",
    b"<|im_end|>\xff<|endoftext|>\xfe",
    b"  \xff  \xfe\n\xfd\t",
    b"123\xff456",
    b"\xef\xbb\xbfBOM then \xef\xbf\xbd real replacement",
]


def main():
    bindir, model, key = sys.argv[1:4]
    rng = random.Random(14)
    cases = list(CASES)
    words = [b"the ", b"caf\xc3\xa9 ", b"\xe6\x97\xa5\xe6\x9c\xac ", b"42", b" ", b"\n", b"\xf0\x9f\x98\x80", b"def f(x):"]
    for _ in range(24):
        parts = []
        for _ in range(rng.randint(1, 8)):
            r = rng.random()
            if r < 0.4:
                parts.append(rng.choice(words))
            elif r < 0.7:
                parts.append(bytes([rng.randint(0x80, 0xFF)]))
            else:
                w = rng.choice(words)
                parts.append(w[: rng.randint(0, len(w))])
        cases.append(b"".join(parts))
    out = []
    with tempfile.TemporaryDirectory() as d:
        f = os.path.join(d, "in.txt")
        for c in cases:
            if not c:
                continue
            open(f, "wb").write(c)
            r = subprocess.run([os.path.join(bindir, "llama-tokenize"), "-m", model, "-f", f, "--ids", "--log-disable"],
                               capture_output=True, text=True, check=True)
            ids = json.loads(r.stdout.strip().splitlines()[-1])
            out.append(json.dumps({"hex": c.hex(), "ids": ids}))
    path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", f"tokenize-bytes-{key}.jsonl")
    open(path, "w").write("\n".join(out) + "\n")
    print(f"{len(out)} cases -> {path}")


if __name__ == "__main__":
    main()
