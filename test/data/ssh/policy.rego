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
