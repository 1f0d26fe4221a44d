# Kubernetes API requests through the Kubernetes proxy (proxies/kubernetes): action `kube.request`,
# decided per request with `input.command.verb` (get, list, watch, create, update, patch, delete,
# deletecollection; `proxy` by path prefix), `.group` ("" for core), `.version`, `.resource`,
# `.subresource` (exec, attach, portforward, log, proxy, status, …), `.namespace`, `.name`, read
# from the path as the API server reads it; `.resource_request` is false for discovery
# (`/api`, `/apis`, `/version`, `/openapi/...`). Writes carry `.object` (kind, api_version, name,
# generate_name, namespace, labels, annotations of the body) and `.secret_refs` (the Secrets the
# object would expose to a container), the same whether kubectl sent JSON, YAML or protobuf.
# exec carries `.command.argv`; port-forward `.ports`.
#
# Like SQL: everyone may read (discovery, get/list/watch, logs), group writers may change things;
# exec, attach, port-forward and the proxy subresource run code or reach into the cluster's
# network, so they are writes here. Secret data is masked for everyone outside `secret-readers`,
# and whoever sees it masked may not mount it in a pod either.
package gatehouse

secret_readers := {"secret-readers"} | admins

kube_read_verbs := {"get", "list", "watch"}

kube_stream_subresources := {"exec", "attach", "portforward", "proxy"}

# Discovery and other non-resource reads (kubectl needs them before anything else).
allow if {
	input.action == "kube.request"
	not input.command.resource_request
	input.command.verb in {"get", "head"}
}

kube_read if {
	input.command.resource_request
	input.command.verb in kube_read_verbs
	not input.command.subresource in kube_stream_subresources
}

allow if {
	input.action == "kube.request"
	kube_read
}

# `kubectl auth can-i` and `kubectl auth whoami` ask the cluster about the caller: nothing is written.
allow if {
	input.action == "kube.request"
	input.command.verb == "create"
	input.command.group in {"authorization.k8s.io", "authentication.k8s.io"}
	input.command.resource in {"selfsubjectaccessreviews", "selfsubjectrulesreviews", "selfsubjectreviews"}
}

allow if {
	input.action == "kube.request"
	input.command.resource_request
	not kube_read
	member_of(writers)
}

# Secret data is masked in answers (get, list, watch, -o yaml) unless the hop is cleared: the
# values of every `data` and `stringData` member (in an object, a list's items, a watch event, a
# Table row) become null, and so does the annotation where `kubectl apply` keeps a copy of the
# whole object, data included. Agents have no groups: they see Secret data masked unless their
# scope carries unmask:kube-secret-data.
kube_secret_paths := {
	"$..data.*",
	"$..stringData.*",
	"$..annotations['kubectl.kubernetes.io/last-applied-configuration']",
}

mask contains {"rule": "kube-secret-data", "json_path": path, "strategy": "null"} if {
	input.action == "kube.request"
	input.command.resource == "secrets"
	not member_of(secret_readers)
	some path in kube_secret_paths
}

# Named by path, not by handing `input.command` to a function: a policy that can see the whole
# command counts as reading SQL text, and then no SQL decision may be reused by statement shape.
kube_object_kind := k if {
	k := input.command.object.kind
} else := "object"

# A pod (or a workload's pod template) that mounts a Secret, or reads it into the environment,
# hands its data to whoever runs the container: only for those who may read it.
deny contains {
	"rule": "kube-secret-mount",
	"reason": sprintf("this %s uses Secret %s; mounting a Secret needs group secret-readers", [kube_object_kind, concat(", ", input.command.secret_refs)]),
} if {
	input.action == "kube.request"
	input.command.verb in {"create", "update", "patch"}
	count(input.command.secret_refs) > 0
	not member_of(secret_readers)
}

# A write whose body the gateway could not read (not JSON, YAML or Kubernetes protobuf) cannot be
# judged on its object.
deny contains {"rule": "kube-opaque-body", "reason": "the gateway judges writes on their object; send JSON, YAML or protobuf"} if {
	input.action == "kube.request"
	input.command.body_opaque
}

# Deleting in namespace prod waits for a DBA's approval (the request is held; run it again once
# approved).
approval contains {"rule": "kube-prod-delete", "group": "dba", "reason": "deleting in namespace prod needs a DBA's approval"} if {
	input.action == "kube.request"
	kube_deletes
	input.command.namespace == "prod"
}

kube_deletes if input.command.verb in {"delete", "deletecollection"}

# An eviction (`POST …/pods/<name>/eviction`, what `kubectl drain` sends) deletes the pod too.
kube_deletes if {
	input.command.verb == "create"
	input.command.resource == "pods"
	input.command.subresource == "eviction"
}

# A debug container (`kubectl debug`, the ephemeralcontainers subresource) runs a command of the
# caller's choosing beside a pod's own, which for an agent is exec by another route.
deny contains {"rule": "kube-agents-no-debug-containers", "reason": "agents may not add debug containers to a pod"} if {
	input.action == "kube.request"
	input.command.subresource == "ephemeralcontainers"
	not input.command.verb in kube_read_verbs
	some p in input.chain
	p.kind == "agent"
}
