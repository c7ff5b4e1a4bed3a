#!/usr/bin/env bash
# make demo: create a demo volume (once) and serve it in the foreground.
set -euo pipefail
bin=$(realpath "$1"); dir=$2
mkdir -p "$dir"
cd "$dir"
if [ ! -f twinblock.yaml ]; then
  "$bin" create vol0 --path vol0.img --size 1G --description "twinblock demo volume" >/dev/null
fi
cat <<MSG

twinblock demo: volume vol0 (1 GiB, file $(pwd)/vol0.img)
exported at  nbd://127.0.0.1:10809/vol0
         and nbd+unix:///vol0?socket=$(pwd)/nbd.sock

In another terminal, try:
  nbdinfo nbd://127.0.0.1:10809/vol0
  qemu-io -f raw -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M' nbd://127.0.0.1:10809/vol0
  qemu-img convert -p -O raw nbd://127.0.0.1:10809/vol0 /tmp/vol0-copy.raw
  fio --name=w --ioengine=nbd --uri=nbd://127.0.0.1:10809/vol0 --rw=randwrite --bs=4k \\
      --iodepth=32 --size=64M --runtime=10 --time_based
(make test installs these clients: qemu-utils, libnbd-bin, fio.)

Press Ctrl-C to stop: requests in flight are answered and the volume flushed.

MSG
exec "$bin" serve --config twinblock.yaml --socket "$(pwd)/nbd.sock"
