//! The tool list `airlock mcp` serves: the reference filesystem server's
//! tools, with the same names and argument shapes, plus `run_command`,
//! `fetch` and `staged_changes`. Annotations say what each tool really
//! does here: writes are staged for a human's review, so no tool destroys
//! anything by itself.

use rmcp::model::Tool;
use serde_json::{json, Value};

const WITHIN: &str = " Only works within allowed directories.";
const STAGED: &str = " Changes are staged by Airlock: the real files change only when the user reviews and commits them (`airlock staged diff`, `airlock staged commit`); this session already sees its staged version.";

fn path_only() -> Value {
    json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]})
}

fn text_output() -> Value {
    json!({"type": "object", "properties": {"content": {"type": "string"}}, "required": ["content"]})
}

fn exclude() -> Value {
    json!({"type": "array", "items": {"type": "string"}, "default": []})
}

fn read_only() -> Value {
    json!({"readOnlyHint": true, "openWorldHint": false})
}

fn staged_write(idempotent: bool) -> Value {
    json!({"readOnlyHint": false, "destructiveHint": false, "idempotentHint": idempotent, "openWorldHint": false})
}

fn tool(
    name: &str,
    title: &str,
    description: String,
    input: Value,
    output: Option<Value>,
    annotations: Value,
) -> Tool {
    let mut t = json!({
        "name": name,
        "title": title,
        "description": description,
        "inputSchema": input,
        "annotations": annotations,
    });
    if let Some(o) = output {
        t["outputSchema"] = o;
    }
    serde_json::from_value(t).expect("tool definitions are valid")
}

fn read_text_input() -> Value {
    json!({
        "type": "object",
        "properties": {
            "path": {"type": "string"},
            "tail": {"type": "number", "description": "If provided, returns only the last N lines of the file"},
            "head": {"type": "number", "description": "If provided, returns only the first N lines of the file"}
        },
        "required": ["path"]
    })
}

