# Airlock's default policy.
#
# Evaluated once per path of a manifest (input.path / input.path_info are set
# to that path; see docs/policy.md). Exactly one `decision` object is defined
# for every input, chosen in this order:
#
#   1. never:  credential stores, secrets and Airlock's own state -> deny, not grantable
#   2. quota:  a usage counter has reached its limit            -> deny, reason_code quota_exceeded
#   3. invalid: unknown action, file action without paths        -> deny, not grantable
#   4. ask:    exec, network, paths outside every workspace, labelled paths,
#              files that may hold a private key, directories holding Airlock state
#   5. allow:  read/list/edit/commit of paths inside a workspace
#
# Most requests are the last case, so it has a fast path (`_clear`, at the
# end): one rule that tests the path's precomputed facts against every list
# above at once and decides allow when none can match. Whenever it cannot
# rule every check out, the full evaluation below decides; it is a shortcut
# to the same answer, never a different one. A rule added to sections 1-4
# must be excluded by `_clear` too (default_test.rego checks that its lists
# match the ones above; a differential test compares both paths).
#
# Matching of the never-list is by whole path components, case-insensitively,
# wherever the components appear in the path (not only under $HOME). The
# lists are sets so that each check is a set intersection, not a loop: the
# policy runs on every request and every file access.
package airlock.default

import rego.v1

policy_id := "airlock.default"

# ---------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------

_file_actions := {"read_files", "list_files", "edit_files", "commit"}

_known_actions := {"read_files", "list_files", "edit_files", "exec", "network", "commit"} | _mcp_actions

# Path components that are (or hold) credentials or secrets. Lower case.
credential_names := {
	".ssh", ".aws", ".kube", ".gnupg", ".azure", ".password-store",
	".netrc", ".git-credentials", ".pgpass", ".mozilla",
}

# Component sequences that are credential stores, written joined by "/".
credential_sequences := {
	".docker/config.json",
	".config/gh/hosts.yml",
	".config/gcloud",
	".local/share/keyrings",
	".config/google-chrome",
	".config/chromium",
	".config/bravesoftware",
	".config/microsoft-edge",
	"snap/firefox",
	"library/application support/google/chrome",
	"library/keychains",
	"etc/shadow",
	"etc/shadow-",
	"etc/gshadow",
	"etc/gshadow-",
	"etc/sudoers",
	"etc/sudoers.d",
}

# First components of those sequences: only paths with one of them need the
# sequence check.
_sequence_starts := {s | some seq in credential_sequences; s := split(seq, "/")[0]}

