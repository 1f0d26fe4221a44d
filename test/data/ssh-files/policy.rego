# The policy of the file-transfer corpus: people may do anything; an agent may read and write only
# under the connection's `files_root` label (a directory made per test run), judged on the canonical
# paths the gateway resolved on the target — both names of a rename or link, every path of an scp.
package gatehouse

default allow := false

allow if input.action == "connect"

allow if input.principal.kind == "user"

root := input.connection.labels.files_root

under(p) if p == root

under(p) if startswith(p, concat("", [root, "/"]))

# Opening the SFTP subsystem (or the SFTP server run as an exec) is not a file operation.
allow if {
	input.principal.kind == "agent"
	input.action == "ssh.sftp"
	input.command.operation == "session"
}

# A legacy scp exec: every path it names.
allow if {
	input.principal.kind == "agent"
	input.action == "ssh.sftp"
	input.command.operation in {"upload", "download"}
	every p in input.command.paths {
		under(p)
	}
}

allow if {
	input.principal.kind == "agent"
	input.action == "ssh.sftp"
	not input.command.operation in {"session", "upload", "download"}
	under(input.command.path)
	under(object.get(input.command, "target", root))
}

# A few harmless commands (the exec corpus is another suite's).
allow if {
	input.principal.kind == "agent"
	input.action == "ssh.exec"
	not input.command.opaque
	input.command.argv[0] in {"echo", "true"}
}

# readonly/ may be read but not changed by agents (the handle tests: fsetstat on a file opened for reading).
deny contains {"rule": "readonly", "reason": "readonly/ is read-only for agents"} if {
	input.principal.kind == "agent"
	input.action == "ssh.sftp"
	input.command.operation in {"write", "setstat", "remove", "rename", "mkdir", "rmdir", "symlink", "link"}
	some p in [input.command.path, object.get(input.command, "target", "")]
	startswith(p, concat("", [root, "/readonly"]))
}
