#!/usr/bin/env bash
# Prints the go flags that build against sarama patched for IBM/sarama#2913, preparing the
# patched copy first: `go test $(bash scripts/sarama-patched.sh) ./...`.
#
# sarama's transaction manager reads a failed transaction's last error without the lock it
# is written under; under a broker outage the race detector can report it from inside
# sarama (outbox/saramaoutbox's doc has the details). Upstream has no fix, and no use of
# the producer API avoids it without giving up pipelining. So that the race-detector runs
# of the tests do not fail on a race that is not ours, they build against a copy of the
# module's sarama with third_party/sarama-2913.diff applied (its status and last error
# read together under the lock): a go.mod beside the real one (-modfile) replaces sarama
# with that copy. The copy and that go.mod live in .build/ (ignored by `./...` and git).
# A build without these flags uses sarama as released.
set -euo pipefail
cd "$(dirname "$0")/.."

module=github.com/IBM/sarama
version=$(go list -m -f '{{.Version}}' "$module")
patch=third_party/sarama-2913.diff
if [ "$version" != v1.61.1 ]; then
  echo "sarama-patched.sh: $patch is for sarama v1.61.1, go.mod has $version: check whether the new version fixes IBM/sarama#2913 and update or drop the patch" >&2
  exit 1
fi
src=$(go mod download -json "$module@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
[ -n "$src" ] || { echo "sarama-patched.sh: go mod download found no directory for $module@$version" >&2; exit 1; }

out=$PWD/.build
dir=$out/sarama-$version-2913
stamp=$dir/.patched-$(sha256sum "$patch" | cut -c1-16)
if [ ! -e "$stamp" ]; then
  rm -rf "$dir" && mkdir -p "$out"
  cp -r "$src" "$dir" && chmod -R u+w "$dir"
  git apply --directory="$(realpath --relative-to="$PWD" "$dir")" --unsafe-paths "$patch" ||
    { echo "sarama-patched.sh: $patch does not apply to $src" >&2; exit 1; }
  touch "$stamp"
fi
cp go.mod "$out/go.mod"
cp go.sum "$out/go.sum"
echo "replace $module => $dir" >> "$out/go.mod"
echo "-modfile=$out/go.mod"
