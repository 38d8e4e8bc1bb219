#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets from the golden vectors in schemas/golden/.

decode_json / decode_postcard: one file per golden vector, the selector byte (the line of
messages.txt that names the message; `event.attempt.full` is an `event.attempt`) followed by
the vector's bytes. parse_subject: the subjects of the golden events and requests, and the
Content-Type values. fold takes structured input and starts from nothing. Every target also
gets the inputs that once failed it, from fuzz/regressions/<target>/.

Idempotent: files are named by content, so running it again adds nothing; libFuzzer adds its
own finds to the same folders. Usage: seed_corpus.py [CORPUS_DIR] (default fuzz/corpus).
"""

import base64
import hashlib
import json
import pathlib
import sys

FUZZ = pathlib.Path(__file__).resolve().parent
GOLDEN = FUZZ.parent / "schemas" / "golden"


def message_index(name, messages):
    """The selector of a golden vector: its longest dotted prefix listed in messages.txt."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in messages:
            return messages.index(prefix)
    raise SystemExit(f"golden vector {name} has no line in fuzz/messages.txt: add one")


def write(folder, data):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)


def main():
    out = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else FUZZ / "corpus"
    messages = [line.strip() for line in (FUZZ / "messages.txt").read_text().splitlines() if line.strip()]
    if len(messages) > 256:
        raise SystemExit("messages.txt has more lines than one selector byte can name")
    subjects = {"lockout.events.acme.t.policy", "lockout.svc.acme.status", "lockout.dead._.bad_ip"}
    count = 0
    for path in sorted(GOLDEN.glob("*.json")):
        name = path.name[: -len(".json")]
        selector = bytes([message_index(name, messages)])
        write(out / "decode_json", selector + path.read_bytes())
        hex_path = GOLDEN / f"{name}.postcard.hex"
        write(out / "decode_postcard", selector + bytes.fromhex(hex_path.read_text().strip()))
        count += 1
        body = json.loads(path.read_text())
        if name.startswith("event.") and isinstance(body, dict):
            kind = name.split(".")[1]
            tenant = body.get("tenant", "acme")
            if "user" in body:
                token = base64.urlsafe_b64encode(body["user"].encode()).decode().rstrip("=")
                subjects.add(f"lockout.events.{tenant}.u.{token}.{kind}")
            else:
                subjects.add(f"lockout.events.{tenant}.t.{kind}")
        if name.startswith("request."):
            subjects.add(f"lockout.svc.acme.{name.split('.', 1)[1]}")
    content_types = ["application/json", "Application/JSON; charset=utf-8", "application/postcard", "application/postcard; v=2"]
    for value in sorted(subjects) + content_types:
        write(out / "parse_subject", value.encode())
    (out / "fold").mkdir(parents=True, exist_ok=True)
    # Inputs that once failed a target (fuzz/regressions/<target>/) run first in every fuzz run.
    for path in sorted((FUZZ / "regressions").glob("*/*")):
        write(out / path.parent.name, path.read_bytes())
    print(f"seed corpora in {out}: {count} golden vectors per decoder, {len(subjects) + len(content_types)} subjects")


if __name__ == "__main__":
    main()
