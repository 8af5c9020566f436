#!/usr/bin/env bash
# Start a throwaway OpenSSH server on 127.0.0.1 for SFTP tests and print client env vars.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: start-sshd.sh [-h] DIR PORT

Starts sshd (Debian package openssh-server) on 127.0.0.1:PORT with throwaway
host and user keys, its config, log and pid file in DIR, waits until an SFTP
session works, and prints shell 'export' lines on stdout, so that
    eval "$(start-sshd.sh DIR PORT)"
sets:
    SFTP_TEST_HOST        the host alias to use in locations (sftp:HOST:/path)
    SFTP_TEST_SSH_CONFIG  an ssh_config for that alias (pass it with ssh -F)
    SFTP_TEST_SSH         a wrapper script: 'ssh -F SFTP_TEST_SSH_CONFIG "$@"'
Logins are for the current user, by key only. Stop it with: stop-sshd.sh DIR
USAGE
}

[ "${1:-}" = -h ] && { usage; exit 0; }
[ $# -eq 2 ] || { usage >&2; exit 2; }
DIR=$1 PORT=$2
SSHD=$(command -v sshd || echo /usr/sbin/sshd)
if [ ! -x "$SSHD" ]; then
    echo "start-sshd.sh: sshd not found; install it: apt-get install -y openssh-server" >&2
    exit 1
fi
mkdir -p "$DIR"; DIR=$(cd "$DIR" && pwd)
[ "$(id -u)" -eq 0 ] && mkdir -p /run/sshd   # privilege separation directory
[ -f "$DIR/hostkey" ] || ssh-keygen -q -t ed25519 -N '' -f "$DIR/hostkey"
[ -f "$DIR/userkey" ] || ssh-keygen -q -t ed25519 -N '' -f "$DIR/userkey"
cp "$DIR/userkey.pub" "$DIR/authorized_keys"; chmod 600 "$DIR/authorized_keys"
cat > "$DIR/sshd_config" <<CONF
Port $PORT
ListenAddress 127.0.0.1
HostKey $DIR/hostkey
AuthorizedKeysFile $DIR/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
# Non-root sshd needs PAM to accept the login ("account is locked" without it).
UsePAM $([ "$(id -u)" -eq 0 ] && echo no || echo yes)
# Tests open many sessions at once; the default (10:30:100) drops some.
MaxStartups 100
Subsystem sftp internal-sftp
PidFile $DIR/sshd.pid
LogLevel ERROR
CONF
cat > "$DIR/ssh_config" <<CONF
Host cairn-sftp-test
  HostName 127.0.0.1
  Port $PORT
  User $(id -un)
  IdentityFile $DIR/userkey
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
  BatchMode yes
CONF
printf '#!/bin/sh\nexec ssh -F %s "$@"\n' "$DIR/ssh_config" > "$DIR/ssh"; chmod +x "$DIR/ssh"
"$SSHD" -t -f "$DIR/sshd_config" || { echo "start-sshd.sh: sshd rejected its config" >&2; exit 1; }
setsid "$SSHD" -D -f "$DIR/sshd_config" -E "$DIR/sshd.log" </dev/null >/dev/null 2>&1 &
echo $! > "$DIR/sshd.pid.launch"
for _ in $(seq 1 50); do
    if echo "pwd" | sftp -q -F "$DIR/ssh_config" -b - cairn-sftp-test >/dev/null 2>&1; then
        echo "start-sshd.sh: sshd running on 127.0.0.1:$PORT, pid $(cat "$DIR/sshd.pid.launch"), log $DIR/sshd.log" >&2
        echo "export SFTP_TEST_HOST=cairn-sftp-test"
        echo "export SFTP_TEST_SSH_CONFIG=$DIR/ssh_config"
        echo "export SFTP_TEST_SSH=$DIR/ssh"
        exit 0
    fi
    sleep 0.2
done
echo "start-sshd.sh: sshd did not accept an SFTP session within 10 s; log: $DIR/sshd.log" >&2
kill "$(cat "$DIR/sshd.pid.launch")" 2>/dev/null || true
exit 1
