#!/usr/bin/env bash
# ceph-cluster.sh: a throw-away single-node Ceph cluster on 127.0.0.1 for
# twinblock's RBD tests and benchmarks.
#
#   scripts/ceph-cluster.sh start DIR [PORT]   # mon on PORT (v1) and PORT+1 (v2), default 16789
#   scripts/ceph-cluster.sh stop DIR           # stops exactly the daemons start started
#   scripts/ceph-cluster.sh status DIR
#   scripts/ceph-cluster.sh pause DIR          # SIGSTOP the OSD: requests hang (an outage)
#   scripts/ceph-cluster.sh resume DIR         # SIGCONT it
#
# start makes DIR (it must not hold a cluster already), writes DIR/ceph.conf
# and DIR/keyring (client.admin, usable by rbd, fio --ioengine=rbd and
# twinblock), starts one monitor and one OSD (objectstore memstore: data in
# RAM, capped by CEPH_MEMSTORE_BYTES, default 4G), creates the pool "rbd"
# (size 1) and runs `rbd pool init`, which returns once the pool takes I/O.
# No mgr: nothing here needs one. Two clusters side by side need distinct
# PORTs (and DIRs); OSDs pick free ports themselves.
#
# Use the cluster with CEPH_CONF=DIR/ceph.conf (the conf names the keyring):
#   CEPH_CONF=DIR/ceph.conf rbd create --size 1G rbd/img
#
# stop sends SIGTERM to the PIDs recorded in DIR/run/*.pid (only after
# checking that the process is still the daemon started with DIR's config,
# so a recycled PID is never signalled), waits CEPH_STOP_GRACE seconds
# (default 10), then SIGKILLs what is left. An exited daemon whose parent
# does not reap it stays a zombie: it counts as stopped.
set -euo pipefail

usage() {
	echo "usage: $0 start DIR [PORT] | stop DIR | status DIR | pause DIR | resume DIR" >&2
	exit 2
}

die() {
	echo "ceph-cluster: $*" >&2
	exit 1
}

[ $# -ge 2 ] || usage
cmd=$1
dir=$2
port=${3:-16789}
grace=${CEPH_STOP_GRACE:-10}
memstore=${CEPH_MEMSTORE_BYTES:-4294967296}
# Bounds of every step that talks to the cluster.
step_timeout=${CEPH_STEP_TIMEOUT:-60}

need_tools() {
	local missing=""
	for t in ceph-mon ceph-osd ceph-authtool monmaptool ceph rbd; do
		command -v "$t" >/dev/null 2>&1 || missing="$missing $t"
	done
	[ -z "$missing" ] || die "missing:$missing (make test-deps-ceph installs ceph-mon ceph-osd ceph-common)"
}

# alive PID: the process exists and is not a zombie.
alive() {
	local st
	st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# ours PID: the process runs with this cluster's config file.
ours() {
	tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$conf"
}

ceph_() { timeout "$step_timeout" ceph -c "$conf" --connect-timeout 30 "$@"; }

# start_daemon NAME CMD...: runs CMD in its own session (so a test's
# process-group kill does not take the cluster down half-way) and records
# its PID in run/NAME.pid.
start_daemon() {
	local name=$1
	shift
	setsid "$@" </dev/null >>"$dir/log/$name.out" 2>&1 &
	echo $! >"$dir/run/$name.pid"
}

do_start() {
	need_tools
	[ ! -e "$dir/ceph.conf" ] || die "$dir already holds a cluster (stop it and remove the directory first)"
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	conf=$dir/ceph.conf
	case $port in '' | *[!0-9]*) die "PORT: $port is not a number" ;; esac
	local v1=$port v2=$((port + 1)) p
	for p in $v1 $v2; do
		# Something answers there already (another cluster?): the mon
		# would retry its bind for ever and ceph would talk to the other.
		if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			die "127.0.0.1:$p is in use; pick another PORT (the mon needs PORT and PORT+1)"
		fi
	done
	mkdir -p "$dir/mon/a" "$dir/osd/0" "$dir/run" "$dir/log"
	local fsid osd_uuid
	fsid=$(cat /proc/sys/kernel/random/uuid)
	osd_uuid=$(cat /proc/sys/kernel/random/uuid)
	cat >"$conf" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$v2,v1:127.0.0.1:$v1]
public network = 127.0.0.1/32
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
keyring = $dir/keyring
run dir = $dir/run
crash dir = $dir/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
paxos propose interval = 0.05
client mount timeout = 30
osd objectstore = memstore
memstore device bytes = $memstore
osd data = $dir/osd/\$id
mon data = $dir/mon/\$id
rbd cache = false

# Daemons log and answer on admin sockets in DIR; clients (rbd, fio,
# twinblock) keep Ceph's defaults (no log file, per-process sockets).
[mon]
admin socket = $dir/run/\$cluster-\$name.asok
log file = $dir/log/\$name.log
[osd]
admin socket = $dir/run/\$cluster-\$name.asok
log file = $dir/log/\$name.log

[mon.a]
public addrv = [v2:127.0.0.1:$v2,v1:127.0.0.1:$v1]
EOF
	local kr=$dir/keyring
	ceph-authtool --create-keyring "$kr" --gen-key -n mon. --cap mon 'allow *' >/dev/null
	ceph-authtool "$kr" --gen-key -n client.admin \
		--cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
	ceph-authtool "$kr" --gen-key -n osd.0 \
		--cap mon 'allow profile osd' --cap osd 'allow *' --cap mgr 'allow profile osd' >/dev/null
	chmod 600 "$kr"
	monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$v2,v1:127.0.0.1:$v1]" "$dir/monmap" >/dev/null
	ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$kr" >>"$dir/log/mkfs.out" 2>&1 ||
		die "ceph-mon --mkfs failed: $(tail -5 "$dir/log/mkfs.out")"
	start_daemon mon.a ceph-mon -f -c "$conf" -i a

	# The mon answers once it has formed its one-member quorum.
	ceph_ osd new "$osd_uuid" 0 >/dev/null 2>>"$dir/log/start.out" ||
		die "the monitor on 127.0.0.1:$v1 did not answer (see $dir/log/mon.a.log)"
	ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$osd_uuid" >>"$dir/log/mkfs.out" 2>&1 ||
		die "ceph-osd --mkfs failed: $(tail -5 "$dir/log/mkfs.out")"
	start_daemon osd.0 ceph-osd -f -c "$conf" -i 0

	ceph_ osd pool create rbd 8 8 >/dev/null 2>>"$dir/log/start.out" || die "creating pool rbd failed"
	ceph_ osd pool set rbd size 1 --yes-i-really-mean-it >/dev/null 2>>"$dir/log/start.out" || true
	# rbd pool init returns once the pool's PGs are active: the readiness
	# check (ceph health says OK before the OSD serves anything).
	timeout "$step_timeout" rbd -c "$conf" pool init rbd 2>>"$dir/log/start.out" ||
		die "rbd pool init did not finish within ${step_timeout}s (see $dir/log/osd.0.log)"
	echo "ceph cluster up: conf $conf, mon 127.0.0.1:$v1 (v2 $v2), pool rbd"
}

