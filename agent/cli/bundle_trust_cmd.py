"""``edge-agent bundle sign|verify|inspect|publish|refresh-index``: the trust side of
bundles (the build side is ``bundle_build_cmd``)."""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path
from typing import Any

from agent.bundle.archive import is_archive_path, read_bundle
from agent.bundle.manifest import MANIFEST_FILE, SIGNATURE_FILE, card_lines
from agent.bundle.signing import load_private_key, load_public_key, parse_signature, sign_bundle_dir
from agent.bundle.trust import TrustStore
from agent.bundle.verify import parse_manifest, sha256_hex, verify_bundle
from agent.errors import BundleError, SignatureError
from agent.limits import Limits
from agent.registry.publish import DEFAULT_EXPIRY, publish, refresh_index


def register(group: argparse._SubParsersAction[Any]) -> None:
    sign = group.add_parser("sign", help="sign a bundle directory's manifest (writes manifest.sig)")
    sign.add_argument("bundle", type=Path, help="bundle directory")
    sign.add_argument("--key", type=Path, required=True, help="publisher private key (PEM)")
    sign.set_defaults(func=_sign)

    verify = group.add_parser("verify", help="verify a bundle's signature and files")
    verify.add_argument("bundle", type=Path, help="bundle directory or .tar.gz")
    verify.add_argument(
        "--trust",
        type=Path,
        action="append",
        required=True,
        help="trusted public key file (repeat for several)",
    )
    verify.set_defaults(func=_verify)

    inspect = group.add_parser("inspect", help="show a bundle's manifest, signer and digests")
    inspect.add_argument("bundle", type=Path, help="bundle directory or .tar.gz")
    inspect.add_argument("--card", action="store_true", help="also show the model card")
    inspect.set_defaults(func=_inspect)

    pub = group.add_parser("publish", help="add a signed bundle to a file:// or oci:// registry")
    pub.add_argument("bundle", type=Path, help="signed bundle directory or .tar.gz")
    pub.add_argument(
        "url", help="file:///folder (serve it over https after) or oci://host[:port]/repository"
    )
    pub.add_argument("--key", type=Path, required=True, help="index signing key (PEM)")
    _expiry_option(pub)
    pub.add_argument(
        "--trust",
        type=Path,
        action="append",
        help="public key(s) the bundle must verify against (default: the index key)",
    )
    pub.set_defaults(func=_publish)

    refresh = group.add_parser("refresh-index", help="re-sign a registry's index with a new expiry")
    refresh.add_argument("url", help="file:///folder or oci://host[:port]/repository")
    refresh.add_argument("--key", type=Path, required=True, help="index signing key (PEM)")
    _expiry_option(refresh)
    refresh.set_defaults(func=_refresh)


def _expiry_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ca-file", type=Path, help="CA bundle (PEM) for an oci:// registry behind a private CA"
    )
    parser.add_argument(
        "--expires-days",
        type=float,
        default=DEFAULT_EXPIRY.days,
        help=f"index validity in days (default {DEFAULT_EXPIRY.days}); agents refuse it after",
    )


def _sign(args: argparse.Namespace) -> int:
    if not args.bundle.is_dir():
        raise BundleError("sign a bundle directory; archive it afterwards")
    path = sign_bundle_dir(args.bundle, load_private_key(args.key))
    keyid = parse_signature(path.read_bytes()).keyid
    print(f"signed {args.bundle} with key {keyid}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    trust = TrustStore.of(*(load_public_key(p) for p in args.trust))
    limits = Limits()
    verified = verify_bundle(read_bundle(args.bundle, limits), trust, limits=limits)
    manifest = verified.manifest
    print(
        f"OK {manifest.name} {manifest.version}: signed by {verified.signer_keyid}, "
        f"{len(manifest.files)} file(s) match, manifest sha256 {verified.digest}"
    )
    return 0


def _inspect(args: argparse.Namespace) -> int:
    files = read_bundle(args.bundle, Limits())
    if MANIFEST_FILE not in files:
        raise BundleError(f"{args.bundle} has no {MANIFEST_FILE}")
    manifest = parse_manifest(files[MANIFEST_FILE])
    print(f"bundle:     {args.bundle}{' (archive)' if is_archive_path(args.bundle) else ''}")
    print(f"model:      {manifest.name} {manifest.version} (ABI {manifest.abi_version})")
    if manifest.description:
        print(f"about:      {manifest.description}")
    print(f"inputs:     {', '.join(manifest.feature_names())}")
    print(f"outputs:    {', '.join(f'{o.name} ({o.kind.value})' for o in manifest.outputs)}")
    print(f"created:    {manifest.provenance.created.isoformat()} by {manifest.provenance.creator}")
    print(f"manifest:   sha256 {sha256_hex(files[MANIFEST_FILE])}")
    if SIGNATURE_FILE in files:
        try:
            signer = f"key {parse_signature(files[SIGNATURE_FILE]).keyid} (claimed; not verified)"
        except SignatureError as exc:
            signer = f"unreadable signature: {exc}"
    else:
        signer = "none: the bundle is unsigned"
    print(f"signature:  {signer}")
    for name, entry in sorted(manifest.files.items()):
        actual = files.get(name)
        state = "ok" if actual is not None and sha256_hex(actual) == entry.sha256 else "MISMATCH"
        print(f"file:       {name} {entry.size} bytes sha256 {entry.sha256} [{state}]")
    if args.card:
        for line in card_lines(manifest.card):
            print(line)
    print("Not a verification: run `edge-agent bundle verify` with the trusted keys.")
    return 0


def _publish(args: argparse.Namespace) -> int:
    key = load_private_key(args.key)
    trust = TrustStore.of(*(load_public_key(p) for p in args.trust)) if args.trust else None
    entry = publish(
        args.bundle,
        args.url,
        key,
        trust=trust,
        expires_in=timedelta(days=args.expires_days),
        ca_file=args.ca_file,
    )
    print(f"published {entry.version} at {entry.location} ({entry.size} bytes)")
    return 0


def _refresh(args: argparse.Namespace) -> int:
    index = refresh_index(
        args.url,
        load_private_key(args.key),
        expires_in=timedelta(days=args.expires_days),
        ca_file=args.ca_file,
    )
    print(f"index version {index.version}, expires {index.expires.isoformat()}")
    return 0
