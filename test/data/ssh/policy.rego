# The policy the SSH tests run under: anyone may connect, run commands, open shells and transfer
# files, except opaque command lines (command substitution, eval, sh -c, unparseable) and
# recursive forced deletes, which are refused.
package gatehouse

default allow := false

allow if input.action in {"connect", "ssh.exec", "ssh.shell", "ssh.sftp"}

deny contains {"rule": "no-opaque-commands", "reason": "command lines the gateway cannot judge (command substitution, eval, sh -c) are not allowed"} if {
	input.command.opaque == true
}

deny contains {"rule": "no-rm-rf", "reason": "recursive forced deletes are not allowed"} if {
	some c in input.command.commands
	c[0] in {"rm", "/bin/rm", "/usr/bin/rm"}
	some a in c
	regex.match(`^-[a-zA-Z]*r`, a)
	some b in c
	regex.match(`^-[a-zA-Z]*f`, b)
}

deny contains {"rule": "no-secret-files", "reason": "files under a secret/ directory are off limits"} if {
	input.action == "ssh.sftp"
	some p in [input.command.path, object.get(input.command, "target", "")]
	contains(p, "/secret/")
}

# Port forwarding: local forwards only to 127.0.0.1, remote listeners only on unprivileged ports.
allow if {
	input.action == "ssh.forward"
	input.command.direction == "local"
	input.command.host == "127.0.0.1"
}

allow if {
	input.action == "ssh.forward"
	input.command.direction == "remote"
	input.command.port >= 1024
}

# Agents run commands with `ssh HOST CMD` (each line judged), never interactive shells.
deny contains {"rule": "agents-exec-only", "reason": "agents run commands with ssh HOST CMD, not shells"} if {
	input.action == "ssh.shell"
	some p in input.chain
	p.kind == "agent"
}
