//! Container logs in the CRI format kubelet reads (`<RFC3339Nano> <stream> <P|F> <content>`),
//! one file per container attempt at `<data-dir>/pods/<uid>/<container>/<restartCount>.log`.
//! The shim writes them; the API server reads them through [`read_log`] and friends.

use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use k8s_openapi::jiff::Timestamp;

/// Longest line written as one record; longer ones are split into partial (`P`) records,
/// as containerd does.
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// Turns raw output chunks into CRI log records.
pub struct CriLogWriter<W: Write> {
    out: W,
    pending: [Vec<u8>; 2],
}

impl<W: Write> CriLogWriter<W> {
    pub fn new(out: W) -> Self {
        CriLogWriter { out, pending: [Vec::new(), Vec::new()] }
    }

    /// Appends output of `stream`; complete lines are written at once, stamped `now`.
    pub fn write(&mut self, stream: Stream, data: &[u8], now: Timestamp) -> io::Result<()> {
        let mut rest = data;
        while let Some(newline) = rest.iter().position(|b| *b == b'\n') {
            let (line, after) = rest.split_at(newline);
            self.spill(stream, line, now)?;
            let full = std::mem::take(&mut self.pending[stream.index()]);
            self.record(stream, false, &full, now)?;
            rest = &after[1..];
        }
        self.spill(stream, rest, now)?;
        self.out.flush()
    }

    /// Buffers an incomplete line, writing `P` records while it exceeds [`MAX_LINE`];
    /// a line that ends exactly at a limit still gets its final `F` record.
    fn spill(&mut self, stream: Stream, mut data: &[u8], now: Timestamp) -> io::Result<()> {
        loop {
            let pending = &mut self.pending[stream.index()];
            let room = MAX_LINE - pending.len();
            if data.len() <= room {
                pending.extend_from_slice(data);
                return Ok(());
            }
            pending.extend_from_slice(&data[..room]);
            data = &data[room..];
            let chunk = std::mem::take(pending);
            self.record(stream, true, &chunk, now)?;
        }
    }

    /// Writes what is left of an unterminated last line (the stream ended).
    pub fn finish(&mut self, stream: Stream, now: Timestamp) -> io::Result<()> {
        let pending = std::mem::take(&mut self.pending[stream.index()]);
        if !pending.is_empty() {
            self.record(stream, false, &pending, now)?;
        }
        self.out.flush()
    }

    fn record(&mut self, stream: Stream, partial: bool, content: &[u8], now: Timestamp) -> io::Result<()> {
        let tag = if partial { "P" } else { "F" };
        let mut line = Vec::with_capacity(content.len() + 48);
        write!(line, "{} {} {tag} ", format_timestamp(now), stream.as_str())?;
        line.extend_from_slice(content);
        line.push(b'\n');
        self.out.write_all(&line)
    }
}

/// RFC 3339 with nanoseconds, trailing zeros trimmed, in UTC (Go's `RFC3339Nano`).
pub fn format_timestamp(ts: Timestamp) -> String {
    let text = format!("{ts:.9}");
    // "…:05.120000000Z" -> "…:05.12Z"; "…:05.000000000Z" -> "…:05Z".
    match text.strip_suffix('Z').and_then(|body| body.split_once('.')) {
        Some((seconds, fraction)) => {
            let fraction = fraction.trim_end_matches('0');
            if fraction.is_empty() { format!("{seconds}Z") } else { format!("{seconds}.{fraction}Z") }
        }
        None => text,
    }
}

/// One parsed record of a CRI log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub timestamp: Timestamp,
    pub stream: Stream,
    /// `P`: the line continues in the next record of the same stream.
    pub partial: bool,
    pub content: Vec<u8>,
}

/// Parses one line of a CRI log file (without its newline).
pub fn parse_record(line: &[u8]) -> Option<LogRecord> {
    let mut fields = line.splitn(4, |b| *b == b' ');
    let timestamp = std::str::from_utf8(fields.next()?).ok()?.parse::<Timestamp>().ok()?;
    let stream = match fields.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match fields.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(LogRecord { timestamp, stream, partial, content: fields.next().unwrap_or_default().to_vec() })
}

/// Where the log of attempt `restart_count` of a container goes.
pub fn log_path(data_dir: &Path, pod_uid: &str, container: &str, restart_count: u32) -> PathBuf {
    data_dir.join("pods").join(pod_uid).join(container).join(format!("{restart_count}.log"))
}

