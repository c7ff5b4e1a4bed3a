#!/usr/bin/env bash
# make demo: a replicated volume on loopback. Two twinblock processes (node a
# = primary, node b = secondary) with mutual TLS between them; node a exports
# vol0 over NBD. Everything lives in DEMO_DIR; Ctrl-C stops both nodes.
set -euo pipefail
bin=$(realpath "$1"); dir=$2
mkdir -p "$dir"
cd "$dir"
top=$(pwd)
if [ ! -f a/twinblock.yaml ]; then
  rm -rf a b certs
  mkdir -p a b
  "$bin" certs pair --out certs --nodes a,b >/dev/null
  "$bin" create vol0 --config a/twinblock.yaml --path a/vol0.img --size 1G \
    --description "twinblock demo volume" --node a \
    --replication-listen 127.0.0.1:7789 --peer b --peer-address 127.0.0.1:7790 --tls-dir certs >/dev/null
  uuid=$(sed -n 's/.*"uuid": "\(.*\)".*/\1/p' a/vol0.img.journal/state.json)
  "$bin" create vol0 --config b/twinblock.yaml --path b/vol0.img --size 1G \
    --description "twinblock demo volume" --node b --uuid "$uuid" \
    --replication-listen 127.0.0.1:7790 --peer a --peer-address 127.0.0.1:7789 --tls-dir certs >/dev/null
  # Node b's NBD port (used once b is promoted).
  sed -i 's/^listen: .*/listen: 127.0.0.1:10810/' b/twinblock.yaml
fi

pids=()
stop() {
  trap - INT TERM EXIT
  echo; echo "stopping both nodes (requests in flight are answered, volumes checkpointed)..."
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  exit 0
}
trap stop INT TERM EXIT
"$bin" serve --config b/twinblock.yaml 2> b/serve.log & pids+=($!)
"$bin" serve --config a/twinblock.yaml --socket "$top/a/nbd.sock" 2> a/serve.log & pids+=($!)
for _ in $(seq 100); do
  "$bin" status -c a/twinblock.yaml 2>/dev/null | grep -q Connected && break
  sleep 0.1
done
"$bin" status -c a/twinblock.yaml || { echo "node a did not start; see $top/a/serve.log"; exit 1; }

cat <<MSG

twinblock demo: vol0 (1 GiB) replicated synchronously over mutual TLS
  node a (primary)   nbd://127.0.0.1:10809/vol0   nbd+unix:///vol0?socket=$top/a/nbd.sock
  node b (secondary) peer link 127.0.0.1:7790, NBD port 127.0.0.1:10810 once promoted
  files in $top (logs: a/serve.log, b/serve.log)

In another terminal, try:
  cd $top
  nbdinfo nbd://127.0.0.1:10809/vol0
  qemu-io -f raw -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M' nbd://127.0.0.1:10809/vol0
  fio --name=w --ioengine=nbd --uri=nbd://127.0.0.1:10809/vol0 --rw=randwrite --bs=4k \\
      --iodepth=32 --size=64M --runtime=10 --time_based
  $bin status -c a/twinblock.yaml          # role, disk, connection, lag (add --json)
  $bin status -c b/twinblock.yaml
  $bin verify vol0 -c a/twinblock.yaml     # compare both copies block by block, online

Switch roles (what an HA manager does):
  $bin demote  vol0 -c a/twinblock.yaml    # a drains writes, stops exporting
  $bin promote vol0 -c b/twinblock.yaml    # b exports at nbd://127.0.0.1:10810/vol0
  qemu-io -f raw -c 'read -P 0xab 0 1M' nbd://127.0.0.1:10810/vol0

Press Ctrl-C to stop both nodes.
MSG
wait -n "${pids[@]}" || true
echo "a node exited; see $top/a/serve.log and $top/b/serve.log"
