#!/usr/bin/env bash
# Stop the daemons that scripts/slurm-up.sh started, newest first, by the PIDs in their pid files
# (never by process name: other Slurm or MariaDB processes on the machine are left alone).
# Packages, configs and the accounting database stay, so the next slurm-up.sh only restarts daemons.
set -u
stop() {  # stop PIDFILE COMM
  [ -s "$1" ] || return 0
  local pid
  pid=$(cat "$1")
  [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$2" ] || return 0   # not running, or a stale pid file
  echo "[slurm-down] stopping $2 (pid $pid)"
  kill "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  echo "[slurm-down] $2 (pid $pid) still alive after 10 s" >&2
  return 1
}
rc=0
stop /run/slurmd.pid slurmd || rc=1
stop /run/slurmctld.pid slurmctld || rc=1
stop /run/slurmdbd.pid slurmdbd || rc=1
# SIGTERM makes mariadbd shut down cleanly and its mysqld_safe parent exits by itself.
# (/etc/init.d/mariadb stop may fall back to killing every mariadbd by name.)
stop /run/mysqld/mysqld.pid mariadbd || rc=1
stop /run/munge/munged.pid munged || rc=1
exit $rc