/// The log files of a container, oldest attempt first.
pub fn log_files(data_dir: &Path, pod_uid: &str, container: &str) -> io::Result<Vec<(u32, PathBuf)>> {
    let dir = data_dir.join("pods").join(pod_uid).join(container);
    let mut files = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(files),
        Err(error) => return Err(error),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(attempt) = name.to_str().and_then(|n| n.strip_suffix(".log")).and_then(|n| n.parse::<u32>().ok()) {
            files.push((attempt, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// What `kubectl logs` may ask for.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// Prefix each line with its RFC 3339 timestamp.
    pub timestamps: bool,
    /// Only the last N lines.
    pub tail_lines: Option<usize>,
    /// Only lines written at or after this time.
    pub since: Option<Timestamp>,
    /// Stop after this many bytes.
    pub limit_bytes: Option<usize>,
}

/// Reads a CRI log file and renders it as `kubectl logs` prints it: partial records joined,
/// both streams interleaved in order.
pub fn read_log(path: &Path, options: &LogOptions) -> io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut lines: Vec<(Timestamp, Vec<u8>)> = Vec::new();
    let mut partial: [Option<(Timestamp, Vec<u8>)>; 2] = [None, None];
    for raw in io::BufReader::new(file).split(b'\n') {
        let raw = raw?;
        let Some(record) = parse_record(&raw) else { continue };
        let slot = &mut partial[record.stream.index()];
        let (first_ts, mut content) = slot.take().unwrap_or((record.timestamp, Vec::new()));
        content.extend_from_slice(&record.content);
        if record.partial {
            *slot = Some((first_ts, content));
        } else {
            lines.push((first_ts, content));
        }
    }
    if let Some(since) = options.since {
        lines.retain(|(ts, _)| *ts >= since);
    }
    if let Some(tail) = options.tail_lines {
        let skip = lines.len().saturating_sub(tail);
        lines.drain(..skip);
    }
    let mut out = Vec::new();
    for (ts, content) in lines {
        if options.timestamps {
            out.extend_from_slice(format_timestamp(ts).as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&content);
        out.push(b'\n');
    }
    if let Some(limit) = options.limit_bytes {
        out.truncate(limit);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn timestamps_look_like_go_rfc3339nano() {
        assert_eq!(format_timestamp(ts("2024-05-01T10:20:30.123456789Z")), "2024-05-01T10:20:30.123456789Z");
        assert_eq!(format_timestamp(ts("2024-05-01T10:20:30.12Z")), "2024-05-01T10:20:30.12Z");
        assert_eq!(format_timestamp(ts("2024-05-01T10:20:30Z")), "2024-05-01T10:20:30Z");
    }

    #[test]
    fn lines_become_full_records_and_split_writes_join() {
        let now = ts("2024-05-01T10:20:30.5Z");
        let mut writer = CriLogWriter::new(Vec::new());
        writer.write(Stream::Stdout, b"hello\nwor", now).unwrap();
        writer.write(Stream::Stderr, b"oops\n", now).unwrap();
        writer.write(Stream::Stdout, b"ld\n\nlast", now).unwrap();
        writer.finish(Stream::Stdout, now).unwrap();
        let text = String::from_utf8(writer.out).unwrap();
        assert_eq!(
            text,
            "2024-05-01T10:20:30.5Z stdout F hello\n\
             2024-05-01T10:20:30.5Z stderr F oops\n\
             2024-05-01T10:20:30.5Z stdout F world\n\
             2024-05-01T10:20:30.5Z stdout F \n\
             2024-05-01T10:20:30.5Z stdout F last\n"
        );
    }

    #[test]
    fn long_lines_are_split_into_partial_records_and_rejoined() {
        let now = ts("2024-05-01T10:20:30Z");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        {
            let mut writer = CriLogWriter::new(std::fs::File::create(&path).unwrap());
            writer.write(Stream::Stdout, &long, now).unwrap();
            writer.write(Stream::Stdout, b"\nshort\n", now).unwrap();
        }
        let raw = std::fs::read(&path).unwrap();
        let records: Vec<_> =
            raw.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| parse_record(l).unwrap()).collect();
        assert_eq!(records.iter().map(|r| r.partial).collect::<Vec<_>>(), vec![true, true, false, false]);
        assert!(records.iter().all(|r| r.content.len() <= MAX_LINE));

        let rendered = read_log(&path, &LogOptions::default()).unwrap();
        let mut expected = long.clone();
        expected.extend_from_slice(b"\nshort\n");
        assert_eq!(rendered, expected);

        let tail =
            read_log(&path, &LogOptions { tail_lines: Some(1), timestamps: true, ..Default::default() }).unwrap();
        assert_eq!(tail, b"2024-05-01T10:20:30Z short\n");
    }

    #[test]
    fn log_files_are_listed_by_attempt() {
        let dir = tempfile::tempdir().unwrap();
        for attempt in [10, 2, 0] {
            let path = log_path(dir.path(), "uid-1", "web", attempt);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"").unwrap();
        }
        let attempts: Vec<u32> = log_files(dir.path(), "uid-1", "web").unwrap().into_iter().map(|(a, _)| a).collect();
        assert_eq!(attempts, vec![0, 2, 10]);
        assert!(log_files(dir.path(), "uid-1", "missing").unwrap().is_empty());
    }
}
