"""``python -m data_prep.demo_pair SHARDS``: a held-out pair for the demo dub, printed as
``VIDEO AUDIO`` (shell-quoted): a test-split clip of one speaker and a clip of another held-out speaker
(test, else val), both from the corpus that ``data_prep.build`` turned into SHARDS (its index.json says
where the corpus is and which shards hold each split). Used by ``make demo``.
"""
from __future__ import annotations

import json
import shlex
import sys
import tarfile
from pathlib import Path

from data_prep.sources import list_clips


def held_out_clips(shards: Path) -> dict[str, list[tuple[str, str]]]:
    """split -> sorted (speaker, clip key) of the val and test shards."""
    index = json.loads((shards / "index.json").read_text())
    out = {}
    for split in ("test", "val"):
        found = set()
        for name in index["shards"].get(split, []):
            with tarfile.open(shards / name) as tar:
                for member in tar.getmembers():
                    if member.name.endswith(".json"):
                        meta = json.loads(tar.extractfile(member).read())
                        found.add((meta["speaker"], meta["clip"]))
        out[split] = sorted(found)
    return out


def demo_pair(shards: str | Path) -> tuple[Path, Path]:
    shards = Path(shards)
    if not (shards / "index.json").is_file():
        raise FileNotFoundError(f"{shards}/index.json not found: build the shards first (make demo does)")
    args = json.loads((shards / "index.json").read_text())["args"]
    if not Path(args["root"]).is_dir():
        raise FileNotFoundError(f"{shards}/index.json: its corpus {args['root']} is not a folder here (a relative "
                                "path is relative to where data_prep.build ran: run this from there)")
    paths = {c.key: c.path for c in list_clips(args["source"], args["root"])}
    held = held_out_clips(shards)
    if not held["test"]:
        raise ValueError(f"{shards}: the test split has no clips")
    speaker, video = held["test"][0]
    others = [clip for s, clip in held["test"] + held["val"] if s != speaker]
    if not others:
        raise ValueError(f"{shards}: need a second held-out speaker (test or val) for the audio")
    return paths[video], paths[others[0]]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__.split("\n\n")[0], file=sys.stderr)
        return 2
    video, audio = demo_pair(argv[0])
    print(shlex.quote(str(video)), shlex.quote(str(audio)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
