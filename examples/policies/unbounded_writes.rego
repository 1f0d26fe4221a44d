# Example: nobody may UPDATE or DELETE without WHERE.
package gatehouse

deny contains {
	"rule": "no-unbounded-write",
	"reason": sprintf("%s without WHERE would change every row", [upper(input.command.kind)]),
} if {
	input.command.kind in {"update", "delete"}
	not input.command.has_where
}
