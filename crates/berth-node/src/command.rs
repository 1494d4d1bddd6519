//! Running the host tools the node relies on (`ip`, `iptables`, `runc`) as child
//! processes, so no namespace switch ever happens on a tokio worker thread.

use std::ffi::OsStr;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed { command: String, status: String, stderr: String },
}

impl CommandError {
    /// The tool's own error text, for callers that accept some failures ("File exists").
    pub fn stderr(&self) -> &str {
        match self {
            CommandError::Spawn { .. } => "",
            CommandError::Failed { stderr, .. } => stderr,
        }
    }
}

/// Runs `program args…`, feeding `stdin` if given, and returns its stdout.
pub async fn run<S: AsRef<OsStr>>(
    program: impl AsRef<OsStr>,
    args: &[S],
    stdin: Option<&str>,
) -> Result<String, CommandError> {
    let program = program.as_ref();
    let describe = || {
        let mut text = program.to_string_lossy().into_owned();
        for arg in args {
            text.push(' ');
            text.push_str(&arg.as_ref().to_string_lossy());
        }
        text
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|source| CommandError::Spawn { program: program.to_string_lossy().into_owned(), source })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A write error shows up as the tool's own failure below.
        let _ = pipe.write_all(input.as_bytes()).await;
        drop(pipe);
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|source| CommandError::Spawn { program: program.to_string_lossy().into_owned(), source })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if stderr.is_empty() {
            stderr = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        }
        Err(CommandError::Failed { command: describe(), status: output.status.to_string(), stderr })
    }
}

/// Whether `program` can be found (absolute path or on `PATH`).
pub fn available(program: &std::path::Path) -> bool {
    if program.is_absolute() {
        return program.is_file();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}
