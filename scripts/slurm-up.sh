#!/usr/bin/env bash
# Bring up a single-node Slurm cluster on this machine (Debian/Ubuntu, as root, no systemd needed):
# munge, MariaDB + slurmdbd (so `sacct` works), slurmctld and slurmd, started by hand.
#
# Idempotent: each step checks before it acts, so running it on a machine where the cluster is up is
# a no-op (about 1 s), and on a machine where only the packages remain it just starts the daemons.
# A changed slurm.conf is applied with `scontrol reconfigure`. Stop everything with scripts/slurm-down.sh.
#
# Why each piece exists is in docs/architecture.md §1; the tuning below (fast scheduling, short KillWait,
# rejecting impossible requests at submission, a per-CPU memory default) is what makes tests and
# small sweeps on a 2-core machine behave: see the comments next to each setting.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
log() { echo "[slurm-up $(date +%T)] $*"; }
die() { echo "slurm-up: error: $*" >&2; exit 1; }
# alive PIDFILE COMM: the pid file names a live process called COMM (a stale pid file does not count)
alive() { [ -s "$1" ] && [ "$(cat /proc/"$(cat "$1")"/comm 2>/dev/null)" = "$2" ]; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts daemons): sudo $0"

# ------------------------------------------------------------------ packages (skipped when installed)
PKGS="munge slurmctld slurmd slurm-client slurmdbd mariadb-server"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  command -v apt-get >/dev/null || die "packages missing:$missing, and there is no apt-get to install them"
  log "installing:$missing"
  apt-get update -qq
  # --no-install-recommends: otherwise slurm pulls ~40 unneeded plugin packages (HDF5, ROCm, InfluxDB...)
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# ------------------------------------------------------------------ munge (authentication)
[ -s /etc/munge/munge.key ] || mungekey --create          # Debian's postinst normally creates it
mkdir -p /run/munge /var/lib/munge /var/log/munge         # /run/munge would be made by systemd
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 0700 /etc/munge /var/log/munge
chmod 0755 /run/munge
chmod 0600 /etc/munge/munge.key
if ! alive /run/munge/munged.pid munged; then
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged                    # as root it refuses its own log file
fi
munge -n | unmunge >/dev/null || die "munge does not work; see /var/log/munge/munged.log"

# ------------------------------------------------------------------ MariaDB + slurmdbd (accounting)
# Without accounting `sacct` fails, submitit then reads every state as UNKNOWN, and a cancelled or
# timed-out job is never "done": sweeps hang. slurmdbd only supports MySQL/MariaDB storage.
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
if ! mysqladmin ping >/dev/null 2>&1; then
  log "starting mariadb"
  /etc/init.d/mariadb start >/dev/null
fi
# StorageUser=root without a password: MariaDB's unix_socket auth accepts the OS user root.
DBD_CONF="AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db"
if [ "$(cat /etc/slurm/slurmdbd.conf 2>/dev/null)" != "$DBD_CONF" ]; then
  printf '%s\n' "$DBD_CONF" > /etc/slurm/slurmdbd.conf
fi
chmod 0600 /etc/slurm/slurmdbd.conf                        # slurmdbd refuses a readable file
if ! alive /run/slurmdbd.pid slurmdbd; then
  log "starting slurmdbd"
  slurmdbd
fi
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/6819) 2>/dev/null && break  # slurmctld needs slurmdbd's port open
  sleep 0.2
done

# ------------------------------------------------------------------ slurm.conf
HOST=$(hostname -s)
# Multi-task jobs rendezvous at the node's name (SLURM_JOB_NODELIST); make sure it resolves.
getent hosts "$HOST" >/dev/null || echo "127.0.0.1 $HOST" >> /etc/hosts
# The node line comes from the hardware (CPUs, sockets, RealMemory), so the config fits any machine.
NODELINE=$(slurmd -C | head -n1)
SLURM_CONF="ClusterName=bitlaw
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
# Schedule every second: job arrays otherwise wait up to a minute for the next scheduling pass.
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
# Track cores and memory; without a per-CPU default a job with no --mem takes the whole node's memory.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
# Reject a request that can never fit at sbatch time instead of leaving it PENDING forever.
EnforcePartLimits=ALL
ReturnToService=2
# submitit's jobs ignore SIGTERM; a short KillWait keeps a cancel from stalling the node for 30 s.
KillWait=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
${NODELINE} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
conf_changed=0
if [ "$(cat /etc/slurm/slurm.conf 2>/dev/null)" != "$SLURM_CONF" ]; then
  printf '%s\n' "$SLURM_CONF" > /etc/slurm/slurm.conf
  conf_changed=1
fi

# ------------------------------------------------------------------ slurmctld + slurmd
started=0
if ! alive /run/slurmctld.pid slurmctld; then log "starting slurmctld"; slurmctld; started=1; fi
if ! alive /run/slurmd.pid slurmd; then log "starting slurmd"; slurmd; started=1; fi
if [ "$conf_changed" = 1 ] && [ "$started" = 0 ]; then
  log "slurm.conf changed: scontrol reconfigure"
  scontrol reconfigure
fi
state=""
for _ in $(seq 150); do
  state=$(sinfo -h -o %t 2>/dev/null | head -n1 || true)
  case "$state" in idle|mix|alloc) break ;; esac
  sleep 0.2
done
case "$state" in
  idle|mix|alloc) ;;
  *) tail -n 20 /var/log/slurm/*.log >&2; die "node not ready (state '${state}'); logs above" ;;
esac
sinfo -h -o "partition=%P nodes=%D cpus=%c mem=%mMB state=%t"
log "cluster ready"
