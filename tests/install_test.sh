#!/usr/bin/env bash
# usage: install_test.sh BUILD_DIR BACKEND...
# Installs squall from BUILD_DIR into a scratch prefix, then compiles and runs the README's
# example against it through pkg-config: proves the headers, library and squall.pc install
# and work together, and that the README's code is true.
set -euo pipefail
build=$(cd "$1" && pwd)
shift  # the rest: backends to run the example on
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

meson install -C "$build" --destdir "$tmp/dest" --quiet >/dev/null
pc=$(dirname "$(find "$tmp/dest" -name squall.pc | head -n1)")
[ -n "$pc" ] || { echo "install_test: squall.pc was not installed"; exit 1; }
# Point the .pc's prefix at where it really is: under the destdir.
prefix=$(PKG_CONFIG_PATH="$pc" pkg-config --variable=prefix squall)
pkgconf() { PKG_CONFIG_PATH="$pc" pkg-config --define-variable=prefix="$tmp/dest$prefix" "$@" squall; }
flags=$(pkgconf --cflags --libs)

# The first ```cpp block of README.md.
awk '/^```cpp/{f=1;next} /^```/{if(f){exit}} f' "$root/README.md" > "$tmp/readme.cpp"
[ -s "$tmp/readme.cpp" ] || { echo "install_test: no cpp example in README.md"; exit 1; }
# shellcheck disable=SC2086
c++ -std=c++20 -Wall -Wextra -Werror "$tmp/readme.cpp" -o "$tmp/readme" $flags
libdir=$(pkgconf --variable=libdir)
for b in "$@"; do
  out=$(SQUALL_BACKEND=$b LD_LIBRARY_PATH="$libdir" "$tmp/readme")
  echo "$out"
  [ "$out" = "tick on $b" ] || { echo "install_test: unexpected output on $b"; exit 1; }
done
echo "install_test: OK"
