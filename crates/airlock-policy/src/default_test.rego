# Unit tests of the embedded default policy (`airlock policy test` runs them
# together with any `*_test.rego` in the policy directory).
package airlock.default_test

import rego.v1

import data.airlock.default as p

_base := {
	"action": "read_files",
	"workspaces": ["/home/u/proj"],
	"broker_paths": ["/home/u/.local/state/airlock", "/home/u/.config/airlock", "/run/user/1000/airlock"],
	"usage": {"requests_per_minute": {"used": 1, "limit": 600, "retry_after": 0}},
}

_at(action, path) := object.union(_base, {"action": action, "paths": [path], "path": path, "path_info": {"path": path, "labels": [], "workspace": null}})

test_read_inside_workspace_allowed if {
	d := p.decision with input as _at("read_files", "/home/u/proj/src/main.rs")
	d.decision == "allow"
	d.rule == "workspace"
}

test_list_and_edit_inside_workspace_allowed if {
	p.decision.decision == "allow" with input as _at("list_files", "/home/u/proj")
	p.decision.decision == "allow" with input as _at("edit_files", "/home/u/proj/a.txt")
}

test_sibling_prefix_is_outside if {
	d := p.decision with input as _at("read_files", "/home/u/proj-evil/a")
	d.decision == "ask"
	d.rule == "outside_workspace"
	d.reasons == ["/home/u/proj-evil/a is outside your workspaces (/home/u/proj)"]
}

test_ssh_key_inside_workspace_denied if {
	d := p.decision with input as _at("read_files", "/home/u/proj/.ssh/id_rsa")
	d.decision == "deny"
	d.grantable == false
	d.rule == "credential_store"
}

test_ssh_anywhere_denied if {
	p.decision.decision == "deny" with input as _at("read_files", "/srv/backup/.SSH/known_hosts")
}

test_env_files_denied if {
	p.decision.decision == "deny" with input as _at("read_files", "/home/u/proj/.env")
	p.decision.decision == "deny" with input as _at("read_files", "/home/u/proj/.env.local")
}

test_env_template_allowed if {
	p.decision.decision == "allow" with input as _at("read_files", "/home/u/proj/.env.example")
}

test_system_secrets_denied if {
	p.decision.decision == "deny" with input as _at("read_files", "/etc/shadow")
	p.decision.decision == "deny" with input as _at("read_files", "/proc/1/environ")
	p.decision.decision == "deny" with input as _at("read_files", "/proc/self/task/7/mem")
}

test_broker_state_denied if {
	d := p.decision with input as _at("edit_files", "/home/u/.config/airlock/policy/x.rego")
	d.decision == "deny"
	d.rule == "broker_state"
	d.grantable == false
}

test_never_beats_workspace_for_commit if {
	p.decision.decision == "deny" with input as _at("commit", "/home/u/proj/.git-credentials")
	p.decision.decision == "allow" with input as _at("commit", "/home/u/proj/src/lib.rs")
}

test_exec_asks if {
	inp := object.union(_base, {"action": "exec", "commands": ["cargo"]})
	d := p.decision with input as inp
	d.decision == "ask"
	d.reasons == ["running commands (cargo) needs your approval"]
}

test_network_asks if {
	inp := object.union(_base, {"action": "network", "hosts": ["api.example.com:443"]})
	d := p.decision with input as inp
	d.decision == "ask"
	d.rule == "network"
}

test_labelled_asks if {
	inp := object.union(_at("read_files", "/home/u/proj/report.pdf"), {"path_info": {"path": "/home/u/proj/report.pdf", "labels": ["confidential"], "workspace": "/home/u/proj"}})
	d := p.decision with input as inp
	d.decision == "ask"
	d.rule == "labelled"
}

test_quota_denies if {
	inp := object.union(_at("read_files", "/home/u/proj/a"), {"usage": {"files_read_per_hour": {"used": 500, "limit": 500, "retry_after": 30}}})
	d := p.decision with input as inp
	d.decision == "deny"
	d.reason_code == "quota_exceeded"
	d.reasons == ["quota files_read_per_hour is used up (500 of 500); retry in 30 s"]
}

test_unknown_action_denied if {
	p.decision.decision == "deny" with input as _at("format_disk", "/home/u/proj")
}

test_file_action_without_paths_denied if {
	d := p.decision with input as object.union(_base, {"action": "read_files"})
	d.rule == "no_paths"
}

test_private_key_suffix_asks if {
	d := p.decision with input as _at("read_files", "/home/u/proj/certs/server.pem")
	d.decision == "ask"
	d.rule == "private_key"
}

# The fast path's literal sets must cover the lists it stands in for.
test_clear_literals_cover_the_lists if {
	starts := {s | some seq in p.credential_sequences; s := split(seq, "/")[0]}
	p._clear_components == ((p.credential_names | starts) | p.private_key_names) | {"proc"}
	p._clear_suffixes == p.key_suffixes
	p._file_actions == {"read_files", "list_files", "edit_files", "commit"}
}

test_mcp_tool_asks if {
	inp := object.union(_base, {"action": "mcp_tool", "mcp": {"server": "everything", "tool": "echo", "arguments": {"message": "hi"}}})
	d := p.decision with input as inp
	d.decision == "ask"
	d.rule == "mcp"
}

test_mcp_secret_is_named if {
	inp := object.union(_base, {"action": "mcp_tool", "mcp": {"server": "s", "tool": "t", "secrets": ["aws-access-token"]}})
	d := p.decision with input as inp
	d.decision == "ask"
	d.rule == "mcp,mcp_secret"
}

_result_check := object.union(_base, {"action": "mcp_tool", "mcp": {
	"server": "s", "tool": "t",
	"secrets": ["generic-api-key"],
	"result_secrets": ["aws-access-token", "github-pat"],
}})

test_mcp_result_check_allowed_and_redacted if {
	d := p.decision with input as _result_check
	d.decision == "allow"
	d.rule == "mcp_result"
	d.reasons == ["the result of MCP server s's tool t holds what looks like a secret (aws-access-token, github-pat); the agent sees it redacted unless a policy passes it (mcp_secrets)"]

	# The default says nothing about secrets, so the proxy redacts and a
	# policy directory can relax that with mcp_secrets := "allow".
	not d.mcp_secrets
}

test_mcp_result_check_ignores_used_up_quota if {
	used := {"usage": {"mcp_calls_per_minute": {"used": 60, "limit": 60, "retry_after": 10}}}
	p.decision.decision == "allow" with input as object.union(_result_check, used)
	inp := object.union(_base, {"action": "mcp_tool", "mcp": {"server": "s", "tool": "t"}})
	p.decision.reason_code == "quota_exceeded" with input as object.union(inp, used)
}
