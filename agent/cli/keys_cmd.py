"""``edge-agent keys generate --out DIR --name NAME``: a publisher's Ed25519 key pair."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agent.bundle.signing import generate_keypair, key_id, load_public_key


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser("keys", help="create publisher signing keys")
    group = parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    generate = group.add_parser(
        "generate", help="write NAME.key (private, 0600) and NAME.pub (public) into DIR"
    )
    generate.add_argument("--out", type=Path, required=True, help="folder for the key files")
    generate.add_argument("--name", required=True, help="file name stem, e.g. radiology-2026")
    generate.set_defaults(func=_generate)


def _generate(args: argparse.Namespace) -> int:
    private_path, public_path = generate_keypair(args.out, args.name)
    public_text = public_path.read_text(encoding="ascii").strip()
    keyid = key_id(load_public_key(public_path))
    print(f"private key: {private_path}  (keep it off the agents; only publishers sign)")
    print(f"public key:  {public_path}")
    print(f"key id:      {keyid}")
    print("\nTo trust it, add to the agent config:\n")
    print("trust:\n  keys:")
    print(f"    - id: {keyid}\n      public_key: {public_text}")
    return 0