# OpenSSH's default private key file names.
private_key_names := {"id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "id_ecdsa_sk", "id_ed25519_sk"}

# `.env.*` files that are templates by convention and hold no secrets.
env_templates := {".env.example", ".env.sample", ".env.template"}

# Files that may hold a private key: ask rather than deny (certificates share
# these suffixes).
key_suffixes := {".pem", ".key", ".p12", ".pfx", ".jks", ".keystore", ".ppk"}

# ---------------------------------------------------------------------------
# Helpers. The broker's evaluator supplies each path's facts natively in
# input.path_info (components, component_set, basename, extension, ancestors)
# and the sets input.workspace_set / input.broker_path_set; the fallbacks
# compute them when a caller (a `with input as` test) does not.
# ---------------------------------------------------------------------------

_path := input.path if is_string(input.path)

_info := input.path_info if is_object(input.path_info) else := {}

_comps := c if {
	c := _info.components
	is_array(c)
} else := [c | some c in split(lower(_path), "/"); c != ""]

_comp_set := s if {
	s := _info.component_set
	is_set(s)
} else := {c | some c in _comps}

_base := b if {
	b := _info.basename
	is_string(b)
} else := _comps[count(_comps) - 1]

_ext := e if {
	e := _info.extension
	is_string(e)
} else := concat("", [".", parts[count(parts) - 1]]) if {
	parts := split(_base, ".")
	count(parts) > 1
} else := ""

_ancestors := a if {
	a := _info.ancestors
	is_set(a)
} else := {concat("", ["/", concat("/", array.slice(raw, 0, i + 1))]) | raw := [c | some c in split(_path, "/"); c != ""]; some i, _ in raw} | {"/"}

_workspaces := s if {
	s := input.workspace_set
	is_set(s)
} else := {w | some w in input.workspaces; is_string(w)}

_broker_paths := s if {
	s := input.broker_path_set
	is_set(s)
} else := {b | some b in input.broker_paths; is_string(b)}

# Component-wise "p is r or lies beneath r".
_within(p, r) if r == "/"

_within(p, r) if p == r

_within(p, r) if startswith(p, concat("", [r, "/"]))

_inside_workspace if count(_ancestors & _workspaces) > 0

_labels := input.path_info.labels if is_array(input.path_info.labels)

_labels := input.labels if {
	not is_array(input.path_info.labels)
	is_array(input.labels)
}

_is_env_name(c) if c == ".env"

_is_env_name(c) if {
	startswith(c, ".env.")
	not c in env_templates
}

# ---------------------------------------------------------------------------
# 1. never
# ---------------------------------------------------------------------------

_never contains {"rule": "credential_store", "reason": msg} if {
	some c in credential_names & _comp_set
	msg := sprintf("%s is a credential store or secret (%s); Airlock never shares it", [_path, c])
}

_never contains {"rule": "credential_store", "reason": msg} if {
	count(_sequence_starts & _comp_set) > 0
	wrapped := concat("", ["/", concat("/", _comps), "/"])
	some seq in credential_sequences
	contains(wrapped, concat("", ["/", seq, "/"]))
	msg := sprintf("%s is a credential store or secret (%s); Airlock never shares it", [_path, seq])
}

_never contains {"rule": "credential_store", "reason": msg} if {
	some c in private_key_names & _comp_set
	msg := sprintf("%s is a private key (%s); Airlock never shares it", [_path, c])
}

_never contains {"rule": "credential_store", "reason": msg} if {
	_is_env_name(_base)
	msg := sprintf("%s is an environment file (%s) that usually holds secrets; Airlock never shares it", [_path, _base])
}

_never contains {"rule": "credential_store", "reason": msg} if {
	_comps[0] == "proc"
	some j, c in _comps
	j > 1
	c in {"environ", "mem"}
	msg := sprintf("%s exposes another process's %s; Airlock never shares it", [_path, c])
}

_never contains {"rule": "broker_state", "reason": msg} if {
	some b in _ancestors & _broker_paths
	msg := sprintf("%s is Airlock's own state (%s); agents never reach it", [_path, b])
}

# ---------------------------------------------------------------------------
# 2. quota
# ---------------------------------------------------------------------------

_quota contains msg if {
	input.action != "commit"
	not _mcp_result
	some name, u in input.usage
	is_number(u.used)
	is_number(u.limit)
	u.used >= u.limit
	msg := sprintf("quota %s is used up (%v of %v)%s", [name, u.used, u.limit, _retry_text(u)])
}

_retry_text(u) := sprintf("; retry in %v s", [u.retry_after]) if {
	is_number(u.retry_after)
	u.retry_after > 0
} else := ""

# ---------------------------------------------------------------------------
# 3. invalid
# ---------------------------------------------------------------------------

_invalid contains {"rule": "unknown_action", "reason": msg} if {
	not input.action in _known_actions
	msg := sprintf("unknown action %v; Airlock knows %s", [input.action, concat(", ", sort(_known_actions))])
}

_invalid contains {"rule": "no_paths", "reason": msg} if {
	input.action in _file_actions
	not _path
	msg := sprintf("%s needs at least one path", [input.action])
}

# ---------------------------------------------------------------------------
# 4. ask
# ---------------------------------------------------------------------------

_ask contains {"rule": "exec", "reason": msg} if {
	input.action == "exec"
	msg := sprintf("running commands (%s) needs your approval", [_commands_text])
}

_commands_text := concat(", ", input.commands) if {
	is_array(input.commands)
	count(input.commands) > 0
} else := "unspecified"

_ask contains {"rule": "network", "reason": msg} if {
	input.action == "network"
	msg := sprintf("network access to %s needs your approval", [_hosts_text])
}

_hosts_text := concat(", ", input.hosts) if {
	is_array(input.hosts)
	count(input.hosts) > 0
} else := "unspecified hosts"

_ask contains {"rule": "outside_workspace", "reason": msg} if {
	_path
	not _inside_workspace
	msg := sprintf("%s is outside your workspaces (%s)", [_path, _workspaces_text])
}

_workspaces_text := concat(", ", [w | some w in input.workspaces; is_string(w)]) if count(_workspaces) > 0 else := "none configured"

_ask contains {"rule": "labelled", "reason": msg} if {
	input.action != "commit"
	_path
	count(_labels) > 0
	msg := sprintf("%s is labelled %s; sharing it needs your approval", [_path, concat(", ", _labels)])
}

_ask contains {"rule": "private_key", "reason": msg} if {
	_ext in key_suffixes
	msg := sprintf("%s may hold a private key (%s); sharing it needs your approval", [_path, _ext])
}

_ask contains {"rule": "holds_broker_state", "reason": msg} if {
	_path
	prefix := concat("", [_path, "/"])
	some b in _broker_paths
	startswith(b, prefix)
	msg := sprintf("%s contains Airlock's own state (%s); granting it needs your approval", [_path, b])
}

_ask contains {"rule": "holds_broker_state", "reason": msg} if {
	_path == "/"
	count(_broker_paths) > 0
	msg := sprintf("/ contains Airlock's own state (%s); granting it needs your approval", [concat(", ", sort(_broker_paths))])
}

# ---------------------------------------------------------------------------
# 4b. MCP calls through `airlock mcp-proxy`: every tool call, resource read
#     and prompt asks; what looks like a secret in the arguments is named
#     (never shown) so the human sees it. A policy directory allows or denies
#     by input.mcp.server / tool / resource / prompt / arguments / secrets.
#
#     When a call's result holds what looks like a secret, the proxy asks
#     again with input.mcp.result_secrets set (a "result check"). This policy
#     allows it without saying what to do with the secrets, so the proxy
#     redacts them; a policy directory passes them with
#     `mcp_secrets := "allow"`, withholds the result with a deny, or lets a
#     human decide with an ask.
# ---------------------------------------------------------------------------

_mcp_actions := {"mcp_tool", "mcp_resource", "mcp_prompt"}

_mcp_result if {
	input.action in _mcp_actions
	count(input.mcp.result_secrets) > 0
}

_mcp_what := sprintf("tool %s", [input.mcp.tool]) if input.action == "mcp_tool"

else := sprintf("resource %s", [input.mcp.resource]) if input.action == "mcp_resource"

else := sprintf("prompt %s", [input.mcp.prompt])

_ask contains {"rule": "mcp", "reason": msg} if {
	input.action in _mcp_actions
	not _mcp_result
	msg := sprintf("MCP server %s: %s needs your approval", [input.mcp.server, _mcp_what])
}

_ask contains {"rule": "mcp_secret", "reason": msg} if {
	input.action in _mcp_actions
	not _mcp_result
	count(input.mcp.secrets) > 0
	msg := sprintf("the arguments hold what looks like a secret (%s)", [concat(", ", input.mcp.secrets)])
}

# ---------------------------------------------------------------------------
# 5. allow
# ---------------------------------------------------------------------------

_allow_reason := sprintf("%s of %s, inside your workspace %s", [input.action, _path, _ws]) if {
	_ws := [w | some w in input.workspaces; _within(_path, w)][0]
}

_allow_reason := msg if {
	_mcp_result
	msg := sprintf("the result of MCP server %s's %s holds what looks like a secret (%s); the agent sees it redacted unless a policy passes it (mcp_secrets)", [input.mcp.server, _mcp_what, concat(", ", input.mcp.result_secrets)])
}

_allow_rule := "mcp_result" if _mcp_result

else := "workspace"

# ---------------------------------------------------------------------------
# The full decision: exactly one branch holds for any input.
# ---------------------------------------------------------------------------

_n_never := count(_never)

_n_quota := count(_quota)

_n_invalid := count(_invalid)

_n_ask := count(_ask)

_rules(entries) := concat(",", sort({e.rule | some e in entries}))

_reasons(entries) := sort({e.reason | some e in entries})

_decision := {
	"decision": "deny",
	"rule": _rules(_never),
	"reasons": _reasons(_never),
	"grantable": false,
} if {
	_n_never > 0
}

_decision := {
	"decision": "deny",
	"rule": "quota",
	"reasons": sort(_quota),
	"grantable": false,
	"reason_code": "quota_exceeded",
} if {
	_n_never == 0
	_n_quota > 0
}

_decision := {
	"decision": "deny",
	"rule": _rules(_invalid),
	"reasons": _reasons(_invalid),
	"grantable": false,
} if {
	_n_never == 0
	_n_quota == 0
	_n_invalid > 0
}

_decision := {
	"decision": "ask",
	"rule": _rules(_ask),
	"reasons": _reasons(_ask),
	"grantable": true,
} if {
	_n_never + _n_quota + _n_invalid == 0
	_n_ask > 0
}

_decision := {
	"decision": "allow",
	"rule": _allow_rule,
	"reasons": [_allow_reason],
	"grantable": false,
} if {
	_n_never + _n_quota + _n_invalid + _n_ask == 0
}

# ---------------------------------------------------------------------------
# The decision, with its fast path.
# ---------------------------------------------------------------------------

decision := {
	"decision": "allow",
	"rule": "workspace",
	"reasons": [_clear_reason],
	"grantable": false,
} if {
	_clear
} else := _decision

# `_clear` holds only when no rule of sections 1-4 can apply to this path, so
# the decision is the allow of section 5. It reads the facts Airlock computes
# for every path of input.paths (so a hand-written input.path_info cannot
# take it) and tests them against literal sets, which the VM evaluates much
# faster than references to the list rules; default_test.rego checks that the
# literals cover the lists. Each test is conservative: the full evaluation
# runs whenever one of them fails.
_clear if {
	input.action in {"read_files", "list_files", "edit_files", "commit"}
	p := input.path
	p in input.paths
	p != "/"
	info := input.path_info

	# p is absolute and normalised, so "w is an ancestor of p" is _within(p, w).
	p in info.ancestors

	# never: credential names, the first components of credential sequences,
	# private key names, /proc; .env files; Airlock's own state.
	count(info.component_set & _clear_components) == 0
	not startswith(info.basename, ".env")
	count(info.ancestors & input.broker_path_set) == 0

	# quota: no counter is used up.
	every u in input.usage {
		not u.used >= u.limit
	}

	# ask: inside a workspace, no labels, no key suffix, holds no broker state.
	count(info.ancestors & input.workspace_set) > 0
	not "" in input.workspace_set
	info.labels == []
	not info.extension in _clear_suffixes
	prefix := concat("", [p, "/"])
	every b in input.broker_path_set {
		not startswith(b, prefix)
	}
}

# credential_names | the first components of credential_sequences |
# private_key_names | {"proc"}, written out (see default_test.rego).
_clear_components := {
	".ssh", ".aws", ".kube", ".gnupg", ".azure", ".password-store",
	".netrc", ".git-credentials", ".pgpass", ".mozilla",
	".docker", ".config", ".local", "snap", "library", "etc",
	"id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "id_ecdsa_sk", "id_ed25519_sk",
	"proc",
}

# key_suffixes, written out (see default_test.rego).
_clear_suffixes := {".pem", ".key", ".p12", ".pfx", ".jks", ".keystore", ".ppk"}

# Section 5's reason: with p normalised, the first workspace among p's
# ancestors is the first one _within(p, w) accepts ("" excepted, which
# `_clear` refuses).
_clear_reason := sprintf("%s of %s, inside your workspace %s", [input.action, input.path, ws]) if {
	ws := [w | some w in input.workspaces; w in input.path_info.ancestors][0]
}
