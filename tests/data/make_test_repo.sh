#!/usr/bin/env bash
# Builds the git repository the mount tests compare against `git archive` at $1/loose (loose
# objects), and a copy with every object packed at $1/packed. Idempotent: a finished build
# (marked by $1/done) is kept.
set -euo pipefail
base=$1
[[ -e $base/done ]] && exit 0
rm -rf "$base"
mkdir -p "$base"
chmod 755 "$base"  # the sandboxed worker runs as nobody
repo=$base/loose packed=$base/packed
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1
export GIT_AUTHOR_DATE="2024-05-06T07:08:09Z" GIT_COMMITTER_DATE="2024-05-06T07:08:09Z"
# gc.auto=0: the 10,000 files would otherwise trigger a background gc that packs the "loose"
# repository behind our back.
git=(git -c user.name=heddle -c user.email=heddle@example.invalid -c core.autocrlf=false
     -c gc.auto=0)

mkdir -p "$repo"
cd "$repo"
"${git[@]}" init -q -b main .

deep=$(printf 'level%02d/' $(seq 1 30))
mkdir -p "$deep"
echo "thirty levels down" > "${deep}leaf.txt"
mkdir many
for i in $(seq 1 10000); do echo "file $i" > "many/f$i"; done
: > empty.txt
printf '#!/bin/sh\necho hello\n' > run.sh
chmod 755 run.sh
echo "a sibling that stays readable" > sibling.txt
echo "this object gets corrupted" > corrupt_me.txt
ln -s does/not/exist dangling
ln -s /etc/passwd absolute
ln -s ../../outside escaping
ln -s run.sh relative
printf 'caf\xc3\xa9\n' > "café.txt"
printf 'latin-1\n' > $'\xff\xfe-bytes.bin'
printf 'two lines\n' > $'new\nline.txt'
printf 'long\n' > "$(printf 'n%.0s' $(seq 1 251)).txt"
head -c $((64 << 20)) /dev/urandom > big64.bin
"${git[@]}" add -A
# A submodule entry: a gitlink to a commit this repository does not have.
"${git[@]}" update-index --add --cacheinfo 160000,1234567890123456789012345678901234567890,vendor/sub
"${git[@]}" commit -q -m "first"
"${git[@]}" tag -a v1 -m "version 1"
"${git[@]}" checkout -q -b dev
echo "only on dev" > dev-only.txt
"${git[@]}" add dev-only.txt
"${git[@]}" commit -q -m "dev"
"${git[@]}" checkout -q main
"${git[@]}" update-ref refs/heddle/threads/feature dev
# A heddle thread that shadows a tag name resolves as the thread, not the tag.
"${git[@]}" update-ref refs/heddle/threads/v1 dev

rm -rf "$packed"
cp -a "$repo" "$packed"
"${git[@]}" -C "$packed" gc -q --prune=now
touch "$base/done"
