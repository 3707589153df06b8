"""Datasets of scripts/bench-spec.sh, ShareGPT-format JSON (the answer turn is unused:
the output length is fixed).

- grounded.json: input-grounded tasks — rewrite a given piece of Candela's own Rust code
  or documentation (the kind of request prompt lookup exists for: the answer reuses the
  input's text).
- free.json: open-ended writing with nothing to copy from.

Usage: bench-spec-data.py REPO_ROOT OUT_DIR
"""
import glob, json, os, sys

root, out = sys.argv[1:3]
os.makedirs(out, exist_ok=True)


def chunks(paths, lines_per, n):
    got = []
    for path in paths:
        text = open(path).read().splitlines()
        # Skip the module doc and imports: start at the first item.
        start = next((i for i, l in enumerate(text) if l.startswith(("pub ", "fn ", "impl "))), 0)
        for s in range(start, len(text) - lines_per, lines_per * 3):
            body = "\n".join(text[s : s + lines_per]).strip()
            if len(body) > 400:
                got.append((os.path.relpath(path, root), body))
            if len(got) >= n:
                return got
    return got


code = chunks(sorted(glob.glob(f"{root}/engine/core/src/*.rs")), 24, 12)
prose = []
for path in [f"{root}/README.md", f"{root}/docs/bench/structured/README.md"]:
    for para in open(path).read().split("\n\n"):
        para = para.strip()
        if 300 < len(para) < 1200 and not para.startswith(("|", "```", "#")):
            prose.append(para)
prose = prose[:8]

grounded = []
for path, body in code:
    grounded.append(
        f"Here is a piece of Rust code from {path}:\n\n```rust\n{body}\n```\n\n"
        "Rewrite it with the same behaviour and formatting, keeping every line:\n\n```rust\n"
    )
for para in prose:
    grounded.append(
        f"Text:\n\n{para}\n\nRewrite the text above in the same words, one sentence per line:\n\n"
    )

topics = [
    "a lighthouse keeper who finds a map", "the first day of spring in a small town",
    "a robot learning to paint", "a storm at sea", "a detective who cannot see colours",
    "a garden on the moon", "an old clock that runs backwards", "a letter never sent",
    "a market at dawn", "the last train of the night", "a fox and a crow", "a city under snow",
    "a violin found in an attic", "two friends climbing a mountain", "a library that never closes",
    "a bakery that opens at midnight", "a river that changes course", "a lost kite",
    "a beekeeper's summer", "an island with one tree",
]
free = [f"Write a short story about {t}.\n\n" for t in topics]

for name, prompts in [("grounded", grounded), ("free", free)]:
    rows = [
        {"conversations": [{"from": "human", "value": p}, {"from": "gpt", "value": "-"}]}
        for p in prompts
    ]
    json.dump(rows, open(f"{out}/{name}.json", "w"), indent=1)
    print(f"{name}: {len(rows)} prompts", file=sys.stderr)