stop_pid() {
	local name=$1 pid=$2
	if ! alive "$pid"; then
		return 0
	fi
	if ! ours "$pid"; then
		echo "ceph-cluster: $name: PID $pid is not this cluster's daemon any more; not signalled" >&2
		return 0
	fi
	kill -TERM "$pid" 2>/dev/null || true
	kill -CONT "$pid" 2>/dev/null || true # a paused daemon must run to exit
	local i
	for ((i = 0; i < grace * 10; i++)); do
		alive "$pid" || return 0
		sleep 0.1
	done
	echo "ceph-cluster: $name (PID $pid) still running ${grace}s after SIGTERM: SIGKILL" >&2
	kill -KILL "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		alive "$pid" || return 0
		sleep 0.1
	done
	die "$name (PID $pid) survived SIGKILL"
}

do_stop() {
	[ -d "$dir" ] || return 0
	dir=$(cd "$dir" && pwd)
	conf=$dir/ceph.conf
	# OSD first: a mon that goes first leaves the OSD retrying.
	local f pid name
	for name in osd.0 mon.a; do
		f=$dir/run/$name.pid
		[ -f "$f" ] || continue
		pid=$(cat "$f")
		case $pid in '' | *[!0-9]*) rm -f "$f"; continue ;; esac
		stop_pid "$name" "$pid"
		rm -f "$f"
	done
}

do_status() {
	dir=$(cd "$dir" && pwd)
	conf=$dir/ceph.conf
	local name f pid rc=0
	for name in mon.a osd.0; do
		f=$dir/run/$name.pid
		if [ -f "$f" ] && pid=$(cat "$f") && alive "$pid" && ours "$pid"; then
			echo "$name: running (PID $pid)"
		else
			echo "$name: stopped"
			rc=1
		fi
	done
	return $rc
}

# signal_osd SIG: sends SIG to this cluster's running OSD.
signal_osd() {
	dir=$(cd "$dir" && pwd)
	conf=$dir/ceph.conf
	local f=$dir/run/osd.0.pid pid
	[ -f "$f" ] || die "no OSD started in $dir"
	pid=$(cat "$f")
	case $pid in '' | *[!0-9]*) die "bad pid file $f" ;; esac
	alive "$pid" && ours "$pid" || die "the OSD of $dir (PID $pid) is not running"
	kill "-$1" "$pid"
}

case $cmd in
pause) signal_osd STOP ;;
resume) signal_osd CONT ;;
start)
	# A failed start leaves nothing running.
	trap 'rc=$?; if [ $rc -ne 0 ]; then do_stop || true; fi; exit $rc' EXIT
	do_start
	trap - EXIT
	;;
stop) do_stop ;;
status) do_status ;;
*) usage ;;
esac
