# Guardrails: commands refused even for principals whose groups allow the action. Every `deny`
# entry names its rule and says why, and the client reads it:
#   gatehouse: denied by <rule> (<principal>): <reason>
package gatehouse

# What the classifier could not fully understand is the most dangerous class, never harmless.
deny contains {
	"rule": "unclassified-sql",
	"reason": "the classifier could not fully understand this statement (DO block, CALL, COPY … PROGRAM or unparsable SQL), so it is not run",
} if {
	input.action == "sql.other"
}

# UPDATE or DELETE without WHERE touches every row: almost always a mistake.
deny contains {
	"rule": "no-unbounded-write",
	"reason": sprintf("%s without WHERE would change every row; add a WHERE clause (WHERE true if you mean it)", [upper(input.command.kind)]),
} if {
	input.command.kind in {"update", "delete"}
	not input.command.has_where
}

# MERGE whose UPDATE or DELETE is bounded by no condition on the target (ON true) is the same.
deny contains {
	"rule": "no-unbounded-write",
	"reason": "MERGE whose ON condition names no column of the target would update or delete every row; join on a target column",
} if {
	input.command.kind == "merge"
	not input.command.has_where
}

# Functions that reach outside the database (the server's files and processes, other
# databases): only gatehouse admins may call them. Agents have no groups, so an agent never
# calls them, whoever it acts for.
dangerous_functions := {
	"pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file",
	"pg_ls_logdir", "pg_ls_waldir", "pg_ls_tmpdir", "pg_ls_archive_statusdir",
	"pg_file_write", "pg_file_rename", "pg_file_unlink", "pg_file_sync", "pg_logdir_ls",
	"lo_import", "lo_export",
	"pg_execute_server_program",
	"pg_reload_conf", "pg_rotate_logfile", "pg_promote",
	"pg_terminate_backend", "pg_cancel_backend",
}

# command.functions lists every function called, lower case and unqualified.
dangerous(f) if f in dangerous_functions

dangerous(f) if startswith(f, "dblink")

deny contains {
	"rule": "dangerous-function",
	"reason": sprintf("%s reaches outside the database; only gatehouse-admins may call it", [f]),
} if {
	some f in input.command.functions
	dangerous(f)
	not member_of(admins)
}

# An SSH command line the gateway cannot judge (command.opaque: an expansion, a glob, a
# redirection, a program that runs other commands such as sh -c, sudo or xargs), or a kubectl exec
# argv whose program runs other commands, is never run for
# a chain with an agent in it: what would run is not what policy saw. A human's policy may allow
# opaque lines on purpose; a plain line is judged as argv lists (command.programs) and sent
# re-quoted, so the target's shell runs exactly those words.
deny contains {
	"rule": "agents-no-opaque-commands",
	"reason": sprintf("the gateway cannot judge this command line (%s); agents run plain commands only", [object.get(input.command, "opaque_reason", "opaque")]),
} if {
	input.action in {"ssh.exec", "ssh.sftp", "kube.request"}
	input.command.opaque == true
	some p in input.chain
	p.kind == "agent"
}