/// Every tool, in the order the reference server lists them, then ours.
pub fn all() -> Vec<Tool> {
    vec![
        tool(
            "read_file",
            "Read File (Deprecated)",
            "Read the complete contents of a file as text. DEPRECATED: Use read_text_file instead.".into(),
            read_text_input(),
            Some(text_output()),
            read_only(),
        ),
        tool(
            "read_text_file",
            "Read Text File",
            format!("Read the complete contents of a file from the file system as text. Use the 'head' parameter to read only the first N lines of a file, or the 'tail' parameter to read only the last N lines of a file. Operates on the file as text regardless of extension. Every read is checked by the Airlock broker's policy; credential stores and secrets are never readable.{WITHIN}"),
            read_text_input(),
            Some(text_output()),
            read_only(),
        ),
        tool(
            "read_media_file",
            "Read Media File",
            format!("Read a file and return it as a base64-encoded content block with its MIME type. Image and audio files are returned as image/audio content; any other file type is returned as an embedded resource.{WITHIN}"),
            path_only(),
            None,
            read_only(),
        ),
        tool(
            "read_multiple_files",
            "Read Multiple Files",
            format!("Read the contents of multiple files simultaneously. Each file's content is returned with its path as a reference. Failed reads for individual files won't stop the entire operation.{WITHIN}"),
            json!({
                "type": "object",
                "properties": {"paths": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                    "description": "Array of file paths to read. Each path must be a string pointing to a valid file within allowed directories."}},
                "required": ["paths"]
            }),
            Some(text_output()),
            read_only(),
        ),
        tool(
            "write_file",
            "Write File",
            format!("Create a new file or completely overwrite an existing file with new content.{STAGED}{WITHIN}"),
            json!({"type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}}, "required": ["path", "content"]}),
            Some(text_output()),
            staged_write(true),
        ),
        tool(
            "edit_file",
            "Edit File",
            format!("Make line-based edits to a text file. Each edit replaces exact line sequences with new content. Returns a git-style diff showing the changes made.{STAGED}{WITHIN}"),
            json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "edits": {"type": "array", "items": {"type": "object", "properties": {
                        "oldText": {"type": "string", "description": "Text to search for - must match exactly"},
                        "newText": {"type": "string", "description": "Text to replace with"}
                    }, "required": ["oldText", "newText"]}},
                    "dryRun": {"type": "boolean", "default": false, "description": "Preview changes using git-style diff format"}
                },
                "required": ["path", "edits"]
            }),
            Some(text_output()),
            staged_write(false),
        ),
        tool(
            "create_directory",
            "Create Directory",
            format!("Create a new directory or ensure a directory exists. Can create multiple nested directories in one operation. If the directory already exists, this operation will succeed silently.{STAGED}{WITHIN}"),
            path_only(),
            Some(text_output()),
            staged_write(true),
        ),
        tool(
            "list_directory",
            "List Directory",
            format!("Get a detailed listing of all files and directories in a specified path. Results clearly distinguish between files and directories with [FILE] and [DIR] prefixes.{WITHIN}"),
            path_only(),
            Some(text_output()),
            read_only(),
        ),
        tool(
            "list_directory_with_sizes",
            "List Directory with Sizes",
            format!("Get a detailed listing of all files and directories in a specified path, including sizes. Results clearly distinguish between files and directories with [FILE] and [DIR] prefixes.{WITHIN}"),
            json!({"type": "object", "properties": {"path": {"type": "string"},
                "sortBy": {"type": "string", "enum": ["name", "size"], "default": "name", "description": "Sort entries by name or size"}},
                "required": ["path"]}),
            Some(text_output()),
            read_only(),
        ),
        tool(
            "directory_tree",
            "Directory Tree",
            format!("Get a recursive tree view of files and directories as a JSON structure. Each entry includes 'name', 'type' (file/directory), and 'children' for directories. Files have no children array, while directories always have a children array (which may be empty). The output is formatted with 2-space indentation for readability.{WITHIN}"),
            json!({"type": "object", "properties": {"path": {"type": "string"}, "excludePatterns": exclude()}, "required": ["path"]}),
            Some(text_output()),
            read_only(),
        ),
        tool(
            "move_file",
            "Move File",
            format!("Move or rename files and directories. If the destination exists, the operation will fail.{STAGED} Both source and destination must be within allowed directories."),
            json!({"type": "object", "properties": {"source": {"type": "string"}, "destination": {"type": "string"}}, "required": ["source", "destination"]}),
            Some(text_output()),
            staged_write(false),
        ),
        tool(
            "search_files",
            "Search Files",
            format!("Recursively search for files and directories matching a pattern. The patterns should be glob-style patterns that match paths relative to the working directory. Use pattern like '*.ext' to match files in current directory, and '**/*.ext' to match files in all subdirectories. Returns full paths to all matching items.{WITHIN}"),
            json!({"type": "object", "properties": {"path": {"type": "string"}, "pattern": {"type": "string"}, "excludePatterns": exclude()}, "required": ["path", "pattern"]}),
            Some(text_output()),
            read_only(),
        ),
        tool(
            "get_file_info",
            "Get File Info",
            format!("Retrieve detailed metadata about a file or directory: size, last modified time, permissions, type, and whether this session has a staged version of it.{WITHIN}"),
            path_only(),
            Some(text_output()),
            read_only(),
        ),
        tool(
            "list_allowed_directories",
            "List Allowed Directories",
            "Returns the list of directories that this server is allowed to access. Subdirectories within these allowed directories are also accessible. Use this to understand which directories and their nested paths are available before trying to access files.".into(),
            json!({"type": "object", "properties": {}}),
            Some(text_output()),
            read_only(),
        ),
        tool(
            "run_command",
            "Run Command (sandboxed)",
            "Run a command in Airlock's sandbox: it sees only the allowed directory it runs in (its writes are staged for the user's review), has no network and no access to your home directory, and is killed at its time limit. Give `argv` (preferred) or a `command` line for /bin/sh. The user may be asked to approve it first; the call then waits for their decision.".into(),
            json!({
                "type": "object",
                "properties": {
                    "argv": {"type": "array", "items": {"type": "string"}, "minItems": 1, "description": "Program and arguments, e.g. [\"make\", \"test\"]"},
                    "command": {"type": "string", "description": "A shell command line, run as /bin/sh -c COMMAND (use argv when you can)"},
                    "cwd": {"type": "string", "description": "Working directory (default: the first allowed directory)"},
                    "timeout_seconds": {"type": "integer", "minimum": 1, "description": "Wall-clock limit"}
                }
            }),
            None,
            json!({"readOnlyHint": false, "destructiveHint": false, "idempotentHint": false, "openWorldHint": false}),
        ),
        tool(
            "fetch",
            "Fetch URL",
            "Fetch a URL through Airlock's egress policy. Network access is brokered; where no egress path is available the call is refused with the reason.".into(),
            json!({"type": "object", "properties": {"url": {"type": "string"}, "max_length": {"type": "integer", "minimum": 1}}, "required": ["url"]}),
            None,
            json!({"readOnlyHint": true, "openWorldHint": true}),
        ),
        tool(
            "staged_changes",
            "Staged Changes",
            "List the file changes this session has staged (writes, edits, moves, new directories, command output files) and the commands the user runs to review and apply them. The agent cannot apply them itself.".into(),
            json!({"type": "object", "properties": {}}),
            Some(text_output()),
            read_only(),
        ),
    ]
}
