#!/bin/sh
# Regenerates corpus/envelope/signed-* : the payloads in envelope-payloads/
# signed with the test keys in keys/ (test-only keys, not secret). The
# SHA-256 of every payload must be listed in fuzz_envelope.c, which
# refuses any other accepted payload; the replay test fails if they drift.
#
#   sh tests/fuzz/make_envelope_seeds.sh build-release/picket
set -eu
picket=${1:?usage: make_envelope_seeds.sh PATH/TO/picket}
here=$(cd "$(dirname "$0")" && pwd)
out=$here/corpus/envelope
mkdir -p "$out"
"$picket" bundle sign --key "$here/keys/ed25519-fuzz-1.key" --keyid fuzz-1 \
    --out "$out/signed-ed25519-design" "$here/envelope-payloads/design-example.json"
"$picket" bundle sign --key "$here/keys/p256-fuzz-p.key" --keyid fuzz-p \
    --out "$out/signed-p256-minimal" "$here/envelope-payloads/minimal.json"
# Signed by the id-less key under a keyid the keyring does not name.
"$picket" bundle sign --key "$here/keys/ed25519-anon.key" --keyid anon-signer \
    --out "$out/signed-anon-audit" "$here/envelope-payloads/audit.json"
echo "signed; payload digests (must match fuzz_envelope.c):"
(cd "$here/envelope-payloads" && sha256sum ./*.json)
